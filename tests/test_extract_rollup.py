"""Distinct orders from the extract (riverbed.serve.extracts.rollup): a dataset's per-cell
``orders`` is summed only where no order can fall in two of the cells summed (every
item-level column grouped by or pinned, and no order split over days), a count distinct of a
column a dataset holds is counted over its cells; and a chart's row ``limit`` is checked.
The numbers themselves are compared with the source in tests/test_extracts.py."""

from __future__ import annotations

from datetime import date

import pytest
from sqlglot import exp

from riverbed.serve.extracts.datasets import (
    CUSTOMER_ORDERS,
    CUSTOMER_ORDERS_MONTHLY,
    CUSTOMER_TOTALS,
    DATASETS,
    SELLER_CATEGORY_ORDERS,
    SELLER_ORDERS,
    SELLER_ORDERS_MONTHLY,
    Dataset,
)
from riverbed.serve.extracts.partial import local_cells
from riverbed.serve.extracts.rollup import rollup
from riverbed.serve.semantic.chart import ChartError
from riverbed.serve.semantic.charts import MAX_LIMIT, parse_limit
from riverbed.serve.semantic.filters import Filters, fair_windows
from riverbed.serve.semantic.measures import ITEMS, build, conditions, dimension, in_window

SELLER_TABLE = (["seller_id", "seller", "seller_region"], ["orders", "items", "refund_amount"])


def _seller_table(filters: Filters) -> object:
    by, measures = SELLER_TABLE
    return build(ITEMS, by, measures, conditions(ITEMS, filters, "seller"))


def _read(select: object, datasets: tuple[Dataset, ...] = DATASETS, **options: bool) -> str:
    answered = rollup(select, datasets, **options)  # type: ignore[arg-type]
    return "live" if answered is None else answered[1][0]


def test_a_sellers_orders_are_summed_over_days_and_customer_regions_only() -> None:
    answered = rollup(_seller_table(Filters()), DATASETS)
    assert answered is not None
    sql = answered[0].sql("duckdb")
    assert answered[1] == ["extract_seller_orders_monthly"] and "SUM(x.orders)" in sql
    # a day-level date: the daily dataset; the seller's region pinned: still whole sellers
    assert _read(_seller_table(Filters(date_from=date(2026, 1, 3)))) == "extract_seller_orders"
    assert _read(_seller_table(Filters(region="Europe"))) == "extract_seller_orders_monthly"
    assert _read(_seller_table(Filters(seller=3))) == "extract_seller_orders_monthly"


def test_an_item_level_column_neither_grouped_nor_pinned_refuses_the_sum() -> None:
    # by category: an order of two categories is in two cells of one seller
    assert _read(_seller_table(Filters()), (SELLER_CATEGORY_ORDERS,)) == "live"
    pinned = Filters(category="toys")
    assert _read(_seller_table(pinned), (SELLER_CATEGORY_ORDERS,)) == SELLER_CATEGORY_ORDERS.name
    assert _read(_seller_table(pinned)) == "extract_seller_category_orders_monthly"
    # a seller's orders per category: grouped, so summed
    by_category = build(ITEMS, ["seller_id", "category"], ["orders"])
    assert _read(by_category, (SELLER_CATEGORY_ORDERS,)) == SELLER_CATEGORY_ORDERS.name
    # a range is not a pin; a product no seller dataset holds: live
    ranged = build(ITEMS, ["seller_id"], ["orders"], [dimension("category") > exp.convert("m")])
    assert _read(ranged, (SELLER_CATEGORY_ORDERS,)) == "live"
    assert _read(_seller_table(Filters(product=5))) == "live"
    # every customer's orders by category: summed over days and customers, order-level both
    assert _read(build(ITEMS, ["category"], ["orders"])) == "extract_customers"


def test_orders_split_over_days_refuse_every_sum_of_orders_not_the_other_measures() -> None:
    assert _read(_seller_table(Filters()), sum_orders=False) == "live"
    per_customer = build(ITEMS, ["customer_id"], ["orders"])
    assert _read(per_customer) == "extract_customer_totals"
    assert _read(per_customer, sum_orders=False) == "live"
    revenue = build(ITEMS, ["seller_id"], ["revenue", "items"])
    assert _read(revenue, sum_orders=False) == "extract_seller_orders_monthly"
    # customers counted distinct: the dataset's own column, however cells split them
    customers = build(ITEMS, ["category"], ["customers"])
    answered = rollup(customers, DATASETS, sum_orders=False)
    assert answered is not None and answered[1] == ["extract_customers"]
    assert "COUNT(DISTINCT x.customer_id)" in answered[0].sql("duckdb")


def test_a_customers_orders_and_refunds_over_all_time_are_a_row_per_customer() -> None:
    """customer_refunds' counting: with no date or category condition from the totals (a
    row per customer, distinct orders summed over a customer's months); a date range from
    the day x customer cells; a category from the per-category cells, the category pinned."""
    measures = ["orders", "revenue", "returns", "refunds", "refund_amount"]

    def read(filters: Filters) -> list[str]:
        select = build(
            ITEMS, ["customer_id", "customer_region"], measures, conditions(ITEMS, filters)
        )
        answered = rollup(select, DATASETS)
        assert answered is not None, filters
        return answered[1]

    assert read(Filters()) == read(Filters(region="Europe")) == ["extract_customer_totals"]
    # grouped by every column of the totals: a group is a cell, read as it is
    every = build(ITEMS, ["customer_id", "customer_region"], measures)
    answered = rollup(every, DATASETS)
    assert answered is not None
    sql = answered[0].sql("duckdb")
    assert "GROUP BY" not in sql and "SUM(" not in sql and "x.refund_amount AS" in sql, sql
    answered = rollup(build(ITEMS, ["customer_id"], measures), DATASETS)
    assert answered is not None and "SUM(x.orders)" in answered[0].sql("duckdb")
    for dated in (Filters(date_from=date(2026, 1, 3)), Filters(date_to=date(2026, 4, 30))):
        assert read(dated) == ["extract_customer_orders"]
    assert read(Filters(category="toys")) == ["extract_customers"]
    # an order has one customer: the totals may drop the months from the orders they sum
    assert CUSTOMER_TOTALS.rollup_of is CUSTOMER_ORDERS_MONTHLY
    assert "orders" in CUSTOMER_TOTALS.measures and CUSTOMER_TOTALS.splits_orders == ()


def test_distinct_orders_in_a_comparison_window_are_summed_under_the_window() -> None:
    current, previous = fair_windows(date(2026, 3, 10))
    select = build(
        ITEMS,
        ["seller_id", "seller", "seller_region"],
        [
            ("now", "orders", in_window(ITEMS, current)),
            ("then", "orders", in_window(ITEMS, previous)),
        ],
    )
    answered = rollup(select, DATASETS)
    assert answered is not None and answered[1] == ["extract_seller_orders"]
    sql = answered[0].sql("duckdb")
    assert "SUM(CASE WHEN x.date_key BETWEEN 20260301 AND 20260310 THEN x.orders END)" in sql


def test_a_rollup_of_distinct_orders_may_drop_order_level_columns_only() -> None:
    monthly = [c for c in CUSTOMER_ORDERS.columns if c[0] not in ("date_key", "day")]
    Dataset("ok", ITEMS, tuple(monthly), ("orders",), rollup_of=CUSTOMER_ORDERS)
    without_category = [c for c in SELLER_CATEGORY_ORDERS.columns if c[0] != "category"]
    with pytest.raises(ValueError, match=r"sums \['orders'\] over \['category'\]"):
        Dataset(
            "bad", ITEMS, tuple(without_category), ("orders",), rollup_of=SELLER_CATEGORY_ORDERS
        )
    assert SELLER_ORDERS.splits_orders == ("seller_id", "seller", "seller_region")
    assert CUSTOMER_ORDERS.splits_orders == ()
    # a refresh's cells: distinct orders counted per cell from the grain rows, never summed;
    # a coarser cell made of finer ones (a rollup) sums them
    assert "COUNT(DISTINCT orders) AS orders" in local_cells(SELLER_ORDERS, "rows", grain=True)
    assert "SUM(orders) AS orders" in local_cells(SELLER_ORDERS_MONTHLY, "extract_seller_orders")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0", "limit = 0: use 1 .. 100000 rows"),
        (str(MAX_LIMIT + 1), "limit = 100001: use 1 .. 100000 rows"),
        ("ten", "limit = 'ten': not a whole number of rows"),
        ("-3", "limit = '-3': not a whole number"),
        ("1e3", "limit = '1e3': not a whole number"),
        (True, "not a whole number"),
    ],
)
def test_a_limit_is_a_whole_number_of_rows(given: object, message: str) -> None:
    with pytest.raises(ChartError, match=message.replace("(", r"\(")[:40]):
        parse_limit(given)  # type: ignore[arg-type]


def test_a_limit_given_is_that_many_rows() -> None:
    assert parse_limit(None) is None and parse_limit("") is None
    assert parse_limit("100") == 100 and parse_limit(7) == 7
