"""The cohort charts (new versus returning customers, cohort retention) answered from
``extract_cohorts``: customers counted per customer region × first month × month active.

Both charts read two CTEs of the semantic layer (semantic/consumers.cohort_ctes): ``counts``,
customers per (first month, month active) joined from each customer's months (``activity``)
and first month (``firsts``), and ``sizes``, customers per first month. Summed per customer
they are a pass over every customer's months (1.8M rows at 10M items); the dataset holds them
already counted, a few hundred cells. A query is rewritten onto it when it is exactly the
charts' query for filters the dataset can honour, which this module checks by building that
query again from the filters it reads off the tree and comparing:

* a region (the customer's: every month of a customer has the one region, so the first month
  under a region filter is the first month);
* dates covering whole months (``date_from`` a 1st, ``date_to`` a month's last day): the months
  active shown are then a range of ``month_index``. A day-level range that cuts a month asks
  who ordered on some of its days: the rollup rules answer it from the per-day dataset;
* nothing else: a category changes a customer's first month (first in that category), a
  seller, product or customer filter is not a column here.

Then ``activity`` and ``firsts`` are dropped and ``counts``/``sizes`` read the dataset; the
gateway adds the reader's row filter on ``customer_region`` (policy.py) as for any dataset.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date

from sqlglot import exp

from riverbed.serve.extracts.datasets import COHORTS, Dataset
from riverbed.serve.semantic.consumers import cohort_ctes
from riverbed.serve.semantic.filters import Filters

_X = "x"


def rewrite(select: exp.Expr, datasets: Sequence[Dataset]) -> tuple[exp.Expr, list[str]] | None:
    """``select`` reading ``extract_cohorts`` (and that dataset's name), or None when it is not
    the cohort charts' query or the dataset cannot answer it."""
    if COHORTS not in datasets or not isinstance(select, exp.Select):
        return None
    ctes = {cte.alias: cte for cte in (select.args.get("with_") or exp.With()).expressions}
    if set(ctes) != {"activity", "firsts", "counts", "sizes"} or _reads_beneath(select):
        return None
    filters = _filters(ctes["activity"].this)
    if filters is None or not _whole_months(filters):
        return None
    expected = cohort_ctes(filters)
    if any(ctes[name].this != cte for name, cte in expected):
        return None  # another filter, or not the charts' query
    tree = select.copy()
    with_ = tree.args["with_"]
    where = _region(filters) + _months(filters)
    with_.set(
        "expressions",
        [
            exp.CTE(this=_counts(where), alias=exp.TableAlias(this=exp.to_identifier("counts"))),
            exp.CTE(this=_sizes(filters), alias=exp.TableAlias(this=exp.to_identifier("sizes"))),
        ],
    )
    return tree, [COHORTS.name]


def _reads_beneath(select: exp.Select) -> bool:
    """Whether the query outside its CTEs reads ``activity`` or ``firsts`` (dropped here)."""
    outer = select.copy()
    outer.set("with_", None)
    return any(t.name in ("activity", "firsts") for t in outer.find_all(exp.Table))


def _filters(activity: exp.Expr) -> Filters | None:
    """The region and dates ``activity``'s WHERE names (the rest is checked by comparing)."""
    found: dict[str, object] = {}
    where = activity.args.get("where")
    condition = where.this if where is not None else None
    conjuncts = [] if condition is None else [condition]
    if isinstance(condition, exp.And):
        conjuncts = list(condition.flatten())
    for condition in conjuncts:
        if not isinstance(condition, (exp.EQ, exp.GTE, exp.LTE)):
            return None
        column, value = condition.this, condition.expression
        if not isinstance(column, exp.Column) or not isinstance(value, exp.Literal):
            return None
        name = {
            (exp.EQ, "c", "region"): "region",
            (exp.GTE, "i", "date_key"): "date_from",
            (exp.LTE, "i", "date_key"): "date_to",
        }.get((type(condition), column.table, column.name))
        if name is None or name in found:
            return None
        if name == "region":
            found[name] = value.this if value.is_string else None
        else:
            found[name] = _day(value.this)
        if found[name] is None:
            return None
    return Filters(**found)  # type: ignore[arg-type]


def _day(key: str) -> date | None:
    try:
        number = int(key)
        return date(number // 10000, number // 100 % 100, number % 100)
    except ValueError:
        return None


def _whole_months(filters: Filters) -> bool:
    first, last = filters.date_from, filters.date_to
    if first is not None and first.day != 1:
        return False
    return last is None or last.day == calendar.monthrange(last.year, last.month)[1]


def _index(day: date) -> int:
    return day.year * 12 + day.month - 1


def _region(filters: Filters) -> list[exp.Expr]:
    if filters.region is None:
        return []
    return [exp.column("customer_region", _X).eq(exp.Literal.string(filters.region))]


def _months(filters: Filters) -> list[exp.Expr]:
    month = exp.column("month_index", _X)
    found: list[exp.Expr] = []
    if filters.date_from is not None:
        found.append(month >= exp.Literal.number(_index(filters.date_from)))
    if filters.date_to is not None:
        found.append(month <= exp.Literal.number(_index(filters.date_to)))
    return found


def _from() -> exp.Select:
    return exp.select().from_(exp.to_table(COHORTS.name).as_(_X))


def _counts(where: list[exp.Expr]) -> exp.Select:
    select = _from().select(
        exp.column("first_index", _X),
        exp.column("month_index", _X),
        exp.alias_(exp.Sum(this=exp.column("customers", _X)), "customers"),
    )
    if where:
        select = select.where(exp.and_(*where))
    return select.group_by("1", "2")


def _sizes(filters: Filters) -> exp.Select:
    """Customers per first month under the region (never the dates): each is active in it."""
    first = exp.column("first_index", _X)
    where = [exp.column("month_index", _X).eq(first), *_region(filters)]
    return (
        _from()
        .select(first, exp.alias_(exp.Sum(this=exp.column("customers", _X)), "cohort_size"))
        .where(exp.and_(*where))
        .group_by("1")
    )
