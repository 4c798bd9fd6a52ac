"""Append-only event facts: one row per source change, dimension keys as of the event.

A fact batch is appended in one warehouse transaction that first deletes every row carrying its
``batch_id`` (the preaction), so a load that died half-way, or a rerun of a loaded batch, never
leaves duplicates; ``(_lsn, _seq)``, the source position on every row, proves it.

Each dimension surrogate key is the version valid at the event's source commit time
(``effective_date <= event_ts < expiry_date``). An event whose dimension row has not arrived yet
gets an inferred member first (see scd2.inferred_members_statement), which the dimension's first
real version completes in place, keeping the surrogate key the fact already points to.
"""

from __future__ import annotations

from sqlglot import exp

from riverbed.load.model import FactModel

FACT_EXTRA = ("date_key", "event_ts", "_op", "_lsn", "_seq", "batch_id")


def fact_ddl(fact: FactModel, columns: dict[str, exp.DataType]) -> exp.Create:
    """CREATE TABLE IF NOT EXISTS for the fact: source columns, surrogate keys, position."""
    defs = [_column(name, kind) for name, kind in columns.items()]
    defs += [_column(dim.surrogate, exp.DataType.build("BIGINT")) for _, dim in fact.dimensions]
    defs += [
        _column("date_key", exp.DataType.build("INT")),
        _column("event_ts", exp.DataType.build("TIMESTAMPTZ")),
        _column("_op", exp.DataType.build("TEXT")),
        _column("_lsn", exp.DataType.build("BIGINT")),
        _column("_seq", exp.DataType.build("BIGINT")),
        _column("batch_id", exp.DataType.build("TEXT")),
    ]
    return exp.Create(
        this=exp.Schema(this=exp.to_table(fact.name), expressions=defs),
        kind="TABLE",
        exists=True,
    )


def append_statements(
    fact: FactModel, columns: list[str], batch_id: str, sort_key: list[str]
) -> list[exp.Expr]:
    """The preaction and the insert, to run in one transaction after the staging load."""
    preaction = exp.delete(
        fact.name, where=_eq(exp.column("batch_id"), exp.Literal.string(batch_id))
    )
    stg = exp.to_table(fact.staging, alias="s")
    select = exp.select(*(exp.column(c, table="s", quoted=True) for c in columns)).from_(stg)
    target_columns = list(columns)
    for index, (column, dim) in enumerate(fact.dimensions):
        alias = f"d{index}"
        event = exp.column("_commit_ts", table="s")
        on = exp.and_(
            _eq(
                exp.column(dim.keys[0], table=alias, quoted=True),
                exp.column(column, table="s", quoted=True),
            ),
            exp.LTE(this=exp.column("effective_date", table=alias), expression=event),
            exp.GT(this=exp.column("expiry_date", table=alias), expression=event.copy()),
        )
        select = select.join(exp.to_table(dim.name, alias=alias), on=on, join_type="left")
        select = select.select(exp.column(dim.surrogate, table=alias))
        target_columns.append(dim.surrogate)

    def part(unit: str) -> exp.Expr:
        return exp.Extract(this=exp.var(unit), expression=exp.column("_commit_ts", table="s"))

    # yyyymmdd by arithmetic: formatting a string per row costs more than the join
    day = part("YEAR") * 10000 + part("MONTH") * 100 + part("DAY")
    select = select.select(
        exp.cast(day, "INT"),
        exp.column("_commit_ts", table="s"),
        exp.column("_op", table="s"),
        exp.column("_lsn", table="s"),
        exp.column("_seq", table="s"),
        exp.Literal.string(batch_id),
    )
    target_columns += list(FACT_EXTRA)
    # load order follows the sort key: DuckDB's zone maps, a well-clustered heap in PostgreSQL
    order = [exp.column(c, table="s", quoted=True) for c in sort_key if c in columns]
    select = select.order_by(*order, exp.column("_lsn", table="s"), exp.column("_seq", table="s"))
    insert = exp.insert(
        select, fact.name, columns=[exp.to_identifier(c, quoted=True) for c in target_columns]
    )
    return [preaction, insert]


def _column(name: str, kind: exp.DataType) -> exp.ColumnDef:
    return exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=kind)


def _eq(left: exp.Expr, right: exp.Expr) -> exp.EQ:
    return exp.EQ(this=left, expression=right)
