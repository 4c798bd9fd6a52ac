"""`riverbed capture`: snapshot + streaming CDC into the Parquet lake, checked against an oracle
that does not use Riverbed's decoder (audit triggers and the source tables themselves)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from capture_support import (
    audit_by_xid,
    background_workload,
    capture_config,
    install_audit,
    lake_by_xid,
    lake_changes,
    normalise,
    normalise_row,
    replay,
    source_rows,
)

from conftest import Database, run_cli, start_cli
from riverbed.capture import pgoutput
from riverbed.capture.changes import TableBuffer, TxInfo
from riverbed.capture.snapshot import SnapshotPoint, TableCopy, copy_tables
from riverbed.config import load_project
from riverbed.lake.layout import partition_of
from riverbed.lake.parquet import write_table
from riverbed.lake.positions import parse_lsn
from riverbed.lake.storage import open_storage
from riverbed.shop.history import HistorySpec
from riverbed.shop.schema import COLUMNS, TABLES
from riverbed.shop.seed import seed
from riverbed.shop.workload import Workload, WorkloadSpec
from riverbed.source.connection import source_for
from riverbed.state import LakeFile, SchemaVersion, SQLiteStore

SMALL_SHOP = HistorySpec(customers=300, sellers=30, products=120, orders=2_000, months=2, seed=5)
KEYS = {table: [COLUMNS[table][1]] for table in TABLES}


@pytest.fixture
def shop(database: Database) -> Database:
    with database.connect() as conn:
        seed(conn, SMALL_SHOP)
    with database.connect(autocommit=True) as conn:
        install_audit(conn, "shop", list(TABLES))
    return database


def capture(config: Path, *args: str) -> dict:
    result = run_cli("capture", *args, "--json", "-c", str(config), timeout=600)
    assert result.code == 0, result.text
    return json.loads(result.out)


def assert_lake_matches_source(config: Path, database: Database, audit: bool = True) -> None:
    """Replaying the lake gives exactly the source tables; and (with ``audit``) every streamed
    transaction holds exactly the changes the triggers saw, no more, no less. Transactions
    absent from the stream are those the snapshot already contains, which the replay checks."""
    with database.connect() as conn:
        for table in TABLES:
            changes = lake_changes(config, table)
            lake = {
                tuple(normalise(part) for part in k): normalise_row(v)
                for k, v in replay(changes, KEYS[table]).items()
            }
            source = source_rows(conn, "shop", table, KEYS[table])
            assert lake.keys() == source.keys(), f"{table}: keys differ"
            for key, row in source.items():
                assert lake[key] == row, f"{table} {key}: lake {lake[key]} != source {row}"
            if audit:
                seen = audit_by_xid(conn, table, KEYS[table])
                for xid, streamed in lake_by_xid(changes, KEYS[table]).items():
                    assert seen.get(xid) == streamed, (
                        f"{table} xid {xid}: lake differs from the source"
                    )


def test_snapshot_then_stream_equals_the_source(shop: Database, tmp_path: Path) -> None:
    config = capture_config(tmp_path, shop)
    first = capture(config, "--once")
    assert first["snapshot_rows"]["orders"] == SMALL_SHOP.orders
    assert_lake_matches_source(config, shop)

    # snapshot rows are flagged as a full load, with the slot's consistent point as position
    orders = lake_changes(config, "orders")
    assert {c["_op"] for c in orders} == {"L"}
    assert len({c["_lsn"] for c in orders}) == 1 and all(c["_xid"] is None for c in orders)

    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        Workload(
            conn, WorkloadSpec(rate=0, duration=4, seed=3, large_every=2, dirty_ratio=0.05)
        ).run()
    second = capture(config, "--once")
    assert second["snapshot_rows"] == {} and second["rows"] > 1_000
    assert_lake_matches_source(config, shop)

    # nothing new: a no-op
    third = capture(config, "--once")
    assert third["rows"] == 0 and third["files"] == 0


def test_lake_layout_and_cdc_columns(shop: Database, tmp_path: Path) -> None:
    config = capture_config(tmp_path, shop)
    capture(config, "--once")
    with shop.connect(autocommit=True) as conn, conn.transaction():
        conn.execute(
            "insert into shop.sellers (name, city, country, region) values ('A', 'X', 'US', 'North America')"
        )
        conn.execute("update shop.sellers set name = 'B' where seller_id = 1")
        conn.execute("update shop.sellers set name = 'C' where seller_id = 1")
        conn.execute(
            "delete from shop.products where product_id = 1 and not exists"
            " (select 1 from shop.order_items where product_id = 1)"
        )
    capture(config, "--once")
    files = sorted((tmp_path / "lake" / "raw" / "sellers").rglob("*.parquet"))
    assert files, "no sellers files"
    for f in files:
        parts = f.relative_to(tmp_path / "lake" / "raw" / "sellers").parts
        assert parts[0].startswith("date=") and parts[1].startswith("hour=") and len(parts) == 3
        meta = pq.ParquetFile(f).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(files[-1])
    assert str(schema.field("seller_id").type) == "int64"
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert [n for n in schema.names if n.startswith("_")] == [
        "_op",
        "_commit_ts",
        "_lsn",
        "_seq",
        "_xid",
        "_toast_unchanged",
    ]
    products = pq.read_schema(
        sorted((tmp_path / "lake" / "raw" / "products").rglob("*.parquet"))[0]
    )
    assert str(products.field("price").type) == "decimal128(12, 2)"

    streamed = [c for c in lake_changes(config, "sellers") if c["_op"] != "L"]
    assert [c["_op"] for c in streamed] == ["I", "U", "U"]
    assert [c["name"] for c in streamed] == ["A", "B", "C"]
    assert len({c["_lsn"] for c in streamed}) == 1 and len({c["_xid"] for c in streamed}) == 1
    assert [c["_seq"] for c in streamed] == sorted(c["_seq"] for c in streamed)


def test_snapshot_handoff_under_concurrent_writes(shop: Database, tmp_path: Path) -> None:
    """The workload writes during the snapshot copy: nothing lost, nothing doubled."""
    config = capture_config(tmp_path, shop)
    with background_workload(shop, WorkloadSpec(rate=3000, duration=None, seed=8, large_every=3)):
        capture(config, "--once")
    capture(config, "--once")  # everything the workload committed after the first --once
    assert_lake_matches_source(config, shop)


def test_kill_minus_9_at_random_moments_loses_and_doubles_nothing(
    shop: Database, tmp_path: Path
) -> None:
    import random
    import signal
    import subprocess
    import time

    config = capture_config(tmp_path, shop)
    moments = random.Random(7)
    kills = 0
    with background_workload(shop, WorkloadSpec(rate=3000, duration=None, seed=21, large_every=4)):
        for _ in range(6):
            proc = start_cli(
                "capture", "--follow", "--quiet", "-c", str(config), stdout=subprocess.DEVNULL
            )
            time.sleep(moments.uniform(0.5, 3.5))
            if proc.poll() is not None:
                pytest.fail(f"capture exited early: {proc.stderr.read()[-2000:]}")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills == 6
    capture(config, "--once")
    assert_lake_matches_source(config, shop)


def test_follow_streams_and_sigterm_flushes_what_it_holds(shop: Database, tmp_path: Path) -> None:
    import signal
    import time

    # nothing flushes by size or age during this test: only the stop can make the change visible
    config = capture_config(tmp_path, shop, extra="")
    text = (
        config.read_text()
        .replace("max_rows: 5000", "max_rows: 1000000")
        .replace("max_seconds: 1", "max_seconds: 3600")
    )
    config.write_text(text)
    proc = start_cli("capture", "--follow", "--json", "-c", str(config))
    try:
        with shop.connect(autocommit=True) as conn:
            deadline = time.monotonic() + 120
            # this test's capture: the walsender of a slot of this database (the server is
            # shared; a walsender of another test's database streams the same WAL positions)
            ours = (
                "from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid"
                " where s.database = current_database() and r.application_name <> 'riverbed-shop'"
            )
            while not conn.execute(f"select count(*) {ours}").fetchone()[0]:
                assert time.monotonic() < deadline and proc.poll() is None, (
                    "capture never started streaming"
                )
                time.sleep(0.2)
            conn.execute("update shop.customers set city = 'Lisbon' where customer_id = 1")
            commit = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
            # wait until the server has sent it: from there the capture reads it before it stops
            while not conn.execute(
                f"select bool_or(r.sent_lsn >= %s) {ours}", (commit,)
            ).fetchone()[0]:
                assert time.monotonic() < deadline, "the change was never sent"
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["rows"] >= 1
    cities = [c["city"] for c in lake_changes(config, "customers") if c["customer_id"] == 1]
    assert cities[-1] == "Lisbon"


def test_big_tables_are_copied_as_key_ranges_exactly_once(
    shop: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table above SPLIT_ROWS is copied by several workers, one key range each."""
    import riverbed.capture.snapshot as snapshot
    from riverbed.capture.runner import run_capture
    from riverbed.config import load_project

    monkeypatch.setattr(snapshot, "SPLIT_ROWS", 100)
    config = capture_config(tmp_path, shop)
    result = run_capture(load_project(config), follow=False)
    assert result.snapshot_rows["order_items"] > 1_000
    chunks = {
        p.name.split("_")[2] for p in (tmp_path / "lake" / "raw" / "order_items").rglob("*.parquet")
    }
    assert chunks == {"00", "01"}
    assert_lake_matches_source(config, shop, audit=False)
    items = lake_changes(config, "order_items")
    assert len({c["_seq"] for c in items}) == len(items)


def test_a_commit_at_the_consistent_point_replays_after_the_snapshot(
    database: Database, tmp_path: Path
) -> None:
    """The first streamed transaction can commit exactly at the slot's consistent point (its
    commit record starts where the record that made the slot consistent ends), so its rows carry
    the snapshot's ``_lsn``. The lake must still put them after the snapshot rows: it once put
    them first, so replaying the lake gave the row as it was before that transaction (seen about
    once in a hundred runs of the handoff test above, under load)."""
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema shop; create table shop.items (id int primary key, v text)")
        conn.execute("insert into shop.items select i, 'old' from generate_series(1, 5) i")
    project = load_project(capture_config(tmp_path, database))
    storage = open_storage(project.config.lake, project.root)
    manifest = SQLiteStore(project.path(project.config.state.path))
    with database.connect() as exporter, database.connect(autocommit=True) as writer:
        exporter.execute("begin isolation level repeatable read")
        name, lsn = exporter.execute(
            "select pg_export_snapshot(), pg_current_wal_lsn()::text"
        ).fetchone()  # type: ignore[misc]
        point = SnapshotPoint(name, parse_lsn(lsn), int(time.time() * 1_000_000))
        writer.execute("update shop.items set v = 'new' where id = 3")  # after the snapshot

        def done(copy: TableCopy) -> None:
            schema = SchemaVersion("items", 1, copy.schema.describe(), point.lsn)
            manifest.capture.commit("riverbed", copy.files, None, [schema])

        (copy,) = copy_tables(
            source_for(project),
            point,
            "shop",
            ["items"],
            storage,
            workers=1,
            op="L",
            on_table_done=done,
        )
    # the update, as the stream lands a transaction whose commit LSN is the consistent point
    update = TableBuffer(copy.schema)
    update.add("U", pgoutput.row_message(b"U", 1, [b"3", b"new"]), 0, 0)
    rows = update.to_arrow([TxInfo(point.lsn, point.ts_us + 1, 1234)])
    path = f"raw/items/{partition_of(point.ts_us)}/streamed.parquet"
    size = write_table(storage, path, rows)
    streamed = LakeFile(
        path=path,
        stage="raw",
        table="items",
        rows=1,
        bytes=size,
        min_lsn=point.lsn,
        max_lsn=point.lsn,
        schema_version=1,
    )
    manifest.capture.commit("riverbed", [streamed], point.lsn)
    manifest.close()

    lake = replay(lake_changes(tmp_path / "riverbed.yaml", "items"), ["id"])
    assert {key[0]: row["v"] for key, row in lake.items()} == {
        1: "old",
        2: "old",
        3: "new",
        4: "old",
        5: "old",
    }
