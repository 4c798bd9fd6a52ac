"""`riverbed ddl`: the warehouse DDL the config implies.

The column types come from the lake (riverbed.load.ddl.lake_columns); for the tables not
captured yet, from the source's catalog, so the DDL can be read, reviewed and applied before
the first capture. Only then is the source reached: once every table is in the lake, `ddl`
works with the source down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from riverbed.cli.common import ConfigOption, app, open_project
from riverbed.config.loader import Project
from riverbed.errors import SourceError

if TYPE_CHECKING:
    from riverbed.load.ddl import Columns


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
    Before the first capture the column types are read from the source database.

    Example: `riverbed ddl --dialect redshift`
    """
    from riverbed.lake.storage import open_storage
    from riverbed.load.ddl import check_dialect, lake_columns, warehouse_ddl
    from riverbed.state import open_state

    project = open_project(config)
    dialect = dialect or project.config.warehouse.engine
    check_dialect(dialect)
    manifest = open_state(project)
    try:
        storage = open_storage(project.config.lake, project.root)
        found = {t: lake_columns(storage, manifest, t) for t in project.config.tables}
    finally:
        manifest.close()
    columns = {t: c for t, c in found.items() if c is not None}
    uncaptured = [t for t, c in found.items() if c is None]
    if uncaptured:
        columns |= _from_source(project, uncaptured)
    statements = warehouse_ddl(project, columns, dialect)
    print(";\n\n".join(statements) + ";")


def _from_source(project: Project, tables: list[str]) -> dict[str, Columns]:
    """The column types of ``tables``, none captured yet, from the source's catalog; a source
    out of reach is then the one thing between the user and the DDL, which the error says."""
    from riverbed.load.ddl import source_columns
    from riverbed.source.connection import source_for

    try:
        return source_columns(source_for(project), project.config.source.schema_name, tables)
    except SourceError as exc:
        raise SourceError(
            f"nothing captured yet of {', '.join(tables)}, so their column types come from the "
            f"source's catalog, which cannot be read: {exc}"
        ) from exc
