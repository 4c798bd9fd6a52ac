"""Consumer statistics: the spending distribution, transaction counts, refunds per customer,
new versus returning customers per month, and cohort retention. Regions are the customers'.

Personal columns (email, full name, phone) are selected like any other: the gateway masks them
as the reader's policy says, so a reader sees them only as far as the masks allow.

A customer is new in the month of their first order ever (under the category and region
filters, not the date filters: a first order before the range shown is still a first order),
returning in a later month they order in; a cohort is the customers of one first month, and
its retention ``k`` months later the share of them who ordered in month ``cohort + k``.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

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


def customer_refunds(ctx: Context) -> list[dict[str, Any]]:
    """Per customer: orders, spending, returns and refunds, most refunded first."""
    rows = ctx.table(
        ITEMS,
        ["customer_id", "full_name", "email", "phone", "customer_region"],
        ["orders", "revenue", "returns", "refunds", "refund_amount"],
    )
    rows.sort(key=lambda r: (-r["refund_amount"], -r["refunds"], r["customer_id"]))
    return rows


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
