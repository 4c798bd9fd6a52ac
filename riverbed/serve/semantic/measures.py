"""The dashboards' measures and dimensions, each defined once, and the one builder that turns a
choice of them into SQL for either warehouse.

How they count (the contract every page, the API and exports share):

* current truth: facts are read through their current-state views (``<fact>_current``: one
  row per live source key with its latest values), so an order item deleted at the source no
  longer counts and an updated quantity or price counts once, with its latest value; a refund
  counts when its return's status (now) is ``refunded``;
* business time: an item is dated by its ``event_time`` (``created_at``, which the shop sets
  to its order's ``ordered_at``), a return by ``requested_at``, through the facts' ``date_key``
  (the UTC day of that time) and ``dim_date``; never by capture time;
* current attributes: a product's category, a seller's or customer's region are their current
  version (``is_current_record``), so a product moved to another category moves its history
  with it, as the source now says.

The grain is the order item (``ITEMS``): each live item with its order (for the customer), its
product, its seller and its day, and its returns summed per item (``item_returns``), so item
measures and return measures meet without a fan-out. ``RETURNS`` is the grain of a return, dated
by its own request day, for counts by reason. Every relation joins ``dim_customer``: the
governance row filter on customers (the demo's EU analyst: ``region = principal.region``)
then narrows every chart, not only the consumer ones.

Regions: a chart about sellers filters on the seller's region (``s.region``), every other chart
on the customer's (``c.region``): who sold versus who bought.

Rates (``return_rate``, ``refund_rate``) are ratios of two additive measures, computed after
the query (``ratio``): both warehouses then divide the same way, and a rate over any grouping
is the ratio of its sums, never an average of rates. ``return_rate`` is returned items / items
sold, ``refund_rate`` refunded items / items sold, both over items sold in the period (by the
item's business time): a return counts against the sale it undoes.

SQL fragments here are constants written in DuckDB's dialect; sqlglot parses the built query
and generates it for the warehouse's dialect (``build``). Reader input never becomes SQL text:
filters enter as literals in the syntax tree (``conditions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any, Literal

import pyarrow as pa
import sqlglot
from sqlglot import exp

from riverbed.serve.semantic.filters import Filters, Window, date_key

# per live order item: its returns now, the refunded ones and what they refunded
_ITEM_RETURNS = (
    "(SELECT order_item_id, COUNT(*) AS returns,"
    " SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS refunds,"
    " SUM(CASE WHEN status = 'refunded' THEN refund_amount ELSE 0 END) AS refund_amount"
    " FROM fact_returns_current GROUP BY order_item_id) AS ir"
)
_ITEM_JOINS = (
    " JOIN fact_order_status_current AS o ON o.order_id = i.order_id"
    " JOIN dim_customer AS c ON c.customer_id = o.customer_id AND c.is_current_record"
    " JOIN dim_product AS p ON p.product_id = i.product_id AND p.is_current_record"
    " JOIN dim_seller AS s ON s.seller_id = i.seller_id AND s.is_current_record"
)


@dataclass(frozen=True)
class Relation:
    """A grain the measures count over: its FROM clause and the column that dates its rows."""

    name: str
    from_sql: str
    day_key: str  # the business day (dim_date's key) of a row
    day: str  # that day's dim_date row, aliased
    # alias -> a join added only when a chosen measure reads that alias (the returns summed
    # per item cost a pass over every return; revenue does not need it)
    optional: tuple[tuple[str, str], ...] = ()


ITEMS = Relation(
    "items",
    "fact_order_items_current AS i"
    + _ITEM_JOINS
    + " JOIN dim_date AS d ON d.date_key = i.date_key",
    "i.date_key",
    "d",
    (("ir", f" LEFT JOIN {_ITEM_RETURNS} ON ir.order_item_id = i.order_item_id"),),
)
RETURNS = Relation(
    "returns",
    "fact_returns_current AS r"
    " JOIN fact_order_items_current AS i ON i.order_item_id = r.order_item_id"
    + _ITEM_JOINS
    + " JOIN dim_date AS d ON d.date_key = r.date_key",
    "r.date_key",
    "d",
)


@dataclass(frozen=True)
class Measure:
    """An additive measure: ``agg`` of ``expr`` over a relation's rows."""

    name: str
    agg: Literal["sum", "count", "count_distinct"]
    expr: str
    doc: str
    relation: str = "items"
    kind: Literal["money", "count"] = "count"

    @property
    def additive(self) -> bool:
        """Whether a sum of its values over parts is its value over the whole (a SUM, a
        COUNT): a count distinct is not, an entity may stand in two parts."""
        return self.agg != "count_distinct"


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure(
            "revenue",
            "sum",
            "i.quantity * i.unit_price",
            "sum of quantity × unit price of live order items",
            kind="money",
        ),
        Measure("units", "sum", "i.quantity", "units sold: sum of quantity of live items"),
        Measure("items", "count", "i.order_item_id", "items sold: live order items (lines)"),
        Measure("orders", "count_distinct", "i.order_id", "orders with a live item"),
        Measure("customers", "count_distinct", "o.customer_id", "customers with a live item"),
        Measure("returns", "sum", "ir.returns", "returns of the items (any status)"),
        Measure("returned_items", "count", "ir.order_item_id", "items with a return"),
        Measure("refunds", "sum", "ir.refunds", "returns whose status reached refunded"),
        Measure(
            "refunded_items",
            "sum",
            "CASE WHEN ir.refunds > 0 THEN 1 ELSE 0 END",
            "items with a refunded return",
        ),
        Measure(
            "refund_amount",
            "sum",
            "ir.refund_amount",
            "amount refunded on refunded returns",
            kind="money",
        ),
        # at the grain of a return, dated by its request
        Measure(
            "return_requests",
            "count",
            "r.return_id",
            "returns requested in the period",
            relation="returns",
        ),
        Measure(
            "return_refunds",
            "sum",
            "CASE WHEN r.status = 'refunded' THEN 1 ELSE 0 END",
            "returns requested in the period and refunded",
            relation="returns",
        ),
        Measure(
            "return_refund_amount",
            "sum",
            "CASE WHEN r.status = 'refunded' THEN r.refund_amount ELSE 0 END",
            "amount refunded on the period's returns",
            relation="returns",
            kind="money",
        ),
    )
}

# rate -> (numerator, denominator)
RATES: dict[str, tuple[str, str]] = {
    "return_rate": ("returned_items", "items"),
    "refund_rate": ("refunded_items", "items"),
}

# name -> SQL over the relations' aliases; month is YYYYMM (month_label makes it YYYY-MM)
DIMENSIONS: dict[str, str] = {
    "month": "d.year * 100 + d.month",
    "month_index": "d.year * 12 + d.month - 1",  # months since year 0: differences are months
    "day": "d.date",
    "category": "p.category",
    "product_id": "p.product_id",
    "product": "p.name",
    "seller_id": "s.seller_id",
    "seller": "s.name",
    "seller_region": "s.region",
    "customer_id": "c.customer_id",
    "customer_region": "c.region",
    "full_name": "c.full_name",
    "email": "c.email",
    "phone": "c.phone",
    "reason": "r.reason",
}

RegionOf = Literal["customer", "seller"]


def aggregate(measure: Measure, when: exp.Expr | None = None) -> exp.Expr:
    """``measure``'s aggregate, over the rows where ``when`` holds when given."""
    value: exp.Expr = _expr(measure.expr)
    if when is not None:
        value = exp.Case(ifs=[exp.If(this=when, true=value)])
    if measure.agg == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[value]))
    if measure.agg == "count":
        return exp.Count(this=value)
    return exp.Sum(this=value)


def conditions(
    relation: Relation, filters: Filters, region_of: RegionOf = "customer"
) -> list[exp.Expr]:
    """``filters`` as predicates on ``relation``: every value a literal in the tree."""
    found: list[exp.Expr] = []
    if filters.date_from is not None:
        found.append(_expr(relation.day_key) >= exp.Literal.number(date_key(filters.date_from)))
    if filters.date_to is not None:
        found.append(_expr(relation.day_key) <= exp.Literal.number(date_key(filters.date_to)))
    if filters.category is not None:
        found.append(_expr("p.category").eq(exp.Literal.string(filters.category)))
    if filters.region is not None:
        column = "s.region" if region_of == "seller" else "c.region"
        found.append(_expr(column).eq(exp.Literal.string(filters.region)))
    for name, column in (
        ("seller", "i.seller_id"),
        ("product", "i.product_id"),
        ("customer", "o.customer_id"),
    ):
        value = getattr(filters, name)
        if value is not None:
            found.append(_expr(column).eq(exp.Literal.number(value)))
    return found


def in_window(relation: Relation, window: Window) -> exp.Expr:
    """``relation``'s rows whose business day falls in ``window``."""
    return exp.Between(
        this=_expr(relation.day_key),
        low=exp.Literal.number(date_key(window.first)),
        high=exp.Literal.number(date_key(window.last)),
    )


def up_to(relation: Relation, day: date) -> exp.Expr:
    """``relation``'s rows of business days up to ``day``, inclusive."""
    return _expr(relation.day_key) <= exp.Literal.number(date_key(day))


def build(
    relation: Relation,
    dimensions: Sequence[str],
    measures: Sequence[str | tuple[str, str, exp.Expr]],
    where: Sequence[exp.Expr] = (),
    order: Sequence[str] = (),
    extra: Sequence[exp.Expr] = (),
) -> exp.Select:
    """SELECT ``dimensions`` and ``measures`` FROM ``relation`` WHERE ``where`` GROUP BY the
    dimensions. A measure is a name from MEASURES, or (output name, measure name, condition)
    for the measure over the rows the condition holds for (a comparison window); ``extra``:
    more output columns (aggregates)."""
    columns: list[exp.Expr] = [exp.alias_(_expr(DIMENSIONS[d]), d) for d in dimensions]
    for item in measures:
        name, measure, when = (item, item, None) if isinstance(item, str) else item
        if MEASURES[measure].relation != relation.name:
            raise ValueError(
                f"measure {measure} counts {MEASURES[measure].relation}, not {relation.name}"
            )
        columns.append(exp.alias_(aggregate(MEASURES[measure], when), name))
    columns += extra
    read = {c.table for column in columns for c in column.find_all(exp.Column)}
    joins = "".join(join for alias, join in relation.optional if alias in read)
    select = _expr(f"SELECT 1 FROM {relation.from_sql}{joins}")
    assert isinstance(select, exp.Select)
    select.set("expressions", columns)
    # the tree is this call's own: built in place, not copied at each step
    if where:
        select = select.where(exp.and_(*where), copy=False)
    if dimensions:
        numbers = (exp.Literal.number(i + 1) for i in range(len(dimensions)))
        select = select.group_by(*numbers, copy=False)
    if order:
        select = select.order_by(*order, copy=False)
    return select


def ratio(numerator: Any, denominator: Any) -> float | None:
    """A rate from two sums; None where the denominator is 0 or missing."""
    if not denominator:
        return None
    return float(Decimal(str(numerator or 0)) / Decimal(str(denominator)))


def month_label(key: int | None) -> str | None:
    """YYYYMM -> 'YYYY-MM'."""
    return None if key is None else f"{int(key) // 100:04d}-{int(key) % 100:02d}"


def index_label(index: int) -> str:
    """month_index (year * 12 + month - 1) -> 'YYYY-MM'."""
    return f"{int(index) // 12:04d}-{int(index) % 12 + 1:02d}"


def number(value: Any, measure: str) -> Any:
    """A measure's value as the charts hand it on: counts as int, money as Decimal, 0 for
    none (a sum over no rows)."""
    kind = MEASURES[measure].kind if measure in MEASURES else "count"
    if value is None:
        return Decimal(0) if kind == "money" else 0
    if kind == "money":
        return value if isinstance(value, Decimal) else Decimal(str(value))
    return int(value)


def numbers(column: pa.ChunkedArray, measure: str) -> list[Any]:
    """``number`` of each value of ``column``, made column-wise where the type allows: Arrow
    makes a Decimal from a decimal several times slower than Python makes one from its text,
    and a whole count (a DuckDB SUM is a decimal of scale 0) is an int64 cast."""
    kind = MEASURES[measure].kind if measure in MEASURES else "count"
    if column.null_count == 0 and pa.types.is_decimal(column.type):
        if kind == "money":
            return list(map(Decimal, column.cast(pa.string()).to_pylist()))
        if column.type.scale == 0:
            return column.cast(pa.int64()).to_pylist()
    if column.null_count == 0 and kind != "money" and pa.types.is_integer(column.type):
        return column.to_pylist()
    return [number(value, measure) for value in column.to_pylist()]


def dimension(name: str) -> exp.Expr:
    """Dimension ``name``'s expression."""
    return _expr(DIMENSIONS[name])


def _expr(text: str) -> exp.Expr:
    """``text`` parsed, a tree of its own: a copy of the one parse kept per text (a chart's
    query is built from the same few fragments each call, and a parse costs more than a
    copy)."""
    return _parsed(text).copy()


@cache
def _parsed(text: str) -> exp.Expr:
    return sqlglot.parse_one(text, read="duckdb")
