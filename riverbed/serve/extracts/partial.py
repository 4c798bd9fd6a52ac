"""The semantic layer's grains limited to some business days, for a refresh that recomputes
only those days: one pass over a grain's rows of those days serves every dataset of that grain
(the extract sums them per dataset, ``local_cells``), and each current-state view the grain
reads becomes the same ranking (riverbed.load.fact_current.current_rows) over just the keys
with a row on those days, so a refresh ranks the versions of a few days' items instead of the
whole history.

The keys taken are a superset of what the days need (every key with any version on those
days, the orders of those items, the returns of those items): a key whose current version
lies outside the days is ranked and then left out by the grain's own day condition, so the
cells come out exactly as the full views give them. A measure counted (COUNT of a column) is
1 or 0 per row, so its sum is the count; a count distinct (``orders``) is the value counted
(the order id), counted distinct per cell from the grain rows (``local_cells(grain=True)``)
and summed as any measure when a coarser cell is made of finer ones (the rollups, whose
definitions and rollup.py see that no order is in two cells summed).

Beside its sums a cell keeps counts (``hidden``): its grain rows (``_rows``) and, per SUM
measure, the rows where the value is not NULL (``_n_<measure>``). They let a refresh maintain
cells by deltas (delta.py: add the new rows, subtract the old ones) exactly as a rebuild sums
them: a cell is gone when its rows count drops to 0, and a SUM over rows that are all NULL is
NULL, not 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import sqlglot
from sqlglot import exp

from riverbed.lake.schema import OP
from riverbed.load.fact_current import current_rows
from riverbed.load.model import FactModel
from riverbed.serve.extracts.changes import ITEM_FACT, RETURN_FACT, STATUS_FACT
from riverbed.serve.extracts.datasets import Dataset
from riverbed.serve.semantic.measures import MEASURES


def keys_of_days(relation: str, days: Sequence[int]) -> dict[str, str]:
    """fact table -> a SELECT of the keys ``relation`` (items, returns) reads on ``days``."""
    listed = ", ".join(str(int(d)) for d in days)
    if relation == "returns":
        items = f"SELECT order_item_id FROM {RETURN_FACT} WHERE date_key IN ({listed})"
        return {
            RETURN_FACT: f"SELECT return_id FROM {RETURN_FACT} WHERE date_key IN ({listed})",
            ITEM_FACT: items,
            STATUS_FACT: f"SELECT order_id FROM {ITEM_FACT} WHERE order_item_id IN ({items})",
        }
    items = f"SELECT order_item_id FROM {ITEM_FACT} WHERE date_key IN ({listed})"
    return {
        ITEM_FACT: items,
        STATUS_FACT: f"SELECT order_id FROM {ITEM_FACT} WHERE date_key IN ({listed})",
        RETURN_FACT: f"SELECT return_id FROM {RETURN_FACT} WHERE order_item_id IN ({items})",
    }


ROWS = "_rows"  # a cell's grain rows


def hidden(dataset: Dataset) -> tuple[str, ...]:
    """The counts a cell keeps beside its sums (see the module docstring)."""
    return (ROWS, *(f"_n_{m}" for m in dataset.measures if MEASURES[m].agg == "sum"))


def counted(dataset: Dataset) -> exp.Select:
    """``dataset``'s whole aggregate from the warehouse, with its hidden counts."""
    select = dataset.aggregate()
    counts = [exp.alias_(exp.Count(this=exp.Star()), ROWS)]
    for name in hidden(dataset)[1:]:
        counts.append(exp.alias_(exp.Count(this=_expr(MEASURES[name[3:]].expr)), name))
    return select.select(*counts, copy=False)


def grain_select(datasets: Sequence[Dataset]) -> exp.Select:
    """The rows of the grain ``datasets`` share (one pass for all of them), over the
    semantic layer's tables, with every column they hold, each measure's value per row (a
    counted one as 0 or 1) and the hidden counts' (1, or 0 where the value is NULL)."""
    return _grain(tuple(datasets)).copy()


@cache
def grain_sql(datasets: tuple[Dataset, ...]) -> str:
    """grain_select as DuckDB SQL (a refresh by deltas runs it in the extract)."""
    return _grain(datasets).sql(dialect="duckdb")


@cache  # parsed once per process: a refresh asks for each grain several times
def _grain(datasets: tuple[Dataset, ...]) -> exp.Select:
    relation = datasets[0].relation
    shown = {name: sources[0] for d in datasets for name, sources in d.columns}
    values: list[exp.Expr] = [exp.alias_(_expr(text), name) for name, text in shown.items()]
    values.append(exp.alias_(exp.Literal.number(1), ROWS))
    for name in dict.fromkeys(m for d in datasets for m in d.measures):
        measure = MEASURES[name]
        value = _expr(measure.expr)
        if measure.agg == "sum":
            values.append(exp.alias_(_one_unless_null(value.copy()), f"_n_{name}"))
        if measure.agg == "count":
            value = _one_unless_null(value)
        values.append(exp.alias_(value, name))
    read = {c.table for value in values for c in value.find_all(exp.Column)}
    joins = "".join(join for alias, join in relation.optional if alias in read)
    select = sqlglot.parse_one(f"SELECT 1 FROM {relation.from_sql}{joins}", read="duckdb")
    assert isinstance(select, exp.Select)
    select.set("expressions", values)
    return select


def grain_rows(
    datasets: Sequence[Dataset],
    days: Sequence[int],
    facts: Sequence[FactModel],
    columns: dict[str, dict[str, str]],
) -> exp.Select:
    """The grain rows (``grain_select``) of ``days``, for the extract to sum per dataset
    (``local_cells``); the facts' current rows read for those days' keys only. ``columns``:
    the warehouse's tables and their columns (the views' are the facts' but ``_op``)."""
    relation = datasets[0].relation
    select = grain_select(datasets).where(
        exp.In(this=_expr(relation.day_key), expressions=[exp.Literal.number(d) for d in days])
    )
    keys = keys_of_days(relation.name, days)
    views = {f.view: f for f in facts if f.name in keys}
    for table in list(select.find_all(exp.Table)):
        fact = views.get(table.name)
        if fact is None:
            continue
        names = [c for c in columns[fact.name] if c != OP]
        ranked = current_rows(fact, names, keys_from=keys[fact.name])
        alias = exp.TableAlias(this=exp.to_identifier(table.alias_or_name))
        table.replace(exp.Subquery(this=ranked, alias=alias))
    return select


def local_cells(dataset: Dataset, rows: str, *, grain: bool = False) -> str:
    """``dataset``'s cells, with their hidden counts, summed from the rows in table ``rows``:
    a finer dataset's cells or deltas, or (``grain``) grain rows, whose count distinct values
    are counted distinct (DuckDB SQL)."""
    sums = ", ".join(
        f"COUNT(DISTINCT {m}) AS {m}" if grain and not MEASURES[m].additive else f"SUM({m}) AS {m}"
        for m in dataset.measures
    )
    sums += "".join(f", SUM({h}) AS {h}" for h in hidden(dataset))
    return f"SELECT {', '.join(dataset.column_names)}, {sums} FROM {rows} GROUP BY ALL"


def _one_unless_null(value: exp.Expr) -> exp.Expr:
    return exp.Case(
        ifs=[exp.If(this=value.is_(exp.null()).not_(), true=exp.Literal.number(1))],
        default=exp.Literal.number(0),
    )


def _expr(text: str) -> exp.Expr:
    return sqlglot.parse_one(text, read="duckdb")
