"""`riverbed capture`: the source's changes into the lake, once or following the WAL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from riverbed.cli.common import (
    ConfigOption,
    app,
    console,
    err_console,
    open_project,
    plural,
    stop_signals,
)
from riverbed.config import Project
from riverbed.errors import RiverbedError, UsageError

RECONNECT_MAX_SECONDS = 30.0


def _capture_reconnecting(
    project: Project,
    follow: bool,
    resnapshot: bool,
    stopping: list[int],
    say: Callable[[str], None],
    force: bool = False,
) -> Any:
    """run_capture; with --follow, a transient failure (the source restarting, a dropped
    connection) is retried with backoff until stopped, resuming exactly from the lake's
    committed position. A capture that never got going (no position yet: a wrong DSN, a
    missing schema) fails at once instead of retrying for ever."""
    import logging
    import time

    from riverbed.capture.runner import CaptureResult, run_capture
    from riverbed.lake.manifest import open_manifest

    log = logging.getLogger("riverbed.capture")
    failures = 0
    while True:
        started = time.monotonic()
        try:
            return run_capture(
                project,
                follow=follow,
                should_stop=lambda: bool(stopping),
                say=say,
                resnapshot=resnapshot and failures == 0,
                force=force,
            )
        except RiverbedError as exc:
            if not follow or not exc.transient or stopping:
                raise
            manifest = open_manifest(project)
            try:
                slot = manifest.capture_names(project.config.source)[0]
                if slot is None or manifest.position(slot) is None:
                    raise
            finally:
                manifest.close()
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            delay = min(RECONNECT_MAX_SECONDS, 2.0 ** (failures - 1))
            # once: the console shows warnings, and the log file keeps them
            log.warning(
                "capture interrupted: %s; reconnecting in %.0f s (Ctrl-C stops)", exc, delay
            )
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not stopping:
                time.sleep(0.2)
            if stopping:
                return CaptureResult()  # stopped while waiting: everything captured is kept


@app.command(short_help="Snapshot, then stream, the source's changes into the lake.")
def capture(
    once: Annotated[
        bool, typer.Option("--once", help="Capture everything committed up to now, then exit.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Stream until Ctrl-C / SIGTERM.")
    ] = False,
    resnapshot: Annotated[
        bool,
        typer.Option("--resnapshot", help="Drop the slot and the captured files; snapshot again."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --resnapshot: drop the slot even if this project's lake does not know it "
            "(another project's or tool's).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
    config: ConfigOption = None,
) -> None:
    """Snapshot + change data capture from the source into the lake (Parquet), exactly once.

    Example: `riverbed capture --once` or `riverbed capture --follow`
    """
    import threading

    if once == follow:
        raise UsageError(
            "choose one of --once (drain up to now, then exit) or --follow (stream until stopped)"
        )
    if force and not resnapshot:
        raise RiverbedError("--force only goes with --resnapshot (it lets it drop a foreign slot)")
    project = open_project(config)

    def say(line: str) -> None:
        if not quiet and not as_json:
            err_console.print(line, highlight=False)

    with stop_signals() as stopping:
        # a follower outlives runs: it evaluates the alarms meanwhile, as `serve` does, so one
        # on the time since the last success fires when the scheduler has died
        watching = threading.Event()
        if follow:
            from riverbed.orchestrate.runner import watch_alarms

            watch_alarms(project, watching)
        try:
            result = _capture_reconnecting(project, follow, resnapshot, stopping, say, force)
        finally:
            watching.set()
    payload = _payload(result)
    if as_json:
        print(json.dumps(payload))
        return
    if not quiet:
        if result.snapshot_rows:
            console.print(
                "snapshot: " + ", ".join(f"{n:,} {t}" for t, n in result.snapshot_rows.items())
            )
        console.print(
            f"streamed {plural(payload['rows'], 'change')} in "
            f"{plural(payload['transactions'], 'transaction')} "
            f"into {plural(payload['files'], 'file')}; lake is complete up to {payload['position']}"
        )


def _payload(result: Any) -> dict[str, Any]:
    """What a capture did, as --json prints it."""
    from riverbed.lake.positions import format_lsn

    stats = result.stream
    return {
        "snapshot_rows": result.snapshot_rows,
        "snapshot_seconds": round(result.snapshot_seconds, 3),
        "resumed_from": format_lsn(result.resumed_from)
        if result.resumed_from is not None
        else None,
        "transactions": stats.transactions if stats else 0,
        "rows": stats.rows if stats else 0,
        "files": stats.files if stats else 0,
        "bytes": stats.bytes if stats else 0,
        "rows_by_table": stats.rows_by_table if stats else {},
        "position": format_lsn(stats.position) if stats else None,
        "skipped_transactions": stats.skipped_transactions if stats else 0,
        "orphans_removed": result.orphans_removed,
    }
