"""The small sqlglot builders the SCD2 merge's plan (:mod:`riverbed.load.scd2_plan`, with
:mod:`riverbed.load.scd2_single`) and its statements (:mod:`riverbed.load.scd2`) share. Their
names keep the leading underscore they had as scd2_plan's private helpers: they are the
package's, not an API.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from riverbed.load.model import DimensionModel

_PREFIX = "_scd2_"  # names of the plan's own columns; no source column may start with it
# event classes (step e); CURRENT is also the _op of the pseudo-event for the current row
CURRENT, NEW, COMPLETE, TYPE1, CLOSE, NOOP = "current", "new", "complete", "type1", "close", "noop"


def _own(name: str) -> str:
    """A column of the plan's own (never a source column's name)."""
    return f"{_PREFIX}{name}"


def _grp(name: str) -> str:
    return _own(f"grp_{name}")


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _text(value: str) -> exp.Expr:
    return exp.Literal.string(value)


def _zero() -> exp.Expr:
    return exp.Literal.number(0)


def _one() -> exp.Expr:
    return exp.Literal.number(1)


def _timestamptz(value: str) -> exp.Cast:
    return exp.cast(_text(value), exp.DataType.build("TIMESTAMPTZ"))


def _not_null(value: exp.Expr) -> exp.Expr:
    return exp.Not(this=_is_null(value))


def _is_null(value: exp.Expr) -> exp.Expr:
    return exp.Is(this=value, expression=exp.Null())


def _not_delete() -> exp.Expr:
    return exp.NEQ(this=_col("_op"), expression=_text("D"))


def _count_if(condition: exp.Expr) -> exp.Count:
    return exp.Count(this=exp.Case(ifs=[exp.If(this=condition, true=exp.Literal.number(1))]))


def _window(
    func: exp.Expr,
    partition: Sequence[exp.Expr],
    order: Sequence[exp.Expr],
    *,
    running: bool = False,
) -> exp.Window:
    """``func OVER (PARTITION BY ... ORDER BY ...)``; ``running``: rows from the partition's
    start to the current row (a running total, not the default peers-included RANGE)."""
    window = exp.Window(this=func, partition_by=[p.copy() for p in partition], over="OVER")
    if order:
        window.set(
            "order",
            exp.Order(
                expressions=[
                    o.copy() if isinstance(o, exp.Ordered) else exp.Ordered(this=o.copy())
                    for o in order
                ]
            ),
        )
    if running:
        window.set(
            "spec",
            exp.WindowSpec(
                kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"
            ),
        )
    return window


def _max_surrogate(dim: DimensionModel) -> exp.Subquery:
    """(SELECT COALESCE(MAX(<surrogate>), 0) FROM <dim>)"""
    return (
        exp.select(exp.Coalesce(this=exp.Max(this=_col(dim.surrogate)), expressions=[_zero()]))
        .from_(dim.name)
        .subquery()
    )


def _table(name: str, alias: str) -> exp.Table:
    """``name AS alias`` (exp.to_table(alias=...) keeps the alias a bare string, which
    some generators, e.g. PostgreSQL's MERGE, cannot handle)."""
    table = exp.to_table(name)
    table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return table


def _target(table: str, names: Sequence[str]) -> exp.Schema:
    return exp.Schema(
        this=exp.to_table(table), expressions=[exp.to_identifier(n, quoted=True) for n in names]
    )
