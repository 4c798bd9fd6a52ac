"""`riverbed source up|down|status`: the embedded source PostgreSQL."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from riverbed.cli.common import (
    ConfigOption,
    console,
    err_console,
    format_bytes,
    open_project,
    source_app,
)


@source_app.command("up", short_help="Start the embedded PostgreSQL and print its DSN.")
def source_up(config: ConfigOption = None) -> None:
    """Start the embedded PostgreSQL (initialising it on first use) and print its DSN.

    Example: `riverbed source up`
    """
    from riverbed.source.connection import inspect, source_for

    source = source_for(open_project(config))
    if source.embedded is None:
        status = inspect(source)
        console.print(
            f"source.dsn is set: {status.dsn} is not managed by Riverbed (nothing to start)"
        )
        _warn_wal_level(status.wal_level)
        return
    with console.status("starting PostgreSQL ..."):
        done = source.embedded.up()
    status = inspect(source)
    console.print(f"PostgreSQL {status.version} {', '.join(done)}: {status.dsn}")
    _warn_wal_level(status.wal_level)


def _warn_wal_level(wal_level: str) -> None:
    if wal_level != "logical":
        err_console.print(
            f"[yellow]warning:[/yellow] wal_level is {wal_level}; capture needs wal_level=logical "
            "(set it on the server and restart it)"
        )


@source_app.command("down")
def source_down(config: ConfigOption = None) -> None:
    """Stop the embedded PostgreSQL (fine when it is already stopped).

    Example: `riverbed source down`
    """
    from riverbed.source.connection import source_for

    source = source_for(open_project(config))
    if source.embedded is None:
        console.print("source.dsn is set: that server is not managed by Riverbed (nothing to stop)")
        return
    stopped = source.embedded.down()
    console.print("stopped" if stopped else "already stopped")


@source_app.command(
    "status", short_help="The source DSN, version, wal_level and replication slots."
)
def source_status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the source DSN, version, wal_level and replication slots with retained WAL.

    Example: `riverbed source status --json`
    """
    from riverbed.source.connection import inspect, source_for

    source = source_for(open_project(config))
    if source.embedded is not None and not (
        source.embedded.is_initialised() and source.embedded.is_running()
    ):
        if as_json:
            print(json.dumps({"dsn": source.display, "running": False}))
        else:
            console.print(f"stopped: {source.display} (start it with `riverbed source up`)")
        raise typer.Exit(3)
    status = inspect(source)
    if as_json:
        payload = {
            "dsn": status.dsn,
            "running": True,
            "version": status.version,
            "wal_level": status.wal_level,
            "slots": [vars(slot) for slot in status.slots],
        }
        print(json.dumps(payload))
        return
    console.print(f"dsn        {status.dsn}")
    console.print(f"version    {status.version}")
    console.print(f"wal_level  {status.wal_level}")
    if not status.slots:
        console.print("slots      none")
        return
    table = Table("slot", "plugin", "active", "retained WAL")
    for slot in status.slots:
        retained = "-" if slot.retained_wal_bytes is None else format_bytes(slot.retained_wal_bytes)
        table.add_row(slot.name, slot.plugin or "-", "yes" if slot.active else "no", retained)
    console.print(table)
