"""`riverbed serve`: the web app (pages, JSON API, /metrics) under uvicorn, and the alarms
evaluated between runs.

The socket is bound here, before uvicorn starts, so a port in use is one line and exit 1, and
the URL printed is the one bound (``--port 0``: any free port). Ctrl-C or SIGTERM stops it
with one line: uvicorn catches the signal, finishes the requests in flight, and re-raises it
once it has stopped, which ends here as KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import socket
from typing import Annotated, Any

import typer

from riverbed.cli.common import ConfigOption, app, console, open_project, say_wrapped, start_logging
from riverbed.errors import RiverbedError

DEFAULT_PORT = 8000


@app.command(short_help="Serve the web app, its JSON API and /metrics; evaluate alarms.")
def serve(
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, metavar="PORT", help="Port (0: any free one).")
    ] = DEFAULT_PORT,
    config: ConfigOption = None,
) -> None:
    """Serve the web app (log in as a principal of the policy; every query through the
    governance gateway), its JSON API (/docs) and the pipeline's metrics for Prometheus
    (/metrics, no login) until Ctrl-C, and evaluate the alarms between runs, so that one on
    time since the last success fires even when nothing runs.

    Example: `riverbed serve`, then open http://127.0.0.1:8000
    """
    import threading

    import uvicorn

    from riverbed.orchestrate.runner import measure_between_runs, watch_alarms
    from riverbed.serve.app import create_app

    project = open_project(config)
    start_logging(project, quiet=False)
    web = create_app(project, refresh_metrics=lambda: measure_between_runs(project))
    listening = _bind(host, port)
    bound_host, bound_port = listening.getsockname()[:2]
    url = f"http://{_url_host(str(bound_host))}:{bound_port}"
    say_wrapped(f"serving {url} (metrics at {url}/metrics; Ctrl-C stops)", highlight=False)
    server = uvicorn.Server(
        uvicorn.Config(web, log_config=None, log_level="warning", access_log=False)
    )
    stop = threading.Event()
    watch_alarms(project, stop)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # uvicorn re-raises it on the way out
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        listening.close()
    console.print("stopped")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``; RiverbedError in one line if it cannot be."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(128)
    except OSError as exc:
        listening.close()
        reason = exc.strerror or str(exc)
        raise RiverbedError(
            f"cannot listen on {host}:{port}: {reason}; choose another --port or --host"
        ) from exc
    return listening


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
