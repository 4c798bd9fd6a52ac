"""The warehouse DDL the config implies, for any dialect (`riverbed ddl`).

Column types come from the newest staged (else raw) Parquet schema of each table, so the DDL
is what the load stage would create, each fact's current-state view included. For Redshift the same model gets its physical design:
DISTKEY (``dist_key``), SORTKEY (``sort_key``; dimensions sort by natural key) and ENCODE ZSTD
on every column.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from sqlglot import exp

from riverbed.config.loader import Project
from riverbed.config.tables import TableConfig
from riverbed.errors import ConfigError, RiverbedError, UsageError
from riverbed.lake.pgtypes import PgColumn, arrow_type  # how the lake is typed
from riverbed.lake.schema import CDC_COLUMNS
from riverbed.lake.storage import LakeStorage
from riverbed.load.fact_current import current_view_ddl
from riverbed.load.facts import fact_ddl, fact_indexes
from riverbed.load.model import sql_type, warehouse_model
from riverbed.load.scd2 import dimension_ddl, staging_ddl
from riverbed.load.warehouse import DIALECTS, capabilities
from riverbed.state import StateStore


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


def warehouse_ddl(
    project: Project, storage: LakeStorage, manifest: StateStore, dialect: str
) -> list[str]:
    """Every CREATE statement of the warehouse, generated for ``dialect``."""
    if dialect not in DIALECTS:
        raise UsageError(f"--dialect {dialect}: choose one of {', '.join(DIALECTS)}")
    model = warehouse_model(project.config)
    # the builders' expressions are the same for every dialect (DuckDB's types), generated
    # for ``dialect`` here
    can = capabilities(dialect)
    indexes = can.has_indexes  # the loader's, where the engine has them
    out: list[str] = []
    for dim in model.dimensions:
        columns = _columns(storage, manifest, dim.source)
        cfg = project.config.tables[dim.source]
        tables = dimension_ddl(dim, columns, dialect, indexes=indexes)
        check_layout_keys(dim.source, cfg, tables)
        for statement in [staging_ddl(dim, columns, dialect), *tables]:
            if can.physical_design and _creates(statement, dim.name):
                statement = _redshift(statement, cfg.dist_key, cfg.sort_key or list(dim.keys))
            text = statement.sql(dialect=dialect, pretty=True)
            if text not in out:  # the position table every dimension's DDL creates
                out.append(text)
    for fact in model.facts:
        columns = _columns(storage, manifest, fact.source)
        cfg = project.config.tables[fact.source]
        table = fact_ddl(fact.carrying(columns), columns)
        check_layout_keys(fact.source, cfg, [table])
        names = [c.name for c in table.this.expressions if isinstance(c, exp.ColumnDef)]
        statements = [
            staging_ddl(fact.source, columns, dialect),
            table,
            *(fact_indexes(fact, cfg.sort_key, cfg.dist_key) if indexes else []),
            current_view_ddl(fact, names),
        ]
        for statement in statements:
            if can.physical_design and _creates(statement, fact.name):
                statement = _redshift(statement, cfg.dist_key, cfg.sort_key)
            out.append(statement.sql(dialect=dialect, pretty=True))
    out.append(dim_date_ddl().sql(dialect=dialect, pretty=True))
    return out


def lake_columns(
    storage: LakeStorage, manifest: StateStore, table: str
) -> dict[str, exp.DataType] | None:
    """The table's columns and SQL types by its newest staged (else raw) file; None if none."""
    files = manifest.lake.files("staged", table) or manifest.lake.files("raw", table)
    if files:
        schema = pq.read_schema(storage.open_input(files[-1].path))
        return {f.name: sql_type(f.type) for f in schema if f.name not in CDC_COLUMNS}
    versions = manifest.lake.schema_versions(table)  # captured, but empty so far
    if not versions:
        return None
    return {
        c["name"]: sql_type(
            arrow_type(PgColumn(c["name"], c["type_oid"], c["type_modifier"], c["type_name"]))
        )
        for c in versions[-1].columns
    }


def _columns(storage: LakeStorage, manifest: StateStore, table: str) -> dict[str, exp.DataType]:
    columns = lake_columns(storage, manifest, table)
    if columns is None:
        raise RiverbedError(
            f"no data for {table} in the lake yet, so its column types are unknown: run "
            "`riverbed capture --once` (and `riverbed run --once`) first"
        )
    return columns


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
