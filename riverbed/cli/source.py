"""`riverbed source up|down|status|grants`: the embedded source PostgreSQL, and the SQL for a
least-privilege capture role on any source."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

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
from riverbed.config import Project

if TYPE_CHECKING:
    from riverbed.capture.grants import CaptureGrants


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
    console.print(
        f"its password: in {source.embedded.password_file} (0600; libpq and psql read it "
        "with PGPASSFILE or passfile=)",
        highlight=False,
    )
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


@source_app.command(
    "grants", short_help="The SQL for a capture role with the least it needs (psql script)."
)
def source_grants(
    config: ConfigOption = None,
    role: Annotated[
        str, typer.Option(metavar="NAME", help="The capture role to create.")
    ] = "riverbed_capture",
    password_env: Annotated[
        str,
        typer.Option(
            metavar="VARIABLE", help="Environment variable psql reads the role's password from."
        ),
    ] = "RIVERBED_CAPTURE_PASSWORD",
) -> None:
    """Print the SQL that creates a capture role with the least privilege capture needs:
    LOGIN REPLICATION (its password read by psql from an environment variable, never
    printed), SELECT on the captured tables for the snapshot, and the publication, which the
    tables' owner makes (PostgreSQL lets only a table's owner publish it). Then point
    source.dsn at that role (user=NAME) and source.password at the variable.

    Example: `riverbed.capture.grants > grants.sql`
    """
    from riverbed.capture.grants import grants_script
    from riverbed.config.fields import IDENTIFIER
    from riverbed.errors import UsageError

    if not IDENTIFIER.match(role):
        raise UsageError(f"--role {role!r}: must be a plain identifier (letters, digits, _)")
    if not IDENTIFIER.match(password_env):
        raise UsageError(f"--password-env {password_env!r}: must be an environment variable name")
    grants = _capture_grants(open_project(config), role, password_env)
    print(grants_script(grants), end="")
    err_console.print(
        f"run it with: {password_env}=... psql -v ON_ERROR_STOP=1 -d {grants.database} -f "
        f"FILE; then set source.dsn's user={role} and source.password: {{env: {password_env}}}",
        highlight=False,
    )


def _capture_grants(project: Project, role: str, password_env: str) -> CaptureGrants:
    """What the grants are for: the database, schema and tables capture reads (the source is
    asked for the tables only when riverbed.yaml lists none), and the publication's name."""
    from psycopg.conninfo import conninfo_to_dict

    from riverbed.capture.grants import CaptureGrants
    from riverbed.capture.runner import captured_tables
    from riverbed.source.connection import source_for
    from riverbed.state import open_state

    source = source_for(project)
    tables = list(project.config.tables)
    if not tables:
        with source.connect(autocommit=True) as conn:
            tables = captured_tables(project, conn)
    manifest = open_state(project)
    try:
        _, publication = manifest.capture.names(project.config.source, create=True)
    finally:
        manifest.close()
    assert publication is not None
    return CaptureGrants(
        role=role,
        password_variable=password_env,
        database=str(conninfo_to_dict(source.dsn).get("dbname") or project.config.source.database),
        schema=project.config.source.schema_name,
        tables=tables,
        publication=publication,
    )
