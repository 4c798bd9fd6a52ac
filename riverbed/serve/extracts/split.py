"""A grain SELECT under a day range that cuts months, answered as its whole months from a
monthly dataset and its cut edge months' days from a per-day one.

A condition on the business day (``i.date_key <= 20261207``: the as-of date of the growth
chart, or a reader's range from the 3rd to the 20th) keeps a query off the monthly datasets,
which have no day: the per-day dataset answers it, a pass over every day in the range (3.4M
cells at 10M items for a range of all history). Split instead, the months the range covers
whole are read from the monthly dataset (``year * 100 + month BETWEEN``) and only the days of
the one or two months it cuts from the per-day dataset, the two parts summed again by the
query's groups: the same rows, since every aggregate the datasets answer is a SUM (of sums),
or a MIN/MAX, and grouping again by the same columns merges a group found in both parts.

Split only when the range both cuts a month and covers one whole (else the per-day dataset
is as good), and only a plain grouped SELECT (no HAVING, LIMIT, DISTINCT, window, nor an
aggregate inside an expression); a condition over the day inside an aggregate (a
comparison window) leaves the monthly part unanswerable: not split.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, timedelta

from sqlglot import exp

from riverbed.serve.semantic.measures import Relation

Answer = Callable[[exp.Select], exp.Select | None]  # a grain SELECT onto a dataset, or None


def split(base: exp.Select, relation: Relation, answer: Answer) -> exp.Select | None:
    """``base`` as its whole months (through ``answer``) and cut edge days summed, or None."""
    found = _day_range(base, relation)
    if found is None or not _plain(base):
        return None
    others, low, high = found
    first = low if low.day == 1 else _next_month(low)
    last = high if _month_end(high) else high.replace(day=1) - timedelta(days=1)
    if first > last or (first == low and last == high):
        return None  # no month covered whole, or none cut: one dataset answers it as it is
    parts = [_narrowed(base, others, _months(first, last))]
    if first != low:
        parts.append(_narrowed(base, others, _days(relation, low, first - timedelta(days=1))))
    if last != high:
        parts.append(_narrowed(base, others, _days(relation, last + timedelta(days=1), high)))
    answered = [answer(part) for part in parts]
    if any(part is None for part in answered):
        return None
    return _summed(base, [part for part in answered if part is not None])


_LOWEST, _HIGHEST = date(1, 1, 1), date(9999, 12, 31)


def _day_range(base: exp.Select, relation: Relation) -> tuple[list[exp.Expr], date, date] | None:
    """(the WHERE's other conditions, the first and last day it keeps) when it bounds the day
    by literals, else None."""
    where = base.args.get("where")
    if where is None:
        return None
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    low, high, others, bounded = _LOWEST, _HIGHEST, [], False
    for condition in conjuncts:
        bounds = _bounds(condition, relation)
        if bounds is None:
            others.append(condition)
            continue
        bounded = True
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return (others, low, high) if bounded and low <= high else None


def _bounds(condition: exp.Expr, relation: Relation) -> tuple[date, date] | None:
    if isinstance(condition, exp.Between) and _is_day(condition.this, relation):
        low, high = _day(condition.args["low"]), _day(condition.args["high"])
        return (low, high) if low and high else None
    if isinstance(condition, (exp.GTE, exp.LTE)) and _is_day(condition.this, relation):
        day = _day(condition.expression)
        if day is None:
            return None
        return (day, _HIGHEST) if isinstance(condition, exp.GTE) else (_LOWEST, day)
    return None


def _is_day(node: exp.Expr, relation: Relation) -> bool:
    return isinstance(node, exp.Column) and node.sql(dialect="duckdb") == relation.day_key


def _day(node: exp.Expr) -> date | None:
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    try:
        key = int(node.this)
        return date(key // 10000, key // 100 % 100, key % 100)
    except ValueError:
        return None


def _plain(base: exp.Select) -> bool:
    if any(base.args.get(k) for k in ("having", "limit", "offset", "distinct", "qualify")):
        return False
    if base.find(exp.Window):
        return False
    for column in base.expressions:
        inner = column.this if isinstance(column, exp.Alias) else column
        if not column.alias_or_name or (inner.find(exp.AggFunc) and not _reaggregate(inner)):
            return False
    return all(_ordinal(o.this) for o in (base.args.get("order") or exp.Order()).expressions)


def _reaggregate(node: exp.Expr) -> type[exp.AggFunc] | None:
    """How a part's value of aggregate ``node`` is aggregated again: SUM of counts and sums."""
    if isinstance(node, (exp.Sum, exp.Count)) and not isinstance(node.this, exp.Distinct):
        return exp.Sum
    if isinstance(node, (exp.Min, exp.Max)):
        return type(node)
    return None


def _ordinal(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _month_end(day: date) -> bool:
    return day.day == calendar.monthrange(day.year, day.month)[1]


def _months(first: date, last: date) -> exp.Expr:
    month = exp.Add(
        this=exp.Mul(this=exp.column("year", "d"), expression=exp.Literal.number(100)),
        expression=exp.column("month", "d"),
    )
    return exp.Between(
        this=month,
        low=exp.Literal.number(first.year * 100 + first.month),
        high=exp.Literal.number(last.year * 100 + last.month),
    )


def _days(relation: Relation, first: date, last: date) -> exp.Expr:
    table, name = relation.day_key.split(".")
    return exp.Between(
        this=exp.column(name, table),
        low=exp.Literal.number(int(first.strftime("%Y%m%d"))),
        high=exp.Literal.number(int(last.strftime("%Y%m%d"))),
    )


def _narrowed(base: exp.Select, others: list[exp.Expr], condition: exp.Expr) -> exp.Select:
    part = base.copy()
    part.set("order", None)
    part.set("where", exp.Where(this=exp.and_(*[o.copy() for o in others], condition)))
    return part


def _summed(base: exp.Select, parts: list[exp.Select]) -> exp.Select:
    """The parts' rows grouped again as ``base`` groups them, in its order."""
    union: exp.Query = parts[0]
    for part in parts[1:]:
        union = exp.union(union, part, distinct=False)
    columns: list[exp.Expr] = []
    groups: list[exp.Expr] = []
    for i, column in enumerate(base.expressions):
        name = column.alias_or_name
        inner = column.this if isinstance(column, exp.Alias) else column
        again = _reaggregate(inner) if inner.find(exp.AggFunc) else None
        value: exp.Expr = exp.column(name, "parts")
        if again is None:
            groups.append(exp.Literal.number(i + 1))
        else:
            value = again(this=value)
        columns.append(exp.alias_(value, name))
    select = exp.select(*columns).from_(union.subquery("parts"))
    if groups:
        select = select.group_by(*groups)
    order = base.args.get("order")
    if order is not None:
        select.set("order", order.copy())
    return select
