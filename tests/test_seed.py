"""`riverbed shop seed`: the schema DESIGN.md lists, deterministic history with a real shape."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest

from conftest import Database, external_config, run_cli
from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed, table_checksums
from riverbed.shop.summary import category_trends, seller_return_tiers

END = date(2026, 6, 1)
SMALL = HistorySpec(
    customers=400, sellers=40, products=150, orders=3_000, months=4, seed=7, end=END
)


def test_same_seed_gives_identical_tables_and_another_seed_does_not(pg_server) -> None:
    import uuid

    names = [f"seed_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        for name in names:
            admin.execute(f"create database {name}")
    try:
        sums = []
        for name, spec_seed in zip(names, (7, 7, 8)):
            spec = HistorySpec(**{**SMALL.__dict__, "seed": spec_seed})
            with psycopg.connect(pg_server.dsn(name)) as conn:
                seed(conn, spec)
                sums.append(table_checksums(conn))
        assert sums[0] == sums[1]
        assert all(sums[0][t] != sums[2][t] for t in ("customers", "orders", "order_items"))
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            for name in names:
                admin.execute(f"drop database {name} with (force)")


def test_schema_matches_the_design(database: Database) -> None:
    with database.connect() as conn:
        seed(conn, SMALL)
        columns = {
            (t, c)
            for t, c in conn.execute(
                "select table_name, column_name from information_schema.columns where table_schema = 'shop'"
            )
        }
        expected = {
            "customers": "customer_id email full_name phone city country region created_at updated_at",
            "sellers": "seller_id name city country region created_at updated_at",
            "products": "product_id seller_id name category price description is_active created_at updated_at",
            "orders": "order_id customer_id status ordered_at updated_at",
            "order_items": "order_item_id order_id product_id seller_id quantity unit_price created_at",
            "returns": "return_id order_item_id reason status refund_amount requested_at updated_at",
        }
        for table, names in expected.items():
            for column in names.split():
                assert (table, column) in columns, f"shop.{table}.{column} is missing"
        types = dict(
            conn.execute(
                "select table_name || '.' || column_name, format_type(a.atttypid, a.atttypmod)"
                " from information_schema.columns c join pg_attribute a"
                " on a.attrelid = ('shop.' || c.table_name)::regclass and a.attname = c.column_name"
                " where c.table_schema = 'shop'"
            ).fetchall()
        )
        assert types["products.price"] == "numeric(12,2)"
        assert types["order_items.unit_price"] == "numeric(12,2)"
        assert types["returns.refund_amount"] == "numeric(12,2)"
        foreign = {
            r[0]
            for r in conn.execute(
                "select conrelid::regclass::text || '->' || confrelid::regclass::text from pg_constraint"
                " where contype = 'f' and connamespace = 'shop'::regnamespace"
            )
        }
        assert foreign == {
            "shop.products->shop.sellers",
            "shop.orders->shop.customers",
            "shop.order_items->shop.orders",
            "shop.order_items->shop.products",
            "shop.order_items->shop.sellers",
            "shop.returns->shop.order_items",
        }
        # updated_at is maintained by the database, not by whoever writes
        before = conn.execute("select updated_at from shop.orders where order_id = 1").fetchone()
        conn.commit()
        conn.execute("update shop.orders set status = 'cancelled' where order_id = 1")
        after = conn.execute("select updated_at from shop.orders where order_id = 1").fetchone()
        assert after[0] > before[0]
        # later inserts get fresh ids, past the seeded ones
        new = conn.execute(
            "insert into shop.customers (email, full_name) values ('a@b.c', 'A B') returning customer_id"
        ).fetchone()
        assert new[0] == SMALL.customers + 1


def test_history_has_a_shape_a_dashboard_can_show(database: Database) -> None:
    spec = HistorySpec(
        customers=3_000, sellers=200, products=1_200, orders=40_000, months=12, seed=3, end=END
    )
    with database.connect() as conn:
        seed(conn, spec)
        _, _, trends = category_trends(conn)
        changes = {t.category: t.change for t in trends}
        assert max(changes.values()) > 0.5, changes  # a clearly growing category
        assert min(changes.values()) < -0.5, changes  # and a clearly declining one
        assert any(-0.2 < c < 0.4 for c in changes.values())  # and steady ones between
        tiers = seller_return_tiers(conn)
        assert all(n >= 5 for n in tiers.values()), tiers  # sellers in every return tier
        # referential integrity of everything generated
        orphans = conn.execute("""
            select (select count(*) from shop.order_items i left join shop.orders o using (order_id) where o.order_id is null)
                 + (select count(*) from shop.returns r left join shop.order_items i using (order_item_id) where i.order_item_id is null)
                 + (select count(*) from shop.orders o left join shop.customers c using (customer_id) where c.customer_id is null)
        """).fetchone()
        assert orphans == (0,)
        # history ends before the end date and no order precedes its customer
        end = datetime(END.year, END.month, END.day, tzinfo=UTC)
        latest = conn.execute(
            "select max(ordered_at), max(requested_at) from shop.orders, shop.returns"
        ).fetchone()
        assert latest[0] < end and latest[1] < end
        early = conn.execute(
            "select count(*) from shop.orders o join shop.customers c using (customer_id) where o.ordered_at < c.created_at"
        ).fetchone()
        assert early == (0,)
        # customers differ in spending and frequency: the top decile orders far more than the median
        spread = conn.execute("""
            with per as (select customer_id, count(*) n from shop.orders group by 1)
            select percentile_cont(0.9) within group (order by n), percentile_cont(0.5) within group (order by n) from per
        """).fetchone()
        assert spread[0] >= 3 * spread[1], spread
        # regions differ in volume
        regions = [
            r[0]
            for r in conn.execute(
                "select count(*) from shop.orders o join shop.customers c using (customer_id) group by c.region order by 1"
            )
        ]
        assert len(regions) == 5 and regions[-1] > 5 * regions[0]
        # refunds never exceed what was paid for the item, and only refunded/approved ones have one
        bad = conn.execute("""
            select count(*) from shop.returns r join shop.order_items i using (order_item_id)
            where r.refund_amount > i.quantity * i.unit_price
               or (r.refund_amount is null) <> (r.status in ('requested', 'rejected'))
        """).fetchone()
        assert bad == (0,)


def test_seed_cli_refuses_to_seed_twice_and_resets_on_request(
    tmp_path: Path, database: Database
) -> None:
    config = str(external_config(tmp_path, database))
    args = (
        "shop",
        "seed",
        "--orders",
        "2000",
        "--customers",
        "300",
        "--products",
        "100",
        "--sellers",
        "20",
        "--months",
        "3",
        "--end-date",
        "2026-03-01",
        "-c",
        config,
    )
    first = run_cli(*args)
    assert first.code == 0, first.text
    assert "seeded" in first.out and "2,000 orders" in first.out and "rows/s" in first.out
    with database.connect() as conn:
        checksum = table_checksums(conn)
        conn.execute("update shop.customers set city = 'Atlantis' where customer_id = 1")
        conn.commit()

    second = run_cli(*args)
    assert second.code == 1
    assert "already seeded" in second.err and "--reset" in second.err
    with database.connect() as conn:  # nothing was touched
        assert conn.execute("select city from shop.customers where customer_id = 1").fetchone() == (
            "Atlantis",
        )

    third = run_cli(*args, "--reset")
    assert third.code == 0, third.text
    with database.connect() as conn:
        assert table_checksums(conn) == checksum


@pytest.mark.parametrize(
    "bad,message",
    [
        (("--orders", "-1"), "--orders"),
        (("--end-date", "yesterday"), "YYYY-MM-DD"),
    ],
)
def test_seed_cli_rejects_bad_options(
    tmp_path: Path, database: Database, bad: tuple[str, ...], message: str
) -> None:
    result = run_cli("shop", "seed", *bad, "-c", str(external_config(tmp_path, database)))
    assert result.code == 2 or result.code == 1
    assert message in result.text and "Traceback" not in result.text
