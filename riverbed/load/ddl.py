"""The warehouse DDL the config implies, for any dialect (`riverbed ddl`).

Column types come from the newest staged (else raw) Parquet schema of each table, so the DDL
is what the load stage would create, each fact's current-state view included; for a table
captured but still empty, from its newest schema version. Before a table's first capture they
come from the source's catalog (``source_columns``), through the mapping capture applies
(riverbed.lake.pgtypes), so the DDL printed before the first capture is the one printed after
it.

For Redshift the same model gets its physical design: DISTKEY (``dist_key``), SORTKEY
(``sort_key``; dimensions sort by natural key) and ENCODE ZSTD on every column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg
from sqlglot import exp

from riverbed.config.loader import Project
from riverbed.config.tables import TableConfig
from riverbed.errors import ConfigError, RiverbedError, SourceError, UsageError, first_line
from riverbed.lake.parquet import read_schema
from riverbed.lake.pgtypes import PgColumn, arrow_type  # how the lake is typed
from riverbed.lake.schema import CDC_COLUMNS
from riverbed.lake.storage import LakeStorage
from riverbed.load.fact_current import current_view_ddl
from riverbed.load.facts import fact_ddl, fact_indexes
from riverbed.load.model import sql_type, warehouse_model
from riverbed.load.scd2 import dimension_ddl, staging_ddl
from riverbed.load.warehouse import DIALECTS, capabilities
from riverbed.source.catalog import read_columns
from riverbed.source.connection import Source
from riverbed.state import StateStore

Columns = dict[str, exp.DataType]  # a table's columns and their SQL types, in column order


def dim_date_ddl() -> exp.Create:
    columns = {
        "date_key": "INT",
        "date": "DATE",
        "year": "INT",
        "quarter": "INT",
        "month": "INT",
        "month_name": "TEXT",
        "day": "INT",
        "day_of_week": "INT",
        "is_weekend": "BOOLEAN",
    }
    return exp.Create(
        this=exp.Schema(
            this=exp.to_table("dim_date"),
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(n, quoted=True), kind=exp.DataType.build(t))
                for n, t in columns.items()
            ],
        ),
        kind="TABLE",
        exists=True,
    )


def check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise UsageError(f"--dialect {dialect}: choose one of {', '.join(DIALECTS)}")


def warehouse_ddl(project: Project, columns: Mapping[str, Columns], dialect: str) -> list[str]:
    """Every CREATE statement of the warehouse, generated for ``dialect``, given the columns
    of every table in ``tables:`` (``lake_columns``, else ``source_columns``)."""
    check_dialect(dialect)
    model = warehouse_model(project.config)
    # the builders' expressions are the same for every dialect (DuckDB's types), generated
    # for ``dialect`` here
    can = capabilities(dialect)
    indexes = can.has_indexes  # the loader's, where the engine has them
    out: list[str] = []
    for dim in model.dimensions:
        cfg = project.config.tables[dim.source]
        tables = dimension_ddl(dim, columns[dim.source], dialect, indexes=indexes)
        check_layout_keys(dim.source, cfg, tables)
        check_business_time(dim.source, cfg, columns[dim.source])
        for statement in [staging_ddl(dim, columns[dim.source], dialect), *tables]:
            if can.physical_design and _creates(statement, dim.name):
                statement = _redshift(statement, cfg.dist_key, cfg.sort_key or list(dim.keys))
            text = statement.sql(dialect=dialect, pretty=True)
            if text not in out:  # the position table every dimension's DDL creates
                out.append(text)
    for fact in model.facts:
        cfg = project.config.tables[fact.source]
        own = columns[fact.source]
        carried = fact.carrying(own)
        table = fact_ddl(carried, own)
        check_layout_keys(fact.source, cfg, [table])
        check_business_time(fact.source, cfg, own)
        names = [c.name for c in table.this.expressions if isinstance(c, exp.ColumnDef)]
        statements = [
            staging_ddl(fact.source, own, dialect),
            table,
            *(fact_indexes(carried, cfg.sort_key, cfg.dist_key) if indexes else []),
            current_view_ddl(fact, names),
        ]
        for statement in statements:
            if can.physical_design and _creates(statement, fact.name):
                statement = _redshift(statement, cfg.dist_key, cfg.sort_key)
            out.append(statement.sql(dialect=dialect, pretty=True))
    out.append(dim_date_ddl().sql(dialect=dialect, pretty=True))
    return out


def lake_columns(storage: LakeStorage, manifest: StateStore, table: str) -> Columns | None:
    """The table's columns and SQL types by its newest staged (else raw) file, else by its
    newest schema version (captured, but empty so far); None if it was never captured."""
    files = manifest.lake.files("staged", table) or manifest.lake.files("raw", table)
    if files:
        schema = read_schema(storage, files[-1].path)
        return {f.name: sql_type(f.type) for f in schema if f.name not in CDC_COLUMNS}
    versions = manifest.lake.schema_versions(table)
    if not versions:
        return None
    return declared_types(
        PgColumn(c["name"], c["type_oid"], c["type_modifier"], c["type_name"])
        for c in versions[-1].columns
    )


def source_columns(source: Source, schema: str, tables: list[str]) -> dict[str, Columns]:
    """The columns and SQL types of ``tables`` as the source's catalog declares them: the types
    their first capture will record, so what ``lake_columns`` will say once it has run.

    Raises SourceError when the source cannot be reached or read, RiverbedError for a table
    the schema does not have."""
    with source.connect(autocommit=True) as conn:
        try:
            found = read_columns(conn, schema, tables)
        except psycopg.Error as exc:
            raise SourceError(
                f"cannot read the catalog of {source.display}: {first_line(exc)}"
            ) from exc
    absent = [table for table in tables if table not in found]
    if absent:
        raise RiverbedError(
            f"tables: {', '.join(absent)}: no such table in schema {schema} of {source.display} "
            "(source.schema in riverbed.yaml); create it, or take it out of tables:"
        )
    return {
        table: declared_types(PgColumn(c.name, c.type_oid, c.type_modifier) for c in found[table])
        for table in tables
    }


def declared_types(columns: Iterable[PgColumn]) -> Columns:
    """SQL types of columns as capture describes them: those of the files it writes for them."""
    return {c.name: sql_type(arrow_type(c)) for c in columns}


def check_layout_keys(table: str, cfg: TableConfig, statements: list[exp.Expr]) -> None:
    """Refuse a ``sort_key`` or ``dist_key`` that names no column of the table ``statements``
    create (the dimension or fact ``cfg.target``): DuckDB would pass over it, PostgreSQL fail on
    its index mid-load, and the Redshift DDL carry it."""
    create = next(s for s in statements if _creates(s, cfg.target))
    names = [c.name for c in create.this.expressions if isinstance(c, exp.ColumnDef)]
    for key, columns in (("sort_key", cfg.sort_key), ("dist_key", [cfg.dist_key or ""])):
        for column in columns:
            if column and column not in names:
                raise ConfigError(
                    [
                        f"tables.{table}.{key}: {column!r} is not a column of {cfg.target}; "
                        f"choose from {', '.join(names)}"
                    ]
                )


# what a business time (tables.<t>.event_time, effective_from) may be: a day or an instant
_TIMES = {
    exp.DType.DATE,
    exp.DType.TIMESTAMP,
    exp.DType.TIMESTAMPTZ,
    exp.DType.TIMESTAMP_S,
    exp.DType.TIMESTAMP_MS,
    exp.DType.TIMESTAMP_NS,
}


def check_business_time(table: str, cfg: TableConfig, columns: Mapping[str, exp.DataType]) -> None:
    """Refuse an ``event_time`` or ``effective_from`` that names no staged column of the table,
    or one that is not a date or timestamp: every event would fall back to its commit time,
    or the load fail on a cast mid-run."""
    for key in ("event_time", "effective_from"):
        name = getattr(cfg, key)
        if name is None:
            continue
        kind = columns.get(name)
        if kind is None:
            raise ConfigError(
                [
                    f"tables.{table}.{key}: {name!r} is not a column of {table} as staged; "
                    f"choose a date or timestamp column from {', '.join(columns)}, or add one "
                    "in transforms"
                ]
            )
        if kind.this not in _TIMES:
            raise ConfigError(
                [
                    f"tables.{table}.{key}: {name} is {kind.sql()}, not a date or timestamp; "
                    f"name one, or convert it in transforms (e.g. {name}_ts: "
                    f"CAST({name} AS TIMESTAMPTZ)) and name that"
                ]
            )


def _creates(statement: exp.Expr, table: str) -> bool:
    if not isinstance(statement, exp.Create) or statement.kind != "TABLE":
        return False
    target = statement.this.this if isinstance(statement.this, exp.Schema) else statement.this
    return isinstance(target, exp.Table) and target.name == table


def _redshift(statement: exp.Expr, dist_key: str | None, sort_key: list[str]) -> exp.Expr:
    """``statement`` (a CREATE TABLE) with its physical design, in Redshift's terms: ENCODE
    ZSTD on every column, DISTKEY (else DISTSTYLE AUTO) and SORTKEY."""
    create = statement.copy()
    assert isinstance(create, exp.Create) and isinstance(create.this, exp.Schema)
    for column in create.this.expressions:
        if isinstance(column, exp.ColumnDef):
            encode = exp.ColumnConstraint(kind=exp.EncodeColumnConstraint(this=exp.var("ZSTD")))
            column.set("constraints", [*(column.args.get("constraints") or []), encode])
    properties: list[exp.Expr] = []
    if dist_key:
        properties.append(exp.DistKeyProperty(this=exp.to_identifier(dist_key, quoted=True)))
    else:
        properties.append(exp.DistStyleProperty(this=exp.var("AUTO")))
    if sort_key:
        properties.append(
            exp.SortKeyProperty(
                this=[exp.to_identifier(c, quoted=True) for c in sort_key], compound=False
            )
        )
    create.set("properties", exp.Properties(expressions=properties))
    return create
