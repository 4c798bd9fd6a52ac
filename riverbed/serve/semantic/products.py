"""Product trends: monthly revenue and units by category and by product, month-over-month
growth with a fair comparison of the partial current month, and the top growing and declining
categories and products. The drill from a category to its products is the ``category`` filter
on the product charts. Regions are the customers' (who bought).

Growth compares two windows of business days (filters.fair_windows): the as-of month's days
1..D and the previous month's days 1..D. The date filters do not narrow the growth charts'
windows (the as-of date places them; ``date_to`` is the as-of date when none is given); in
``monthly_growth`` they choose the months shown, each whole month compared with the whole month
before it, and the as-of month, partial, with the same days of the month before.
"""

from __future__ import annotations

import calendar
import dataclasses
from datetime import date
from decimal import Decimal
from typing import Any

from riverbed.serve.semantic.chart import Chart, Context
from riverbed.serve.semantic.filters import Window, fair_windows
from riverbed.serve.semantic.measures import ITEMS, build, conditions, in_window, number, up_to


def revenue_by_category(ctx: Context) -> list[dict[str, Any]]:
    return ctx.table(ITEMS, ["month", "category"], ["revenue", "units"])


def revenue_by_product(ctx: Context) -> list[dict[str, Any]]:
    return ctx.table(ITEMS, ["month", "category", "product_id", "product"], ["revenue", "units"])


def growth_pct(current: Decimal | int, previous: Decimal | int) -> float | None:
    """Growth from ``previous`` to ``current`` in percent; None from nothing."""
    if not previous:
        return None
    return float((Decimal(current) - Decimal(previous)) * 100 / Decimal(previous))


def _windows_meta(ctx: Context, current: Window, previous: Window) -> None:
    ctx.meta["current_window"] = current.as_dict()
    ctx.meta["previous_window"] = previous.as_dict()
    ctx.meta["partial_month"] = current.last.day < _month_days(current.last)


def _month_days(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _growth(ctx: Context, dimensions: list[str], label: str) -> list[dict[str, Any]]:
    """Revenue and units of each ``dimensions`` group in the two fair windows, growth
    descending (no previous revenue last); meta names the top movers by ``label``."""
    current, previous = fair_windows(ctx.as_of)
    _windows_meta(ctx, current, previous)
    undated = dataclasses.replace(ctx.filters, date_from=None, date_to=None)
    span = in_window(ITEMS, Window(previous.first, current.last))
    select = build(
        ITEMS,
        dimensions,
        [
            ("revenue", "revenue", in_window(ITEMS, current)),
            ("previous_revenue", "revenue", in_window(ITEMS, previous)),
            ("units", "units", in_window(ITEMS, current)),
            ("previous_units", "units", in_window(ITEMS, previous)),
        ],
        [*conditions(ITEMS, undated), span],
        order=[str(i + 1) for i in range(len(dimensions))],
    )
    rows = []
    for row in ctx.rows(select):
        shaped = {d: row[d] for d in dimensions}
        for name in ("revenue", "previous_revenue", "units", "previous_units"):
            shaped[name] = number(row[name], name.removeprefix("previous_"))
        shaped["growth_pct"] = growth_pct(shaped["revenue"], shaped["previous_revenue"])
        rows.append(shaped)
    rows.sort(key=lambda r: (r["growth_pct"] is None, -(r["growth_pct"] or 0)))
    ranked = [r for r in rows if r["growth_pct"] is not None]
    ctx.meta["top_growing"] = [r[label] for r in ranked if r["growth_pct"] > 0][:5]
    ctx.meta["top_declining"] = [r[label] for r in reversed(ranked) if r["growth_pct"] < 0][:5]
    return rows


def category_growth(ctx: Context) -> list[dict[str, Any]]:
    return _growth(ctx, ["category"], "category")


def product_growth(ctx: Context) -> list[dict[str, Any]]:
    return _growth(ctx, ["category", "product_id", "product"], "product_id")


def monthly_growth(ctx: Context) -> list[dict[str, Any]]:
    """Revenue per month up to the as-of date, each month's growth over the month before; the
    as-of month (partial when the as-of date is not its last day) against the same days."""
    current, previous = fair_windows(ctx.as_of)
    _windows_meta(ctx, current, previous)
    undated = dataclasses.replace(ctx.filters, date_from=None, date_to=None)
    months = ctx.table(
        ITEMS, ["month"], ["revenue", "units"], filters=undated, where=[up_to(ITEMS, ctx.as_of)]
    )
    same_days = build(
        ITEMS,
        [],
        [("previous_revenue", "revenue", in_window(ITEMS, previous))],
        [*conditions(ITEMS, undated), in_window(ITEMS, previous)],
    )
    fair_previous = number(ctx.rows(same_days)[0]["previous_revenue"], "revenue")
    shown_from = ctx.filters.date_from
    this_month = f"{current.first.year:04d}-{current.first.month:02d}"
    out, before = [], None
    for row in months:
        partial = row["month"] == this_month
        prev = fair_previous if partial else (before["revenue"] if before else None)
        if before is not None and not partial and not _follows(before["month"], row["month"]):
            prev = Decimal(0)  # a month with no sales between: growth from nothing
        before = row
        if shown_from and row["month"] < f"{shown_from.year:04d}-{shown_from.month:02d}":
            continue
        out.append(
            row
            | {
                "previous_revenue": prev,
                "growth_pct": growth_pct(row["revenue"], prev) if prev is not None else None,
                "partial": partial and bool(ctx.meta["partial_month"]),
            }
        )
    return out


def _follows(earlier: str, later: str) -> bool:
    year, month = (int(x) for x in earlier.split("-"))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return later == f"{year:04d}-{month:02d}"


CHARTS = (
    Chart(
        "revenue_by_category",
        "products",
        "Monthly revenue and units by category",
        ("month", "category", "revenue", "units"),
        revenue_by_category,
    ),
    Chart(
        "revenue_by_product",
        "products",
        "Monthly revenue and units by product",
        ("month", "category", "product_id", "product", "revenue", "units"),
        revenue_by_product,
    ),
    Chart(
        "monthly_growth",
        "products",
        "Month-over-month revenue growth",
        ("month", "revenue", "units", "previous_revenue", "growth_pct", "partial"),
        monthly_growth,
    ),
    Chart(
        "category_growth",
        "products",
        "Growth by category, same days of last month",
        ("category", "revenue", "previous_revenue", "units", "previous_units", "growth_pct"),
        category_growth,
    ),
    Chart(
        "product_growth",
        "products",
        "Growth by product, same days of last month",
        (
            "category",
            "product_id",
            "product",
            "revenue",
            "previous_revenue",
            "units",
            "previous_units",
            "growth_pct",
        ),
        product_growth,
    ),
)
