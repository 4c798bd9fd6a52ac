"""Seller behaviour: per seller, orders, return rate, refund rate and refund amount, each in a
high, medium or low bucket; the buckets' sizes month by month; and the drill to one seller's
returns by reason. Regions here are the sellers' (who sold); the governance row filter on
customers still narrows the items counted (measures.py).

Buckets (config ``dashboards.seller_buckets``): by ``return_rate`` (the default) or
``refund_rate``, with thresholds (the default, 0.15 and 0.05: between the demo shop's seller
tiers) or quantiles of the sellers' rates in the same period (per month for the monthly
sizes). A seller's rate is over the items it sold in the period (by the item's business time),
so a month's rate is that month's sales' returns. The drill counts the seller's returns by
their own business time (``requested_at``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from riverbed.config.dashboards import SellerBucketsConfig
from riverbed.serve.semantic.chart import Chart, Context
from riverbed.serve.semantic.measures import ITEMS, RETURNS

Bucket = Literal["high", "medium", "low"]
BUCKETS: tuple[Bucket, ...] = ("high", "medium", "low")


def cut_points(rates: Sequence[float], config: SellerBucketsConfig) -> tuple[float, float]:
    """(high, medium): the rates at or above which a seller is high, medium."""
    if config.method == "thresholds":
        return config.high, config.medium
    return quantile(rates, config.high), quantile(rates, config.medium)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear between the nearest ranks)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bucket_of(rate: float | None, cuts: tuple[float, float]) -> Bucket | None:
    if rate is None:
        return None
    return "high" if rate >= cuts[0] else "medium" if rate >= cuts[1] else "low"


def _config(ctx: Context) -> SellerBucketsConfig:
    return ctx.project.config.dashboards.seller_buckets


def _bucketed(ctx: Context, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    config = _config(ctx)
    rated = [r[config.measure] for r in rows if r[config.measure] is not None]
    cuts = cut_points(rated, config)
    return [r | {"bucket": bucket_of(r[config.measure], cuts)} for r in rows]


# the seller table's rows and measures: what it asks for is what the chart lists
_PERFORMANCE_BY = ("seller_id", "seller", "seller_region")
_PERFORMANCE_MEASURES = (
    "orders",
    "items",
    "revenue",
    "returned_items",
    "refunds",
    "refund_amount",
    "return_rate",
    "refund_rate",
)


def seller_performance(ctx: Context) -> list[dict[str, Any]]:
    config = _config(ctx)
    ctx.meta["buckets"] = config.model_dump()
    rows = ctx.table(
        ITEMS,
        list(_PERFORMANCE_BY),
        list(_PERFORMANCE_MEASURES),
        region_of="seller",
    )
    return _bucketed(ctx, rows)


def seller_buckets_by_month(ctx: Context) -> list[dict[str, Any]]:
    """Per month, how many sellers are in each bucket by that month's rates."""
    config = _config(ctx)
    ctx.meta["buckets"] = config.model_dump()
    rows = ctx.table(
        ITEMS, ["month", "seller_id"], ["return_rate", "refund_rate"], region_of="seller"
    )
    by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_month[row["month"]].append(row)
    out = []
    for month in sorted(by_month):
        sizes = dict.fromkeys(BUCKETS, 0)
        for row in _bucketed(ctx, by_month[month]):
            if row["bucket"] is not None:
                sizes[row["bucket"]] += 1
        out += [{"month": month, "bucket": b, "sellers": sizes[b]} for b in BUCKETS]
    return out


def seller_returns_by_reason(ctx: Context) -> list[dict[str, Any]]:
    """One seller's (the ``seller`` filter) returns by reason, by when they were requested."""
    return ctx.table(
        RETURNS,
        ["reason"],
        ["return_requests", "return_refunds", "return_refund_amount"],
        region_of="seller",
    )


CHARTS = (
    Chart(
        "seller_performance",
        "sellers",
        "Sellers: orders, returns and refunds",
        (*_PERFORMANCE_BY, *_PERFORMANCE_MEASURES, "bucket"),
        seller_performance,
    ),
    Chart(
        "seller_buckets_by_month",
        "sellers",
        "Sellers per bucket, month by month",
        ("month", "bucket", "sellers"),
        seller_buckets_by_month,
    ),
    Chart(
        "seller_returns_by_reason",
        "sellers",
        "One seller's returns by reason",
        ("reason", "return_requests", "return_refunds", "return_refund_amount"),
        seller_returns_by_reason,
        needs=("seller",),
    ),
)
