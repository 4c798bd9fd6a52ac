"""What is in the shop, in the terms a dashboard will later show: volumes, trends, tiers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from riverbed.shop import schema

# Return-rate bounds that separate the seller tiers the history is generated with.
TIER_BOUNDS = (("low", 0.0, 0.05), ("medium", 0.05, 0.15), ("high", 0.15, 1.01))


@dataclass(frozen=True)
class CategoryTrend:
    category: str
    first_month_items: int
    last_month_items: int

    @property
    def change(self) -> float:
        return (self.last_month_items - self.first_month_items) / max(self.first_month_items, 1)


@dataclass(frozen=True)
class ShopSummary:
    rows: dict[str, int]
    first_month: str
    last_month: str
    categories: list[CategoryTrend]  # sorted from fastest growing to fastest declining
    seller_tiers: dict[str, int]  # tier -> sellers whose return rate falls in it
    revenue_by_region: dict[str, float]


def category_trends(
    conn: psycopg.Connection[Any], schema_name: str = schema.SCHEMA
) -> tuple[str, str, list[CategoryTrend]]:
    """Items sold per category in the first and the last complete calendar month."""
    s = sql.Identifier(schema_name)
    rows = conn.execute(
        sql.SQL("""
        with bounds as (
          select date_trunc('month', min(ordered_at)) + interval '1 month' as first_m,
                 date_trunc('month', max(ordered_at)) - interval '1 month' as last_m
          from {s}.orders where ordered_at <= now()
        )
        select p.category, to_char(b.first_m, 'YYYY-MM'), to_char(b.last_m, 'YYYY-MM'),
               count(*) filter (where date_trunc('month', o.ordered_at) = b.first_m),
               count(*) filter (where date_trunc('month', o.ordered_at) = b.last_m)
        from {s}.order_items i
        join {s}.orders o using (order_id)
        join {s}.products p using (product_id)
        cross join bounds b
        group by 1, 2, 3
    """).format(s=s)
    ).fetchall()
    if not rows:
        return "", "", []
    trends = [CategoryTrend(r[0], r[3], r[4]) for r in rows]
    trends.sort(key=lambda t: t.change, reverse=True)
    return rows[0][1], rows[0][2], trends


def seller_return_tiers(
    conn: psycopg.Connection[Any], schema_name: str = schema.SCHEMA
) -> dict[str, int]:
    """Sellers per return-rate tier (returns / items sold, sellers with 50+ items sold)."""
    s = sql.Identifier(schema_name)
    rates = [
        r[0]
        for r in conn.execute(
            sql.SQL("""
        select count(r.return_id)::float / count(*)
        from {s}.order_items i left join {s}.returns r using (order_item_id)
        group by i.seller_id having count(*) >= 50
    """).format(s=s)
        )
    ]
    return {name: sum(lo <= rate < hi for rate in rates) for name, lo, hi in TIER_BOUNDS}


def summarize(conn: psycopg.Connection[Any], schema_name: str = schema.SCHEMA) -> ShopSummary:
    s = sql.Identifier(schema_name)
    counts = schema.seeded_counts(conn, schema_name) or {}
    first, last, trends = category_trends(conn, schema_name)
    regions = conn.execute(
        sql.SQL("""
        select c.region, sum(i.quantity * i.unit_price)::float
        from {s}.order_items i join {s}.orders o using (order_id) join {s}.customers c using (customer_id)
        where c.region is not null group by 1 order by 2 desc
    """).format(s=s)
    ).fetchall()
    return ShopSummary(
        counts,
        first,
        last,
        trends,
        seller_return_tiers(conn, schema_name),
        {r[0]: r[1] for r in regions},
    )
