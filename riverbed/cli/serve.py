"""`riverbed serve`: /metrics for Prometheus, and the alarms evaluated between runs."""

from __future__ import annotations

from typing import Annotated

import typer

from riverbed.cli.common import ConfigOption, app, console, open_project, start_logging
from riverbed.errors import RiverbedError


@app.command(short_help="Serve /metrics for Prometheus; evaluate alarms between runs.")
def serve(
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, metavar="PORT", help="Port (0: any free one).")
    ] = 9108,
    config: ConfigOption = None,
) -> None:
    """Serve the pipeline's metrics in Prometheus text format at /metrics until Ctrl-C
    (dashboards and the JSON API join them here later), and evaluate the alarms between runs,
    so that one on time since the last success fires even when nothing runs.

    Example: `riverbed serve --port 9108`, then `curl localhost:9108/metrics`
    """
    import threading
    import time

    from riverbed.observe.prometheus import serve_metrics
    from riverbed.orchestrate.runner import measure_between_runs, watch_alarms

    project = open_project(config)
    start_logging(project, quiet=False)
    try:
        server = serve_metrics(
            project.path(project.config.state.path),
            host,
            port,
            refresh=lambda: measure_between_runs(project),
        )
    except OSError as exc:
        raise RiverbedError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port"
        ) from exc
    bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
    console.print(f"metrics at http://{bound_host}:{bound_port}/metrics (Ctrl-C stops)")
    stop = threading.Event()
    watch_alarms(project, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.shutdown()
