"""Consumer statistics: the spending distribution, transaction counts, refunds per customer,
new versus returning customers per month, and cohort retention. Regions are the customers'.

Personal columns (email, full name, phone) are read through the gateway like any other
column: it masks them as the reader's policy says, so a reader sees them only as far as the
masks allow. customer_refunds counts by customer id and then reads those columns for the
customers it shows only (its page asks for the 100 most refunded), so its numbers can come
from the extract, which holds no personal column, and the personal ones never do.

A customer is new in the month of their first order ever (under the category and region
filters, not the date filters: a first order before the range shown is still a first order),
returning in a later month they order in; a cohort is the customers of one first month, and
its retention ``k`` months later the share of them who ordered in month ``cohort + k``.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from riverbed.serve.semantic.chart import Chart, Context
from riverbed.serve.semantic.filters import Filters
from riverbed.serve.semantic.measures import (
    ITEMS,
    build,
    conditions,
    dimension,
    index_label,
    number,
    numbers,
    ratio,
)


def _per_customer(ctx: Context, measure: str) -> exp.Select:
    return build(ITEMS, ["customer_id"], [measure], conditions(ITEMS, ctx.filters))


def spending_distribution(ctx: Context) -> list[dict[str, Any]]:
    """Customers per bucket of what they spent (config ``dashboards.spending_buckets``)."""
    edges = ctx.project.config.dashboards.spending_buckets
    spent = exp.column("revenue", "per_customer")
    bucket = exp.Case(
        ifs=[exp.If(this=spent < exp.convert(e), true=exp.convert(i)) for i, e in enumerate(edges)],
        default=exp.convert(len(edges)),
    )
    select = (
        exp.select(
            exp.alias_(bucket, "bucket"),
            exp.alias_(exp.Count(this=exp.Star()), "customers"),
            exp.alias_(exp.Sum(this=spent), "spent"),
        )
        .from_(_per_customer(ctx, "revenue").subquery("per_customer"))
        .group_by("1")
        .order_by("1")
    )
    found = {int(r["bucket"]): r for r in ctx.rows(select)}
    out = []
    for i in range(len(edges) + 1):
        low = Decimal(str(edges[i - 1])) if i else Decimal(0)
        high = Decimal(str(edges[i])) if i < len(edges) else None
        row = found.get(i, {})
        out.append(
            {
                "bucket": f"{low:g}–{high:g}" if high is not None else f"{low:g}+",
                "low": low,
                "high": high,
                "customers": number(row.get("customers"), "customers"),
                "spent": number(row.get("spent"), "revenue"),
            }
        )
    return out


def transaction_counts(ctx: Context) -> list[dict[str, Any]]:
    """How many customers placed 1, 2, 3 ... orders."""
    orders = exp.column("orders", "per_customer")
    select = (
        exp.select(
            exp.alias_(orders, "orders"), exp.alias_(exp.Count(this=exp.Star()), "customers")
        )
        .from_(_per_customer(ctx, "orders").subquery("per_customer"))
        .group_by("1")
        .order_by("1")
    )
    return [
        {"orders": int(r["orders"]), "customers": int(r["customers"])} for r in ctx.rows(select)
    ]


_REFUND_MEASURES = ("orders", "revenue", "returns", "refunds", "refund_amount")
_PERSONAL = ("full_name", "email", "phone")
_LOOKUP_IDS = 1_000  # customers looked up by id; more: every current row read instead


def customer_refunds(ctx: Context) -> list[dict[str, Any]]:
    """Per customer: orders, spending, returns and refunds, most refunded first, the top
    ``ctx.limit`` only when limited. Counted by customer id and region (from the extract
    where it can), ranked and cut (``_ranked``); then the personal columns of the customers
    shown are read from dim_customer's current rows through the gateway, masked and
    filtered for the reader as any query is (an extract holds none)."""
    per_customer = build(
        ITEMS,
        ["customer_id", "customer_region"],
        list(_REFUND_MEASURES),
        conditions(ITEMS, ctx.filters),
    )
    table, total = _top(ctx, per_customer)
    if ctx.limit is not None:
        ctx.meta |= {"limit": ctx.limit, "rows_total": total}
    ids = table.column("customer_id").to_pylist()
    people = _personal(ctx, ids)
    values = {m: numbers(table.column(m), m) for m in _REFUND_MEASURES}
    regions = table.column("customer_region").to_pylist()
    rows = []
    for i, customer in enumerate(ids):
        person = people.get(customer, {})
        rows.append(
            {"customer_id": customer}
            | {c: person.get(c) for c in _PERSONAL}
            | {"customer_region": regions[i]}
            | {m: values[m][i] for m in _REFUND_MEASURES}
        )
    return rows


_TOTAL = "rows_total"  # the customers counted, beside the ranked rows of the extract's answer


def _top(ctx: Context, per_customer: exp.Select) -> tuple[pa.Table, int]:
    """The customers most refunded first (the first ``ctx.limit`` when limited) and how many
    there are. From the extract ranked and cut in its query: there it is a top-N over a row
    per customer (extract_customer_totals, with no date or category condition) and a hundred
    rows come back, where handing every customer over and ranking them here cost most of the
    chart's time. Live, counted and then ranked here (``_ranked``)."""
    ranking = [
        exp.Ordered(this=exp.func("COALESCE", exp.column(m), exp.Literal.number(0)), desc=True)
        for m in ("refund_amount", "refunds")
    ]
    # the count a scalar over the same CTE: a window over every customer cost more than the
    # top-N; built in place (copy=False): each copy of the grain's query cost a millisecond
    counted = exp.select(exp.Count(this=exp.Star())).from_("per_customer")
    ranked = exp.select(*per_customer.named_selects, exp.alias_(counted.subquery(), _TOTAL))
    ranked = ranked.from_("per_customer", copy=False)
    ranked = ranked.with_("per_customer", as_=per_customer, copy=False)
    ranked = ranked.order_by(*ranking, exp.Ordered(this=exp.column("customer_id")), copy=False)
    if ctx.limit is not None:
        ranked = ranked.limit(ctx.limit, copy=False)
    top = ctx.from_extract(ranked)
    if top is not None:
        total = top.column(_TOTAL)[0].as_py() if top.num_rows else 0
        return top.drop_columns([_TOTAL]), int(total)
    counted = ctx.arrow(per_customer)
    return _ranked(counted).slice(0, ctx.limit), counted.num_rows


def _ranked(table: pa.Table) -> pa.Table:
    """Customers most refunded first (amount, then refunds; none counts as 0), by id among
    equals. Ranked here, not in the query: a window or ORDER BY over the live grain's
    aggregate took DuckDB past the reader's memory limit at 10M items, and from the extract
    the ~100,000 rows sort in a few milliseconds."""
    if not table.num_rows:
        return table
    # compared as doubles: a decimal sort is several times slower, and money in cents below
    # 2^53 orders the same (refunds are whole numbers)
    keys = {
        name: pc.coalesce(table.column(name).cast(pa.float64()), 0.0)
        for name in ("refund_amount", "refunds")
    }
    order = pc.sort_indices(
        pa.table({**keys, "customer_id": table.column("customer_id")}),
        sort_keys=[
            ("refund_amount", "descending"),
            ("refunds", "descending"),
            ("customer_id", "ascending"),
        ],
    )
    return table.take(order)


def _personal(ctx: Context, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The personal columns of customers ``ids`` as the reader may see them, by id."""
    if not ids:
        return {}
    columns = [exp.alias_(dimension(d), d) for d in ("customer_id", *_PERSONAL)]
    select = exp.select(*columns).from_("dim_customer AS c").where("c.is_current_record")
    if len(ids) <= _LOOKUP_IDS:
        listed = [exp.Literal.number(int(i)) for i in ids]
        select = select.where(exp.In(this=dimension("customer_id"), expressions=listed))
    found = ctx.arrow(select, lookup=True).to_pylist()
    return {row["customer_id"]: row for row in found}


# how many customers of each first month were active in each month, and each first month's
# customers: what both cohort charts count, over ``activity`` and ``firsts``
# (cohort_ctes); the extract answers these two from its own counts (extracts/cohorts.py)
COUNTS = (
    "SELECT f.first_index, a.month_index, COUNT(*) AS customers"
    " FROM activity AS a JOIN firsts AS f ON f.customer_id = a.customer_id GROUP BY 1, 2"
)
SIZES = "SELECT first_index, COUNT(*) AS cohort_size FROM firsts GROUP BY 1"


def cohort_ctes(filters: Filters) -> list[tuple[str, exp.Select]]:
    """The cohort charts' CTEs: ``activity`` (each customer's months with an order under
    every filter), ``firsts`` (each customer's first month under the filters but the dates),
    as month indexes, and ``counts`` and ``sizes`` over them."""
    activity = build(ITEMS, ["customer_id", "month_index"], [], conditions(ITEMS, filters))
    undated = dataclasses.replace(filters, date_from=None, date_to=None)
    first = exp.alias_(exp.Min(this=dimension("month_index")), "first_index")
    firsts = build(ITEMS, ["customer_id"], [], conditions(ITEMS, undated), extra=[first])
    return [
        ("activity", activity),
        ("firsts", firsts),
        ("counts", _parsed(COUNTS)),
        ("sizes", _parsed(SIZES)),
    ]


def _with_cohorts(select: exp.Select, ctx: Context) -> exp.Select:
    for name, cte in cohort_ctes(ctx.filters):
        select = select.with_(name, as_=cte, copy=False)
    return select


def _parsed(sql: str) -> exp.Select:
    select = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(select, exp.Select)
    return select


def new_vs_returning(ctx: Context) -> list[dict[str, Any]]:
    select = _parsed(
        "SELECT month_index,"
        " SUM(CASE WHEN month_index = first_index THEN customers ELSE 0 END) AS new_customers,"
        " SUM(CASE WHEN month_index > first_index THEN customers ELSE 0 END)"
        " AS returning_customers FROM counts GROUP BY 1 ORDER BY 1"
    )
    return [
        {
            "month": index_label(r["month_index"]),
            "new_customers": number(r["new_customers"], "customers"),
            "returning_customers": number(r["returning_customers"], "customers"),
        }
        for r in ctx.rows(_with_cohorts(select, ctx))
    ]


def cohort_retention(ctx: Context) -> list[dict[str, Any]]:
    select = _parsed(
        "SELECT c.first_index AS cohort, c.month_index - c.first_index AS months_since,"
        " SUM(c.customers) AS customers, MAX(s.cohort_size) AS cohort_size"
        " FROM counts AS c JOIN sizes AS s ON s.first_index = c.first_index"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return [
        {
            "cohort": index_label(r["cohort"]),
            "months_since": int(r["months_since"]),
            "customers": int(r["customers"]),
            "cohort_size": int(r["cohort_size"]),
            "retention": ratio(r["customers"], r["cohort_size"]),
        }
        for r in ctx.rows(_with_cohorts(select, ctx))
    ]


CHARTS = (
    Chart(
        "spending_distribution",
        "consumers",
        "Customers by what they spent",
        ("bucket", "low", "high", "customers", "spent"),
        spending_distribution,
    ),
    Chart(
        "transaction_counts",
        "consumers",
        "Customers by number of orders",
        ("orders", "customers"),
        transaction_counts,
    ),
    Chart(
        "customer_refunds",
        "consumers",
        "Refunds per customer",
        (
            "customer_id",
            "full_name",
            "email",
            "phone",
            "customer_region",
            "orders",
            "revenue",
            "returns",
            "refunds",
            "refund_amount",
        ),
        customer_refunds,
        page_limit=100,
    ),
    Chart(
        "new_vs_returning",
        "consumers",
        "New and returning customers per month",
        ("month", "new_customers", "returning_customers"),
        new_vs_returning,
    ),
    Chart(
        "cohort_retention",
        "consumers",
        "Cohort retention",
        ("cohort", "months_since", "customers", "cohort_size", "retention"),
        cohort_retention,
    ),
)
