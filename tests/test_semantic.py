"""Issue 19 items 2 and 3: the dashboards' charts (riverbed.serve.semantic) count the source's
current truth.

One shop is seeded, captured by two projects (a DuckDB and a PostgreSQL warehouse), then given
live traffic (orders, status changes, returns requested, approved and refunded) and changes of
our own that the facts must not double count (order items updated and deleted, returns
refunded), captured and run again. Every chart number is then compared with a computation over
the SOURCE tables (schema shop), never over Riverbed's facts: revenue by the item's business
time (created_at, in UTC), categories and regions as the source has them now.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from psycopg.rows import dict_row
from test_e2e import SEED, cli, demo_project

from conftest import Database, _fresh_database
from riverbed.config import Project
from riverbed.config.loader import load_project
from riverbed.serve.semantic import chart_data
from riverbed.source.embedded import EmbeddedServer

# changes the facts must count once, with their latest values, or not at all
OWN_CHANGES = (
    "update shop.order_items set quantity = quantity + 3 where order_item_id in"
    " (select order_item_id from shop.order_items order by order_item_id limit 7)",
    "update shop.order_items set unit_price = unit_price + 1.25 where order_item_id in"
    " (select order_item_id from shop.order_items order by order_item_id desc limit 7)",
    "delete from shop.order_items where order_item_id in (select i.order_item_id"
    " from shop.order_items i where not exists (select 1 from shop.returns r"
    " where r.order_item_id = i.order_item_id) order by i.order_item_id limit 9 offset 20)",
    "update shop.returns set status = 'refunded', refund_amount = 1.00 where return_id in"
    " (select return_id from shop.returns where status in ('requested', 'approved')"
    " order by return_id limit 5)",
)
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
def source(pg_server: EmbeddedServer) -> Iterator[Database]:
    yield from _fresh_database(pg_server)


@pytest.fixture(scope="module")
def warehouse_db(pg_server: EmbeddedServer) -> Iterator[Database]:
    yield from _fresh_database(pg_server)


@pytest.fixture(scope="module")
def projects(
    source: Database, warehouse_db: Database, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Project]:
    home = tmp_path_factory.mktemp("semantic")
    both = {
        "duckdb": demo_project(home / "duck", source),
        "postgres": demo_project(home / "pg", source, warehouse_db),
    }
    cli(both["duckdb"], "shop", "seed", *SEED, "--months", "3", "--seed", "7", "-q")
    for config in both.values():
        cli(config, "capture", "--once", "-q")
        cli(config, "run", "--once", "-q")
    workload = ("--rate", "400", "--duration", "6", "--dirty-ratio", "0", "--large-every", "1000")
    cli(both["duckdb"], "shop", "run", *workload, "--seed", "3", "--json", "-q")
    with source.connect(autocommit=True) as conn:
        for statement in OWN_CHANGES:
            conn.execute(statement)
    for config in both.values():
        cli(config, "capture", "--once", "-q")
        cli(config, "run", "--once", "-q")
    return {name: load_project(config) for name, config in both.items()}


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
