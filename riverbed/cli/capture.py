"""`riverbed capture`: the source's changes into the lake, once or following the WAL."""

from __future__ import annotations

import json
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
from riverbed.errors import RiverbedError, UsageError


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
    from riverbed.capture.reconnect import capture_reconnecting

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
            result = capture_reconnecting(
                project,
                follow,
                should_stop=lambda: bool(stopping),
                say=say,
                resnapshot=resnapshot,
                force=force,
            )
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
        "binary": stats.binary if stats else False,  # values streamed in binary form
        "orphans_removed": result.orphans_removed,
    }
