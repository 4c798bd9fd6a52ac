"""Issue 19 items 2 and 3: the dashboards' charts (riverbed.serve.semantic) count the source's
current truth.

One shop is seeded, captured by two projects (a DuckDB and a PostgreSQL warehouse), then given
live traffic and changes of our own that the facts must not double count, captured and run
again (tests/shop_support.py, built once per session: conftest's shop_history). Every chart number is then compared with a computation over
the SOURCE tables (schema shop), never over Riverbed's facts: revenue by the item's business
time (created_at, in UTC), categories and regions as the source has them now.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from psycopg.rows import dict_row

from conftest import Database
from riverbed.config import Project
from riverbed.serve.semantic import CHARTS, ChartError, FilterError, chart_data
from riverbed.serve.semantic.filters import fair_windows
from riverbed.state import open_state

# the source's live order items with what the charts group them by, as the source says now
ITEMS = """
select i.order_item_id, i.order_id, i.quantity, i.unit_price, i.quantity * i.unit_price as amount,
  (i.created_at at time zone 'UTC')::date as day, o.customer_id, p.product_id, p.name as product,
  p.category, s.seller_id, s.name as seller, s.region as seller_region,
  c.region as customer_region
from shop.order_items i join shop.orders o on o.order_id = i.order_id
join shop.products p on p.product_id = i.product_id join shop.sellers s on s.seller_id = i.seller_id
join shop.customers c on c.customer_id = o.customer_id
"""
RETURNS = """
select r.return_id, r.order_item_id, r.reason, r.status, r.refund_amount,
  (r.requested_at at time zone 'UTC')::date as day
from shop.returns r
"""


@pytest.fixture(scope="module")
def source(shop_source: Database) -> Database:
    return shop_source


@pytest.fixture(scope="module")
def projects(shop_history: dict[str, Project]) -> dict[str, Project]:
    return shop_history


@pytest.fixture(scope="module")
def shop(source: Database) -> dict[str, list[dict[str, Any]]]:
    with source.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = {
            name: cur.execute(sql).fetchall()
            for name, sql in (("items", ITEMS), ("returns", RETURNS))
        }
        rows["customers"] = cur.execute("select * from shop.customers").fetchall()
    return rows


@pytest.fixture(scope="module")
def duck(projects: dict[str, Project]) -> Project:
    return projects["duckdb"]


def month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def rows_of(
    project: Project, name: str, principal: str = "admin", **filters: Any
) -> list[dict[str, Any]]:
    return chart_data(project, principal, name, filters).rows


def test_the_history_holds_what_the_current_views_must_resolve(duck: Project) -> None:
    """Updates and deletes of order items, and refunds, reached the facts: summing the history
    would be wrong, so the charts' agreement below is the current views' doing."""
    ops = Counter((r["_op"]) for r in _warehouse(duck, "select _op from fact_order_items"))
    assert ops["U"] >= 7 and ops["D"] >= 9, ops


def _warehouse(project: Project, sql: str) -> list[dict[str, Any]]:
    from riverbed.serve.queries import query_as

    return [r for b in query_as(project, "admin", sql, path="cli") for r in b.to_pylist()]


def revenue_by(
    items: list[dict[str, Any]], *keys: str
) -> dict[tuple[Any, ...], tuple[Decimal, int]]:
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for item in items:
        key = tuple(month(item["day"]) if k == "month" else item[k] for k in keys)
        sums[key][0] += item["amount"]
        sums[key][1] += item["quantity"]
    return {k: (v[0], v[1]) for k, v in sums.items()}


def test_monthly_revenue_and_units_by_category_and_product_equal_the_source(
    duck: Project, shop: dict[str, list[dict[str, Any]]]
) -> None:
    got = {
        (r["month"], r["category"]): (r["revenue"], r["units"])
        for r in rows_of(duck, "revenue_by_category")
    }
    expected = revenue_by(shop["items"], "month", "category")
    assert len({m for m, _ in expected}) >= 3
    assert got == expected
    # the drill: one category's products, over a date range
    category = shop["items"][0]["category"]
    first, last = date.today() - timedelta(days=40), date.today()
    drilled = rows_of(
        duck,
        "revenue_by_product",
        category=category,
        date_from=first.isoformat(),
        date_to=last.isoformat(),
    )
    inside = [i for i in shop["items"] if i["category"] == category and first <= i["day"] <= last]
    assert {(r["month"], r["product_id"]): (r["revenue"], r["units"]) for r in drilled} == (
        revenue_by(inside, "month", "product_id")
    )
    assert {r["category"] for r in drilled} == {category}


def window_revenue(
    items: list[dict[str, Any]], first: date, last: date, key: str
) -> dict[Any, Decimal]:
    sums: dict[Any, Decimal] = defaultdict(Decimal)
    for item in items:
        if first <= item["day"] <= last:
            sums[item[key]] += item["amount"]
    return dict(sums)


@pytest.mark.parametrize("as_of", [None, "month_end"])
def test_growth_compares_a_partial_month_with_the_same_days_of_the_month_before(
    duck: Project, shop: dict[str, list[dict[str, Any]]], as_of: str | None
) -> None:
    today = datetime.now(UTC).date()
    # today (a partial month), or the last day of last month (31 days against 30, 28 ...)
    day = today if as_of is None else today.replace(day=1) - timedelta(days=1)
    current, previous = fair_windows(day)
    assert previous.last.day == min(day.day, previous.last.day)
    assert (current.first.day, previous.first.day) == (1, 1)
    data = chart_data(duck, "admin", "category_growth", as_of=day)
    assert data.meta["current_window"] == {"from": current.first.isoformat(), "to": day.isoformat()}
    assert data.meta["previous_window"]["to"] == previous.last.isoformat()
    now = window_revenue(shop["items"], current.first, current.last, "category")
    before = window_revenue(shop["items"], previous.first, previous.last, "category")
    got = {r["category"]: (r["revenue"], r["previous_revenue"]) for r in data.rows}
    assert got == {c: (now.get(c, Decimal(0)), before.get(c, Decimal(0))) for c in {*now, *before}}
    for row in data.rows:
        if row["previous_revenue"]:
            expected = (row["revenue"] - row["previous_revenue"]) * 100 / row["previous_revenue"]
            assert row["growth_pct"] == pytest.approx(float(expected))
    growths = [r["growth_pct"] for r in data.rows if r["growth_pct"] is not None]
    assert growths == sorted(growths, reverse=True)
    assert set(data.meta["top_growing"]) <= {r["category"] for r in data.rows}
    # the month-over-month series: the as-of month against the same days, not the whole month
    series = {r["month"]: r for r in rows_of_as_of(duck, "monthly_growth", day)}
    this = series[month(day)]
    assert this["revenue"] == sum(now.values(), Decimal(0))
    assert this["previous_revenue"] == sum(before.values(), Decimal(0))
    assert this["partial"] is ((day + timedelta(days=1)).month == day.month)
    whole = revenue_by(shop["items"], "month")
    last_month = month(previous.first)
    assert series[last_month]["revenue"] == whole[(last_month,)][0]
    if as_of is None and day.day < 28:
        assert this["previous_revenue"] != whole[(last_month,)][0]


def rows_of_as_of(project: Project, name: str, day: date) -> list[dict[str, Any]]:
    return chart_data(project, "admin", name, as_of=day).rows


def source_sellers(shop: dict[str, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    returns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in shop["returns"]:
        returns[r["order_item_id"]].append(r)
    sellers: dict[int, dict[str, Any]] = {}
    for item in shop["items"]:
        s = sellers.setdefault(
            item["seller_id"],
            {
                "orders": set(),
                "items": 0,
                "returned": 0,
                "refunds": 0,
                "refunded": 0,
                "refund_amount": Decimal(0),
            },
        )
        s["orders"].add(item["order_id"])
        s["items"] += 1
        mine = returns[item["order_item_id"]]
        refunded = [r for r in mine if r["status"] == "refunded"]
        s["returned"] += bool(mine)
        s["refunds"] += len(refunded)
        s["refunded"] += bool(refunded)
        s["refund_amount"] += sum((r["refund_amount"] for r in refunded), Decimal(0))
    return sellers


def test_seller_rates_buckets_and_the_drill_to_returns_by_reason_equal_the_source(
    duck: Project, shop: dict[str, list[dict[str, Any]]]
) -> None:
    expected = source_sellers(shop)
    rows = rows_of(duck, "seller_performance")
    assert {r["seller_id"] for r in rows} == set(expected)
    for row in rows:
        s = expected[row["seller_id"]]
        assert (
            row["orders"],
            row["items"],
            row["returned_items"],
            row["refunds"],
            row["refund_amount"],
        ) == (len(s["orders"]), s["items"], s["returned"], s["refunds"], s["refund_amount"])
        rate = s["returned"] / s["items"]
        assert row["return_rate"] == pytest.approx(rate)
        assert row["refund_rate"] == pytest.approx(s["refunded"] / s["items"])
        assert row["bucket"] == ("high" if rate >= 0.15 else "medium" if rate >= 0.05 else "low")
    assert {r["bucket"] for r in rows} == {"high", "medium", "low"}, "the seed's three tiers"
    sizes = rows_of(duck, "seller_buckets_by_month")
    months = {r["month"] for r in sizes}
    assert len(months) >= 3 and len(sizes) == 3 * len(months)
    per_month = {m: sum(r["sellers"] for r in sizes if r["month"] == m) for m in months}
    active = defaultdict(set)
    for item in shop["items"]:
        active[month(item["day"])].add(item["seller_id"])
    assert per_month == {m: len(v) for m, v in active.items()}
    # the drill: the seller with the most returns, by reason, by when they were requested
    seller = max(expected, key=lambda k: expected[k]["returned"])
    items_of = {i["order_item_id"] for i in shop["items"] if i["seller_id"] == seller}
    by_reason: dict[str, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    for r in shop["returns"]:
        if r["order_item_id"] in items_of:
            by_reason[r["reason"]][0] += 1
            if r["status"] == "refunded":
                by_reason[r["reason"]][1] += 1
                by_reason[r["reason"]][2] += r["refund_amount"]
    drilled = rows_of(duck, "seller_returns_by_reason", seller=str(seller))
    assert {
        r["reason"]: [r["return_requests"], r["return_refunds"], r["return_refund_amount"]]
        for r in drilled
    } == dict(by_reason)
    europe = rows_of(duck, "seller_performance", region="Europe")
    assert europe and {r["seller_region"] for r in europe} == {"Europe"}


def per_customer(shop: dict[str, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    returns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in shop["returns"]:
        returns[r["order_item_id"]].append(r)
    out: dict[int, dict[str, Any]] = {}
    for item in shop["items"]:
        c = out.setdefault(
            item["customer_id"],
            {
                "orders": set(),
                "spent": Decimal(0),
                "returns": 0,
                "refunds": 0,
                "refund_amount": Decimal(0),
                "months": set(),
            },
        )
        c["orders"].add(item["order_id"])
        c["spent"] += item["amount"]
        c["months"].add(item["day"].year * 12 + item["day"].month - 1)
        for r in returns[item["order_item_id"]]:
            c["returns"] += 1
            if r["status"] == "refunded":
                c["refunds"] += 1
                c["refund_amount"] += r["refund_amount"]
    return out


def test_consumer_statistics_equal_the_source(
    duck: Project, shop: dict[str, list[dict[str, Any]]]
) -> None:
    customers = per_customer(shop)
    edges = [Decimal(e) for e in (50, 100, 250, 500, 1000)]
    buckets = Counter(sum(c["spent"] >= e for e in edges) for c in customers.values())
    spending = rows_of(duck, "spending_distribution")
    assert [r["customers"] for r in spending] == [buckets[i] for i in range(len(edges) + 1)]
    assert sum((r["spent"] for r in spending), Decimal(0)) == sum(
        (c["spent"] for c in customers.values()), Decimal(0)
    )
    counts = Counter(len(c["orders"]) for c in customers.values())
    assert {r["orders"]: r["customers"] for r in rows_of(duck, "transaction_counts")} == counts
    refunds = rows_of(duck, "customer_refunds")
    assert {
        r["customer_id"]: (
            len(customers[r["customer_id"]]["orders"]),
            r["revenue"],
            r["returns"],
            r["refunds"],
            r["refund_amount"],
        )
        for r in refunds
    } == {
        k: (len(c["orders"]), c["spent"], c["returns"], c["refunds"], c["refund_amount"])
        for k, c in customers.items()
    }
    assert [r["orders"] for r in refunds] == [
        len(customers[r["customer_id"]]["orders"]) for r in refunds
    ]
    new, returning = Counter(), Counter()
    cohorts: Counter[tuple[int, int]] = Counter()
    for c in customers.values():
        first = min(c["months"])
        for m in c["months"]:
            (new if m == first else returning)[m] += 1
            cohorts[first, m - first] += 1
    label = lambda i: f"{i // 12:04d}-{i % 12 + 1:02d}"  # noqa: E731
    assert {
        r["month"]: (r["new_customers"], r["returning_customers"])
        for r in rows_of(duck, "new_vs_returning")
    } == {label(m): (new[m], returning[m]) for m in {*new, *returning}}
    retention = rows_of(duck, "cohort_retention")
    assert {(r["cohort"], r["months_since"]): r["customers"] for r in retention} == {
        (label(f), k): n for (f, k), n in cohorts.items()
    }
    assert all(r["retention"] == pytest.approx(1.0) for r in retention if r["months_since"] == 0)


def test_the_eu_analyst_sees_eu_customers_only_and_no_personal_value_in_clear(
    duck: Project, shop: dict[str, list[dict[str, Any]]]
) -> None:
    eu_items = [i for i in shop["items"] if i["customer_region"] == "Europe"]
    assert eu_items and len(eu_items) < len(shop["items"])
    got = {
        (r["month"], r["category"]): (r["revenue"], r["units"])
        for r in rows_of(duck, "revenue_by_category", "eu_analyst")
    }
    assert got == revenue_by(eu_items, "month", "category")
    refunds = chart_data(duck, "eu_analyst", "customer_refunds")
    assert refunds.rows and {r["customer_region"] for r in refunds.rows} == {"Europe"}
    eu_sellers = rows_of(duck, "seller_performance", "eu_analyst")
    assert sum(r["items"] for r in eu_sellers) == len(eu_items)
    shown = json.dumps(
        [
            chart_data(duck, "eu_analyst", name).as_dict()
            for name in ("customer_refunds", "spending_distribution", "new_vs_returning")
        ],
        default=str,
    )
    personal = [
        c[k]
        for c in shop["customers"]
        for k in ("email", "full_name", "phone")
        if c["region"] == "Europe" and c[k]
    ]
    assert personal and not [v for v in personal if v in shown]
    # each chart's queries were audited as the reader, by the way they came in
    before = time.time()
    chart_data(duck, "eu_analyst", "seller_performance", path="web")
    store = open_state(duck)
    try:
        records = store.audit.records(principal="eu_analyst", since=before)
    finally:
        store.close()
    assert records and {(r.path, r.allowed) for r in records} == {("web", True)}
    assert {t for r in records for t in r.tables} == {"extract_seller_orders_monthly"}


def test_bad_filters_and_unknown_charts_are_clear_errors_and_values_stay_literals(
    duck: Project,
) -> None:
    mistakes = {
        "filter date_from = '2026-13-45': not a date; use YYYY-MM-DD": {"date_from": "2026-13-45"},
        "unknown filter 'colour'": {"colour": "red"},
        "filter seller = '1; drop table x': not an id": {"seller": "1; drop table x"},
        "filter date_from 2026-05-02 is after date_to 2026-05-01": {
            "date_from": "2026-05-02",
            "date_to": "2026-05-01",
        },
        "filter category = 3: must be text": {"category": 3},
        "filter region: at most 200 printable characters": {"region": "x" * 300},
    }
    for message, filters in mistakes.items():
        with pytest.raises(FilterError, match="^" + message.replace("(", r"\(")[:30]) as caught:
            chart_data(duck, "admin", "revenue_by_category", filters)
        assert message in str(caught.value)
    with pytest.raises(ChartError, match="no chart 'pie'; charts: revenue_by_category"):
        chart_data(duck, "admin", "pie")
    with pytest.raises(ChartError, match="needs the filter seller"):
        chart_data(duck, "admin", "seller_returns_by_reason")
    for hostile in ("x' OR '1'='1", "toys'); DROP TABLE dim_date; --"):
        assert rows_of(duck, "revenue_by_category", category=hostile) == []
    assert rows_of(duck, "revenue_by_category")  # nothing was dropped
    assert set(CHARTS) >= {"revenue_by_category", "seller_performance", "cohort_retention"}


def test_a_postgresql_warehouse_gives_the_same_numbers(
    projects: dict[str, Project], shop: dict[str, list[dict[str, Any]]]
) -> None:
    pg, duck = projects["postgres"], projects["duckdb"]
    got = {
        (r["month"], r["category"]): (r["revenue"], r["units"])
        for r in rows_of(pg, "revenue_by_category")
    }
    assert got == revenue_by(shop["items"], "month", "category")
    # every chart's SQL, generated for PostgreSQL, answers as DuckDB's does, governed alike
    seller = rows_of(duck, "seller_performance")[0]["seller_id"]
    for name in CHARTS:
        filters = {"seller": seller} if name == "seller_returns_by_reason" else {}
        theirs = chart_data(pg, "eu_analyst", name, filters)
        assert theirs.rows == chart_data(duck, "eu_analyst", name, filters).rows, name


def test_pipeline_health_comes_from_the_state_store(duck: Project) -> None:
    from riverbed.serve.semantic import health

    runs = health.recent_runs(duck)
    assert len(runs) >= 2 and {r["status"] for r in runs} == {"succeeded"}
    assert runs[0]["started_at"] >= runs[-1]["started_at"]  # newest first
    timeline = health.run_timeline(duck, runs[0]["run_id"][-8:])
    assert timeline["run"]["run_id"] == runs[0]["run_id"]
    assert {"transform", "facts"} <= {e["state"] for e in timeline["events"]}
    quality = health.quality_over_time(duck, "customers")
    assert quality and {"not_null(email)"} <= {q["rule"] for q in quality}
    assert all(q["checked"] >= q["failed"] >= 0 and "rows_quarantined" in q for q in quality)
    assert [q["at"] for q in quality] == sorted(q["at"] for q in quality)
    fresh = health.freshness(duck)
    assert fresh["last_success_at"] and 0 <= fresh["seconds_ago"] < 3600
    status = health.pipeline_status(duck)
    assert status["capture"]["slot"] and status["capture"]["lag_bytes"] is not None
    assert {a["alarm"] for a in health.alarm_states(duck)} >= {"run_failed"}
    assert isinstance(health.capture_lag_series(duck), list)


@pytest.mark.parametrize(
    "as_of,current,previous",
    [
        ("2026-03-15", ("2026-03-01", "2026-03-15"), ("2026-02-01", "2026-02-15")),
        ("2026-03-31", ("2026-03-01", "2026-03-31"), ("2026-02-01", "2026-02-28")),
        ("2024-03-30", ("2024-03-01", "2024-03-30"), ("2024-02-01", "2024-02-29")),
        ("2026-01-10", ("2026-01-01", "2026-01-10"), ("2025-12-01", "2025-12-10")),
    ],
)
def test_fair_windows_take_the_same_days_cut_to_the_shorter_month(
    as_of: str, current: tuple[str, str], previous: tuple[str, str]
) -> None:
    now, before = fair_windows(date.fromisoformat(as_of))
    assert (now.as_dict(), before.as_dict()) == (
        {"from": current[0], "to": current[1]},
        {"from": previous[0], "to": previous[1]},
    )


def test_seller_buckets_by_thresholds_or_quantiles() -> None:
    from riverbed.config.dashboards import SellerBucketsConfig
    from riverbed.serve.semantic.sellers import bucket_of, cut_points

    rates = [0.01, 0.02, 0.03, 0.08, 0.09, 0.3]
    fixed = cut_points(rates, SellerBucketsConfig())
    assert [bucket_of(r, fixed) for r in (0.3, 0.15, 0.08, 0.05, 0.01)] == [
        "high",
        "high",
        "medium",
        "medium",
        "low",
    ]
    by_rank = cut_points(rates, SellerBucketsConfig(method="quantiles", high=0.8, medium=0.5))
    # the 80th percentile is 0.09 (rank 4 of 0..5), the median 0.055
    assert by_rank == pytest.approx((0.09, 0.055))
    assert [bucket_of(r, by_rank) for r in rates] == ["low"] * 3 + ["medium"] + ["high"] * 2
    assert bucket_of(None, fixed) is None


def test_a_measure_is_counted_over_its_own_grain_only() -> None:
    from riverbed.serve.semantic.measures import ITEMS, build

    with pytest.raises(ValueError, match="measure return_requests counts returns, not items"):
        build(ITEMS, ["month"], ["return_requests"])


def test_a_table_shapes_live_batches_typed_each_by_its_own_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PostgreSQL warehouse types each batch by its values (a batch of NULLs is of type
    null): the chart's table still comes out whole, money as Decimal, counts as int."""
    import pyarrow as pa
    from sqlglot import exp

    from riverbed.serve.semantic import chart
    from riverbed.serve.semantic.filters import Filters
    from riverbed.serve.semantic.measures import ITEMS

    batches = [
        pa.RecordBatch.from_pydict({"month": [202401], "revenue": [None], "units": [None]}),
        pa.RecordBatch.from_pydict(
            {"month": [202402], "revenue": [Decimal("2.50")], "units": [Decimal(3)]}
        ),
    ]
    monkeypatch.setattr(chart, "query_as", lambda *_, **__: iter(batches))
    warehouse = type("W", (), {"engine": "postgres"})
    project: Any = type("P", (), {"config": type("C", (), {"warehouse": warehouse})})()
    ctx = chart.Context(project, "admin", Filters(), date(2024, 3, 1), extracts=False)
    monkeypatch.setattr(chart, "build", lambda *_, **__: exp.select("1"))
    monkeypatch.setattr(chart, "conditions", lambda *_, **__: [])
    rows = ctx.table(ITEMS, ["month"], ["revenue", "units"])
    assert rows == [
        {"month": "2024-01", "revenue": Decimal(0), "units": 0},
        {"month": "2024-02", "revenue": Decimal("2.50"), "units": 3},
    ]
    assert [type(r["units"]) for r in rows] == [int, int]
