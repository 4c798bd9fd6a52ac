"""Each raw file's commit-time range in the manifest, and what reads it: run --reprocess --from."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from riverbed.capture.changes import TableSchema
from riverbed.capture.snapshot import SnapshotPoint, truncate_file
from riverbed.lake.layout import raw_file_path
from riverbed.lake.local import LocalStorage
from riverbed.lake.pgtypes import PgColumn, PgOid
from riverbed.state import LakeFile, SQLiteStore
from riverbed.transform.reprocess import AFTER_ALL, _start_lsn


def us(hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 11, 27, hour, minute, tzinfo=UTC).timestamp()) * 1_000_000


def test_reprocess_from_a_time_reads_the_commit_times_recorded_for_each_file(
    tmp_path: Path,
) -> None:
    manifest = SQLiteStore(tmp_path / "state.db")
    # recorded before commit times were: its partition hour (09) is read from its path
    old = LakeFile(
        path=raw_file_path("orders", us(9, 15), 100, 100, 1, 0),
        stage="raw",
        table="orders",
        rows=1,
        bytes=1,
        min_lsn=100,
        max_lsn=100,
        schema_version=1,
    )
    # recorded with its commit times: its path is not read
    new = LakeFile(
        path="raw/orders/moved/a.parquet",
        stage="raw",
        table="orders",
        rows=1,
        bytes=1,
        min_lsn=200,
        max_lsn=200,
        schema_version=1,
        full_load=False,
        min_commit_ts=us(10, 30),
        max_commit_ts=us(10, 31),
    )
    manifest.capture.commit("riverbed", [old, new], 200)
    assert [(f.min_commit_ts, f.max_commit_ts) for f in manifest.lake.files("raw", "orders")] == [
        (None, None),
        (us(10, 30), us(10, 31)),
    ]
    assert _start_lsn(manifest, "orders", "2026-11-27T09:59:00Z") == 100
    assert _start_lsn(manifest, "orders", "2026-11-27T10:59:00Z") == 200  # the same commit hour
    assert _start_lsn(manifest, "orders", "2026-11-27T11:00:00Z") == AFTER_ALL
    manifest.close()


def test_a_state_store_from_before_commit_times_opens_and_keeps_its_files(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute(
        "create table lake_files (path text primary key, stage text not null, table_name text"
        " not null, rows integer not null, bytes integer not null, min_lsn integer not null,"
        " max_lsn integer not null, schema_version integer not null, full_load integer not null"
        " default 0, slot text, created_at real not null)"
    )
    old_path = raw_file_path("orders", us(9), 100, 100, 1, 0)
    db.execute(
        "insert into lake_files values (?, 'raw', 'orders', 1, 1, 100, 100, 1, 0, 'riverbed', 0)",
        (old_path,),
    )
    db.commit()
    db.close()
    manifest = SQLiteStore(path)
    (file,) = manifest.lake.files("raw", "orders")
    assert (file.path, file.min_commit_ts, file.max_commit_ts) == (old_path, None, None)
    assert _start_lsn(manifest, "orders", "2026-11-27T09:30:00Z") == 100
    manifest.close()


def test_snapshot_files_record_the_snapshot_time(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "lake")
    schema = TableSchema("items", 1, (PgColumn("id", PgOid.INT4, -1),), (0,))
    point = SnapshotPoint("snap", 0x16B3748, us(10, 5))
    file = truncate_file(storage, schema, point)
    assert file.min_commit_ts == file.max_commit_ts == point.ts_us
    committed = pq.read_table(tmp_path / "lake" / file.path).column("_commit_ts")
    assert committed.cast("int64").to_pylist() == [point.ts_us]
