"""Whether a dataset can answer a chart's query, and the query rewritten onto it (Rill's rollup
rules): every SELECT of the query that reads a grain of the semantic layer (``FROM
fact_order_items_current AS i`` ..., as measures.build writes it) is replaced by the same
SELECT over a dataset, when

* every column it names (group-bys, filters, a comparison window's condition, MIN/MAX of a
  dimension) is a column of the dataset (datasets.Dataset.mapping), and
* every SUM and COUNT in it is one of the dataset's measures, whole or under a condition
  (``SUM(CASE WHEN <window> THEN <measure> END)``): it becomes the SUM of the measure's
  column, under the same condition;
* every COUNT(DISTINCT ...) in it counts columns the dataset holds (``customers``: the same
  count over the cells, which exist only where the grain has rows), or is a count distinct
  the dataset holds per cell (``orders``), which is summed, under its condition, only where
  no order can fall in two of the cells summed: every item-level column of the dataset
  (datasets.Dataset.splits_orders) is grouped by or pinned by an equality in the WHERE's
  top-level AND, itself or its dimension's key (``seller_id`` for ``seller``), and the
  caller says days do not split orders (``sum_orders``: the extract's split_orders is
  empty). The seller table of every category cannot read a dataset keyed by category, that
  of one category can.

A SELECT grouping by every column of the dataset that answers it reads the cells as they are,
no GROUP BY (``_ungrouped``: a group is one cell).

When the first dataset that answers a SELECT is a per-day one and its day range cuts months
while covering some whole, the range is split: whole months from a monthly dataset, the cut
months' days from the per-day one (split.py).

Anything else (another aggregate, a subquery inside the grain's SELECT, a column the dataset
lacks) and the whole query is answered live. What reads the grain's result (the consumer
charts' outer queries, CTEs) is left as it is: it reads the same rows either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import sqlglot
from sqlglot import exp

from riverbed.serve.extracts.datasets import Dataset
from riverbed.serve.extracts.split import split
from riverbed.serve.semantic.measures import ITEMS, MEASURES, RETURNS, Relation

ALIAS = "x"  # the dataset's alias in a rewritten query
_BASES = {(ITEMS.from_sql.split()[0], "i"): ITEMS, (RETURNS.from_sql.split()[0], "r"): RETURNS}


def rollup(
    select: exp.Expr, datasets: Sequence[Dataset], *, sum_orders: bool = True
) -> tuple[exp.Expr, list[str]] | None:
    """``select`` over datasets (and the datasets read), or None when they cannot answer it;
    ``sum_orders``: whether a distinct count held per cell may be summed over days."""
    tree = select.copy()
    bases = [(s, relation) for s in tree.find_all(exp.Select) if (relation := _relation(s))]
    if not bases:
        return None
    used: list[str] = []
    for base, relation in bases:
        found = _answered(base, relation, datasets, sum_orders)
        if found is None:
            return None
        onto, names = found
        if base is tree:
            tree = onto
        else:
            base.replace(onto)
        used += names
    return tree, used


def _answered(
    base: exp.Select, relation: Relation, datasets: Sequence[Dataset], sum_orders: bool
) -> tuple[exp.Select, list[str]] | None:
    """``base`` onto the first dataset that answers it; when that is a per-day one, its day
    range split into whole months from a monthly dataset and the cut months' days if one
    answers those (split.py)."""
    direct = _first(base, relation, datasets, sum_orders)
    if direct is None or "date_key" not in direct[1].column_names:
        return None if direct is None else (direct[0], [direct[1].name])
    read: list[Dataset] = []

    def answer(part: exp.Select) -> exp.Select | None:
        found = _first(part, relation, datasets, sum_orders)
        if found is None:
            return None
        read.append(found[1])
        return found[0]

    parts = split(base, relation, answer)
    if parts is None or "date_key" in read[0].column_names:  # the months not from a monthly
        return direct[0], [direct[1].name]
    return parts, list(dict.fromkeys(d.name for d in read))


def _first(
    base: exp.Select, relation: Relation, datasets: Sequence[Dataset], sum_orders: bool
) -> tuple[exp.Select, Dataset] | None:
    for dataset in datasets:
        if dataset.relation is relation:
            onto = _onto(base, dataset, sum_orders)
            if onto is not None:
                return onto, dataset
    return None


def _relation(select: exp.Select) -> Relation | None:
    source = select.args.get("from_")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table):
        return None
    return _BASES.get((table.name, table.alias))


def _onto(base: exp.Select, dataset: Dataset, sum_orders: bool) -> exp.Select | None:
    """``base`` over ``dataset``, or None when the dataset cannot answer it."""
    new = base.copy()
    new.set("joins", None)
    new.set("from_", exp.From(this=exp.to_table(dataset.name).as_(ALIAS)))
    if any(node is not new for node in new.find_all(exp.Select)) or new.find(exp.Star):
        return None
    mapping = dataset.mapping()
    summed_distinct = False
    for node in list(new.find_all(exp.AggFunc)):
        if isinstance(node, (exp.Min, exp.Max)):
            continue
        distinct = isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct)
        if distinct and all((c.table, c.name) in mapping for c in node.find_all(exp.Column)):
            continue  # the columns it counts are the dataset's: mapped below
        if distinct and not sum_orders:
            return None
        replacement = _measure(node, dataset)
        if replacement is None:
            return None
        summed_distinct |= distinct
        node.replace(replacement)
    for column in list(new.find_all(exp.Column)):
        if column.table == ALIAS:
            continue
        name = mapping.get((column.table, column.name))
        if name is None:
            return None
        column.replace(exp.column(name, ALIAS))
    if summed_distinct and not _whole_orders(new, dataset):
        return None
    return _ungrouped(new, dataset)


def _ungrouped(select: exp.Select, dataset: Dataset) -> exp.Select:
    """``select`` without its GROUP BY when it groups by every column of ``dataset``: each
    group is then one cell (a dataset's columns are its cells' key), so each SUM, MIN and MAX
    is its cell's value. Aggregating a row per customer into a row per customer cost a top-N
    of customer_refunds several times the top-N itself (~100,000 cells at 10M items)."""
    aggregates = list(select.find_all(exp.AggFunc))
    if select.args.get("having") or select.find(exp.Window):
        return select
    if not set(dataset.column_names) <= _grouped(select):
        return select
    if not all(isinstance(a, (exp.Sum, exp.Min, exp.Max)) for a in aggregates):
        return select
    for aggregate in aggregates:
        aggregate.replace(aggregate.this)
    select.set("group", None)
    return select


def _whole_orders(select: exp.Select, dataset: Dataset) -> bool:
    """Whether no order can fall in two of the cells ``select`` sums into one row: each
    item-level column of ``dataset`` is grouped by or pinned, or its dimension's key is (a
    seller's name and region are the seller's)."""
    held = _grouped(select) | _pinned(select)
    return all(c in held or dataset.key_of(c) in held for c in dataset.splits_orders)


def _grouped(select: exp.Select) -> set[str]:
    """The dataset columns ``select`` groups by (by position or by name)."""
    found = set()
    group = select.args.get("group")
    for key in group.expressions if group is not None else []:
        if isinstance(key, exp.Literal) and key.is_int:
            key = select.expressions[int(key.name) - 1].unalias()
        if isinstance(key, exp.Column):
            found.add(key.name)
    return found


def _pinned(select: exp.Select) -> set[str]:
    """The dataset columns ``select``'s WHERE holds equal to one value (``x.c = 'v'`` in its
    top-level AND)."""
    where = select.args.get("where")
    if where is None:
        return set()
    condition = where.this.unnest()
    found = set()
    for term in condition.flatten() if isinstance(condition, exp.And) else [condition]:
        term = term.unnest()
        if isinstance(term, exp.EQ):
            sides = (term.this, term.expression)
            for one, other in (sides, sides[::-1]):
                if isinstance(one, exp.Column) and isinstance(other, exp.Literal):
                    found.add(one.name)
    return found


def _measure(node: exp.Expr, dataset: Dataset) -> exp.Expr | None:
    """The SUM over ``dataset`` that stands for the aggregate ``node``, or None."""
    if not isinstance(node, (exp.Sum, exp.Count)):
        return None
    agg = "sum" if isinstance(node, exp.Sum) else "count"
    inner = node.this
    if isinstance(inner, exp.Distinct):
        if len(inner.expressions) != 1:
            return None
        agg, inner = "count_distinct", inner.expressions[0]
    candidates: list[tuple[exp.Expr | None, exp.Expr]] = [(None, inner)]
    ifs = inner.args.get("ifs") if isinstance(inner, exp.Case) else None
    if ifs and len(ifs) == 1 and inner.args.get("default") is None:
        candidates.append((ifs[0].this, ifs[0].args["true"]))
    for when, value in candidates:
        for name in dataset.measures:
            measure = MEASURES[name]
            if measure.agg == agg and _parsed(measure.expr) == value:
                column: exp.Expr = exp.column(name, ALIAS)
                if when is not None:
                    column = exp.Case(ifs=[exp.If(this=when.copy(), true=column)])
                return exp.Sum(this=column)
    return None


@cache
def _parsed(text: str) -> exp.Expr:  # compared, never changed: one parse each
    return sqlglot.parse_one(text, read="duckdb")
