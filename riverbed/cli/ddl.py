"""`riverbed ddl`: the warehouse DDL the config implies."""

from __future__ import annotations

from typing import Annotated

import typer

from riverbed.cli.common import ConfigOption, app, open_project


@app.command(short_help="Print the warehouse DDL the config implies.")
def ddl(
    dialect: Annotated[
        str | None,
        typer.Option(
            "--dialect",
            metavar="DIALECT",
            help="duckdb, postgres or redshift (default: the warehouse's).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Print the warehouse DDL the config implies (Redshift: DISTKEY, SORTKEY, ENCODE ZSTD).

    Example: `riverbed ddl --dialect redshift`
    """
    from riverbed.lake.storage import open_storage
    from riverbed.load.ddl import warehouse_ddl
    from riverbed.state import open_state

    project = open_project(config)
    manifest = open_state(project)
    try:
        statements = warehouse_ddl(
            project,
            open_storage(project.config.lake, project.root),
            manifest,
            dialect or project.config.warehouse.engine,
        )
    finally:
        manifest.close()
    print(";\n\n".join(statements) + ";")
