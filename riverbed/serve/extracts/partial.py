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
(the order id), counted distinct per cell.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def grain_rows(
    datasets: Sequence[Dataset],
    days: Sequence[int],
    facts: Sequence[FactModel],
    columns: dict[str, dict[str, str]],
) -> exp.Select:
    """The rows of ``days`` of the grain ``datasets`` share (one pass for all of them), with
    every column they hold and each measure's value per row (a counted one as 0 or 1), for
    the extract to sum per dataset (``local_cells``); the facts' current rows read for those
    days' keys only. ``columns``: the warehouse's tables and their columns (the views' are the
    facts' but ``_op``)."""
    relation = datasets[0].relation
    shown = {name: sources[0] for d in datasets for name, sources in d.columns}
    values: list[exp.Expr] = [exp.alias_(_expr(text), name) for name, text in shown.items()]
    for name in dict.fromkeys(m for d in datasets for m in d.measures):
        measure = MEASURES[name]
        value = _expr(measure.expr)
        if measure.agg == "count":
            value = exp.Case(
                ifs=[exp.If(this=value.is_(exp.null()).not_(), true=exp.Literal.number(1))],
                default=exp.Literal.number(0),
            )
        values.append(exp.alias_(value, name))
    read = {c.table for value in values for c in value.find_all(exp.Column)}
    joins = "".join(join for alias, join in relation.optional if alias in read)
    select = sqlglot.parse_one(f"SELECT 1 FROM {relation.from_sql}{joins}", read="duckdb")
    assert isinstance(select, exp.Select)
    select.set("expressions", values)
    select = select.where(
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


def local_cells(dataset: Dataset, rows: str) -> str:
    """``dataset``'s cells summed from the grain rows in table ``rows`` (DuckDB SQL)."""
    sums = ", ".join(
        f"COUNT(DISTINCT {m}) AS {m}" if MEASURES[m].agg == "count_distinct" else f"SUM({m}) AS {m}"
        for m in dataset.measures
    )
    return f"SELECT {', '.join(dataset.column_names)}, {sums} FROM {rows} GROUP BY ALL"


def _expr(text: str) -> exp.Expr:
    return sqlglot.parse_one(text, read="duckdb")
