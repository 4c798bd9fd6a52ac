"""`riverbed shop run`: realistic live traffic, dirty rows on request, big and TOAST-sized changes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import Database, external_config, run_cli, start_cli
from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed
from riverbed.shop.workload import LARGE_TX_ROWS, Workload, WorkloadSpec
from riverbed.source.embedded import EmbeddedServer

SPEC = HistorySpec(customers=500, sellers=40, products=200, orders=4_000, months=3, seed=11)

EVERY_CHANGE = {
    "order_created",
    "order_item_created",
    "order_status_changed",
    "price_changed",
    "description_changed",
    "customer_address_changed",
    "customer_email_changed",
    "customer_created",
    "seller_changed",
    "product_created",
    "return_requested",
    "return_approved",
    "return_refunded",
    "return_rejected",
    "return_deleted",
    "order_deleted",
    "order_item_deleted",
    "customer_deleted",
}
DIRTY_KINDS = {
    "null_email",
    "unknown_country",
    "ordered_at_in_future",
    "negative_quantity",
    "refund_above_price",
}


@pytest.fixture
def shop(database: Database) -> Database:
    with database.connect() as conn:
        seed(conn, SPEC)
    return database


def run_workload(database: Database, spec: WorkloadSpec):
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        return Workload(conn, spec).run()


def test_every_change_type_and_the_requested_dirty_ratio(shop: Database) -> None:
    stats = run_workload(
        shop, WorkloadSpec(rate=0, duration=12, dirty_ratio=0.1, seed=5, large_every=5)
    )
    assert set(stats.changes) == EVERY_CHANGE, EVERY_CHANGE ^ set(stats.changes)
    assert set(stats.dirty) == DIRTY_KINDS
    assert stats.eligible > 5_000
    assert abs(stats.dirty_ratio - 0.1) < 0.02, stats.dirty_ratio

    with shop.connect() as conn:
        # the dirty rows really are in the database, in a form the schema accepted
        in_db = conn.execute("""
            select (select count(*) from shop.order_items where quantity < 0),
                   (select count(*) from shop.orders where ordered_at > now()),
                   (select count(*) from shop.customers where email is null),
                   (select count(*) from shop.customers where country !~ '^[A-Z]{2}$'
                                                          or country in ('XX', 'ZZ')),
                   (select count(*) from shop.returns r join shop.order_items i using (order_item_id)
                     where r.refund_amount > i.quantity * i.unit_price)
        """).fetchone()
        for found, kind in zip(
            in_db,
            [
                "negative_quantity",
                "ordered_at_in_future",
                "null_email",
                "unknown_country",
                "refund_above_price",
            ],
        ):
            # a later change or a cascading delete may have cleaned some, never added any
            assert (
                0
                < found
                <= stats.dirty[kind] + (stats.dirty[kind] if kind == "unknown_country" else 0)
            ), kind

        # counts reported match what the database holds
        orders = conn.execute("select count(*) from shop.orders").fetchone()[0]
        assert (
            orders == SPEC.orders + stats.changes["order_created"] - stats.changes["order_deleted"]
        )


def test_clean_traffic_writes_no_dirty_rows(shop: Database) -> None:
    stats = run_workload(
        shop, WorkloadSpec(rate=0, duration=4, dirty_ratio=0.0, seed=2, large_every=100)
    )
    assert stats.total > 1_000 and not stats.dirty
    with shop.connect() as conn:
        assert conn.execute(
            "select count(*) from shop.order_items where quantity <= 0"
        ).fetchone() == (0,)
        assert conn.execute(
            "select count(*) from shop.orders where ordered_at > now()"
        ).fetchone() == (0,)


def test_a_large_transaction_and_toasted_descriptions_happen(shop: Database) -> None:
    stats = run_workload(
        shop, WorkloadSpec(rate=0, duration=6, dirty_ratio=0.0, seed=9, large_every=3)
    )
    assert stats.large_transactions >= 1 and stats.largest_transaction >= LARGE_TX_ROWS
    assert stats.toast_updates >= 1
    with shop.connect() as conn:
        # one transaction id wrote 10,000+ rows (orders and their items commit together)
        biggest = conn.execute("""
            select max(n) from (
              select xid, sum(n) n from (
                select xmin::text xid, count(*) n from shop.orders group by 1
                union all select xmin::text, count(*) from shop.order_items group by 1) t
              group by xid) s
        """).fetchone()[0]
        assert biggest >= LARGE_TX_ROWS
        # a description was stored out of line, in the products' TOAST table
        toasted, widest = conn.execute("""
            select pg_relation_size(reltoastrelid),
                   (select max(pg_column_size(description)) from shop.products)
            from pg_class where oid = 'shop.products'::regclass
        """).fetchone()
        assert toasted > 0 and widest > 2_000


def test_rate_is_paced_and_reported(shop: Database, tmp_path: Path) -> None:
    config = str(external_config(tmp_path, shop))
    result = run_cli(
        "shop",
        "run",
        "--rate",
        "500",
        "--duration",
        "4",
        "--large-every",
        "100",
        "--json",
        "-c",
        config,
    )
    assert result.code == 0, result.text
    report = json.loads(result.out)
    # paced, not flat out: a machine that does thousands per second stays near 500
    assert report["rate"] < 900
    assert report["total_changes"] == sum(report["changes"].values())
    human = run_cli(
        "shop", "run", "--rate", "300", "--duration", "2", "--dirty-ratio", "0.2", "-c", config
    )
    assert human.code == 0
    assert "changes/s" in human.out and "order_created" in human.out and "dirty rows" in human.out


def wait_until_writing(database: Database, proc: subprocess.Popen[str]) -> None:
    """Until `shop run` has written an order (a loaded machine can take seconds to start it)."""
    with database.connect(autocommit=True) as conn:
        before = conn.execute("select count(*) from shop.orders").fetchone()
        until = time.monotonic() + 120
        while conn.execute("select count(*) from shop.orders").fetchone() == before:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < until, "the workload never wrote an order"
            time.sleep(0.2)


def test_ctrl_c_stops_cleanly_with_a_report(shop: Database, tmp_path: Path) -> None:
    config = str(external_config(tmp_path, shop))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "riverbed",
            "shop",
            "run",
            "--rate",
            "0",
            "--duration",
            "0",
            "--json",
            "-c",
            config,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # interrupt once it is writing, not after a fixed time: the report must count what it did
    wait_until_writing(shop, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["total_changes"] > 0
    with shop.connect() as conn:  # nothing left half-done: no open transaction of ours remains
        assert conn.execute(
            "select count(*) from pg_stat_activity where application_name = 'riverbed-shop'"
        ).fetchone() == (0,)


def test_workload_on_an_unseeded_database_says_what_to_do(
    database: Database, tmp_path: Path
) -> None:
    result = run_cli(
        "shop", "run", "--duration", "1", "-c", str(external_config(tmp_path, database))
    )
    assert result.code == 1
    assert "riverbed shop seed" in result.err and "Traceback" not in result.text


def test_a_shop_schema_changed_by_hand_is_one_clear_line(shop: Database, tmp_path: Path) -> None:
    with shop.connect(autocommit=True) as conn:
        conn.execute("alter table shop.sellers drop column region")
    config = str(external_config(tmp_path, shop))
    result = run_cli("shop", "run", "--rate", "2000", "--duration", "3", "-q", "-c", config)
    assert result.code == 1
    assert "Traceback" not in result.err
    [line] = result.err.strip().splitlines()
    assert "region" in line and "shop seed --reset" in line


def test_the_source_stopping_ends_shop_run_with_one_clear_line(
    own_server: EmbeddedServer, own_database: Database, tmp_path: Path
) -> None:
    config = str(external_config(tmp_path, own_database))
    seeded = run_cli(
        "shop", "seed", "--customers", "200", "--sellers", "20", "--products", "100",
        "--orders", "500", "--months", "1", "-q", "-c", config,
    )  # fmt: skip
    assert seeded.code == 0, seeded.text
    proc = start_cli("shop", "run", "--rate", "100", "--duration", "0", "--json", "-c", config)
    try:
        wait_until_writing(own_database, proc)
        own_server.down()  # what `riverbed source down` does: a fast shutdown
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    [line] = err.strip().splitlines()
    assert "source" in line and str(own_server.settings.port) in line
    assert json.loads(out)["total_changes"] > 0  # what it did before, as Ctrl-C reports it
