"""A day range that cuts months (riverbed.serve.extracts.split): its whole months read from
a monthly dataset, the cut months' days from the per-day one, the parts summed again, the
same rows as the per-day dataset alone gives.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from sqlglot import exp

from riverbed.serve.extracts.datasets import (
    DATASETS,
    SALES,
    SALES_MONTHLY,
    SELLER_ORDERS,
    SELLER_ORDERS_MONTHLY,
)
from riverbed.serve.extracts.rollup import rollup
from riverbed.serve.semantic.filters import Filters, Window
from riverbed.serve.semantic.measures import ITEMS, build, conditions, in_window, up_to


def _query(filters: Filters, dimensions: tuple[str, ...] = ("month", "category")) -> exp.Select:
    order = [str(i + 1) for i in range(len(dimensions))]
    return build(
        ITEMS, dimensions, ["revenue", "units", "items"], conditions(ITEMS, filters), order=order
    )


def _read(select: exp.Expr) -> set[str]:
    found = rollup(select, DATASETS)
    assert found is not None
    return set(found[1])


def test_a_range_cutting_months_reads_whole_months_monthly_and_the_edge_days_daily() -> None:
    cut = Filters(date_from=date(2025, 1, 10), date_to=date(2025, 5, 20))
    assert _read(_query(cut)) == {SALES_MONTHLY.name, SALES.name}
    # as of a day: every month before it whole (no category: the smaller seller datasets)
    assert _read(build(ITEMS, ["month"], ["revenue"], [up_to(ITEMS, date(2025, 5, 7))])) == {
        SELLER_ORDERS_MONTHLY.name,
        SELLER_ORDERS.name,
    }
    whole = Filters(date_from=date(2025, 1, 1), date_to=date(2025, 5, 31))
    assert _read(_query(whole)) == {SALES.name}  # whole months: one dataset answers
    within = Filters(date_from=date(2025, 2, 3), date_to=date(2025, 2, 20))
    assert _read(_query(within)) == {SALES.name}  # no month whole: the days only
    windowed = build(
        ITEMS,
        ["category"],
        [("now", "revenue", in_window(ITEMS, Window(date(2025, 3, 1), date(2025, 3, 9))))],
        [up_to(ITEMS, date(2025, 3, 9))],
    )
    assert _read(windowed) == {SALES.name}  # a day condition inside the sum: not split


@pytest.mark.parametrize(
    "filters",
    [
        Filters(date_from=date(2025, 1, 10), date_to=date(2025, 5, 20)),
        Filters(date_from=date(2025, 1, 10)),
        Filters(date_to=date(2025, 4, 2), category="b", region="Europe"),
        Filters(date_from=date(2025, 2, 1), date_to=date(2025, 4, 15)),
    ],
)
def test_the_split_query_gives_the_rows_of_the_per_day_dataset(filters: Filters) -> None:
    extract = duckdb.connect()
    extract.execute(f"""
        CREATE TABLE {SALES.name} AS SELECT
          CAST(strftime(d, '%Y%m%d') AS INTEGER) AS date_key, year(d) AS year, month(d) AS month,
          p AS product_id, 'product ' || p AS product, ['a', 'b', 'c'][1 + p % 3] AS category,
          1 AS seller_id, 'seller' AS seller, 'Europe' AS seller_region,
          ['Europe', 'Asia'][1 + (p + day(d)) % 2] AS customer_region,
          CAST(p * 1.25 + day(d) AS DECIMAL(18, 2)) AS revenue, p + day(d) AS units, 1 AS items,
          0 AS returns, 0 AS returned_items, 0 AS refunds, 0 AS refunded_items,
          CAST(0 AS DECIMAL(18, 2)) AS refund_amount
        FROM range(DATE '2024-11-01', DATE '2025-07-01', INTERVAL 1 DAY) t(d), range(1, 6) q(p)
        WHERE (p + day(d)) % 4 <> 0
    """)
    extract.execute(f"CREATE TABLE {SALES_MONTHLY.name} AS {SALES_MONTHLY.derive()}")
    select = _query(filters)
    split = rollup(select, DATASETS)
    assert split is not None and SALES_MONTHLY.name in split[1]
    daily = rollup(select, [SALES])
    assert daily is not None
    rows = extract.sql(split[0].sql(dialect="duckdb")).fetchall()
    assert rows and rows == extract.sql(daily[0].sql(dialect="duckdb")).fetchall()
