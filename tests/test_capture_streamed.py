"""Large transactions streamed before their commit (pgoutput protocol 2, ``streaming``) land
exactly as when the server holds them to their commit: a project with ``capture.streaming:
false`` reads the same WAL through a slot of its own, and the two lakes must agree change for
change; both must agree with the source. Nothing of a streamed transaction lands before its
commit, an aborted one never lands, nor do the rows of a subtransaction rolled back to its
savepoint."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from capture_support import lake_changes, replay

from conftest import Database, start_cli, write_config
from riverbed.capture import streamed
from riverbed.capture.runner import run_capture
from riverbed.config import load_project
from riverbed.state import SchemaVersion, SQLiteStore

DDL = """
create schema big;
create table big.t (id int8 primary key, n int4 not null, note text, price numeric(12,2));
create table big.small (id int8 primary key, v text);
"""


def _project(folder: Path, database: Database, name: str, streaming: bool) -> Path:
    text = (
        f'source:\n  dsn: "{database.dsn}"\n  schema: big\n  slot: {name}\n'
        f"  publication: {name}\n"
        "lake:\n  path: lake\n  max_rows: 3000\n  max_seconds: 1\nstate:\n  path: state.db\n"
        "capture:\n  heartbeat_seconds: 1\n  status_interval_seconds: 1\n"
        f"  streaming: {'true' if streaming else 'false'}\n"
        "tables:\n"
        "  t:\n    kind: fact\n    target: fact_t\n    keys: [id]\n"
        "  small:\n    kind: fact\n    target: fact_small\n    keys: [id]\n"
    )
    return write_config(folder, text)


class _Blocks:
    """Counts the first blocks of streamed transactions, and the times their rows were
    staged on disk (the capture runs in this process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.first = self.staged = 0
        start, stage = streamed.StreamedTxs.start, streamed.StreamedTxs.stage

        def staging(txs: streamed.StreamedTxs, tx: streamed.StreamedTx) -> None:
            self.staged += 1
            stage(txs, tx)

        monkeypatch.setattr(streamed.StreamedTxs, "stage", staging)

        def counting(txs: streamed.StreamedTxs, xid: int, first: bool) -> Any:
            self.first += first
            return start(txs, xid, first)

        monkeypatch.setattr(streamed.StreamedTxs, "start", counting)


def _capture(config: Path) -> Any:
    return run_capture(load_project(config), follow=False).stream


def _without_seq(change: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in change.items() if k != "_seq"}


def _insert(conn: psycopg.Connection, low: int, high: int) -> None:
    conn.execute(
        "insert into big.t select g, g % 7, repeat('n', 40) || g, g / 100.0"
        f" from generate_series({low}, {high}) g"
    )


def test_streamed_transactions_land_at_their_commit_exactly(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _Blocks(monkeypatch)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(DDL)
        # the server streams a transaction once its changes pass this much memory
        conn.execute(f"alter database {database.name} set logical_decoding_work_mem = '64kB'")
    held = _project(tmp_path / "held", database, "rb_held", False)
    live = _project(tmp_path / "live", database, "rb_live", True)
    _capture(held)
    _capture(live)

    with (
        psycopg.connect(database.dsn) as writer,
        psycopg.connect(database.dsn, autocommit=True) as other,
    ):
        _insert(writer, 1, 10_000)  # open: streamed while it runs
        writer.execute("savepoint s")
        _insert(writer, 10_001, 12_000)
        writer.execute("update big.t set n = -1 where id <= 500")
        writer.execute("rollback to savepoint s")  # its rows must never land
        writer.execute("update big.t set note = 'touched' where id % 10 = 0")
        other.execute("insert into big.small values (1, 'committed meanwhile')")
        stats = _capture(live)  # the open transaction was streamed, and must not land
        assert blocks.first > 0
        assert stats.rows == 1 and not [c for c in lake_changes(live, "t")]
        writer.execute("delete from big.t where id > 9_900")
        writer.commit()
        _insert(writer, 20_000, 26_000)
        writer.rollback()  # streamed, then aborted: never lands
        other.execute("insert into big.small values (2, 'after')")

    first_blocks = blocks.first
    assert _capture(live).rows == 10_000 + 1_000 + 100 + 1
    assert blocks.first > first_blocks  # streamed again from its first block, then committed
    assert blocks.staged >= 3  # past max_rows: staged on disk until the commit
    _capture(held)
    for table in ("t", "small"):
        # the same changes in the same order; _seq may skip the numbers of the rows a
        # rolled-back savepoint had streamed
        got, want = lake_changes(live, table), lake_changes(held, table)
        assert [_without_seq(c) for c in got] == [_without_seq(c) for c in want], table
    lake = replay(lake_changes(live, "t"), ["id"])
    assert len(lake) == 9_900
    assert {row["n"] for row in lake.values()} == set(range(7))
    assert sum(row["note"] == "touched" for row in lake.values()) == 990
    assert min(k[0] for k in lake) == 1 and max(k[0] for k in lake) == 9_900


def test_the_stream_lowers_the_decoding_memory_and_never_raises_it(database: Database) -> None:
    """A big transaction is streamed in blocks of at most 8MB, so little is left to send at
    its commit; a server (or role, or database) set lower keeps its setting."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        assert streamed.work_mem_option(conn) == "-c logical_decoding_work_mem=8192kB"
        conn.execute(f"alter database {database.name} set logical_decoding_work_mem = '1MB'")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        assert streamed.work_mem_option(conn) == "-c logical_decoding_work_mem=1024kB"


def _lake_position(config: Path, slot: str) -> int:
    with sqlite3.connect(config.parent / "state.db") as db:
        row = db.execute("select lsn from capture_position where slot = ?", (slot,)).fetchone()
    return int(row[0]) if row else 0


def _wait(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"capture exited waiting for {what}: {proc.stderr.read()}"  # type: ignore[union-attr]
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_streamed_transaction_open_through_idle_time_and_a_kill_lands_once(
    database: Database, tmp_path: Path
) -> None:
    """A big transaction streamed while other transactions commit, then idle seconds (the
        idle step, heartbeats), then ``kill -9`` of ``capture --follow``: the lake's position never
        passes the last transaction it holds while the big one is open (nothing before the
        server's WAL end is all in the lake then), and after its commit every one of its rows is
        in the lake exactly once (the server streams it again from its first block), and the rows
    the killed capture staged on disk are deleted, never loaded."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute(f"alter database {database.name} set logical_decoding_work_mem = '64kB'")
    live = _project(tmp_path / "live", database, "rb_kill", True)
    staging = tmp_path / "live" / ".riverbed" / "streamed" / "rb_kill"
    _capture(live)
    proc = start_cli("capture", "--follow", "-c", str(live))
    try:
        with (
            psycopg.connect(database.dsn) as writer,
            psycopg.connect(database.dsn, autocommit=True) as other,
        ):
            _insert(writer, 1, 10_000)  # open: streamed while it runs, staged past max_rows
            for i in range(3):  # commit before it, landing meanwhile
                other.execute("insert into big.small values (%s, 'meanwhile')", (i,))
            _wait(lambda: len(lake_changes(live, "small")) == 3, "the small ones", proc)
            landed = _lake_position(live, "rb_kill")
            time.sleep(4)  # idle steps, heartbeats (WAL of their own) with the big one open
            assert _lake_position(live, "rb_kill") == landed
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            left = list(staging.glob("*.arrow"))  # what it staged, left by the kill
            assert left and {p.stat().st_mode & 0o777 for p in left} == {0o600}
            assert staging.stat().st_mode & 0o777 == 0o700  # rows of the source: private
            writer.execute("update big.t set note = 'late' where id <= 100")
            writer.commit()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    stats = _capture(live)
    assert stats.rows == 10_000 + 100
    assert not list(staging.glob("*.arrow"))  # deleted, never loaded: streamed again
    changes = lake_changes(live, "t")
    assert sorted(c["id"] for c in changes if c["_op"] == "I") == list(range(1, 10_001))
    lake = replay(changes, ["id"])
    assert len(lake) == 10_000 and sum(r["note"] == "late" for r in lake.values()) == 100
    assert len(lake_changes(live, "small")) == 3


def _versions(config: Path, table: str) -> list[SchemaVersion]:
    manifest = SQLiteStore(config.parent / "state.db")
    try:
        return manifest.lake.schema_versions(table)
    finally:
        manifest.close()


def _altering_transaction(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A streamed transaction inserts rows, ALTERs big.t ADD COLUMN and inserts more, while
    another session commits rows of big.t (before the ALTER: it waits for the lock after)
    and of big.small (after); then it commits, and the other session inserts into big.t
    again (a capture cannot run while the ALTER's lock is held: it reads the table). Returns the streaming project and
    one whose server holds every transaction to its commit (the reference), both caught up."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute(f"alter database {database.name} set logical_decoding_work_mem = '64kB'")
    held = _project(tmp_path / "held", database, "rb_held", False)
    live = _project(tmp_path / "live", database, "rb_live", True)
    _capture(held)
    _capture(live)
    with (
        psycopg.connect(database.dsn) as writer,
        psycopg.connect(database.dsn, autocommit=True) as other,
    ):
        _insert(writer, 1, 2_000)  # streamed with big.t's first shape
        _insert(other, 100_001, 100_010)  # committed while it is open, before its ALTER
        writer.execute("alter table big.t add column extra text")
        writer.execute(
            "insert into big.t select g, g % 7, 'n' || g, g / 100.0, 'e' || g"
            " from generate_series(2_001, 5_000) g"
        )
        other.execute("insert into big.small values (1, 'committed meanwhile')")
        writer.commit()
        other.execute(
            "insert into big.t (id, n) select g, 1 from generate_series(200_001, 200_010) g"
        )
    blocks = _Blocks(monkeypatch)
    _capture(live)
    assert blocks.first > 0  # streamed before its commit
    _capture(held)
    return live, held


def test_a_streamed_transactions_new_column_is_the_streams_from_its_commit(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, held = _altering_transaction(database, tmp_path, monkeypatch)
    changes = lake_changes(live, "t")
    ids = [c["id"] for c in changes]
    assert sorted(ids) == [*range(1, 5_001), *range(100_001, 100_011), *range(200_001, 200_011)]
    by_id = {c["id"]: c for c in changes}
    assert all(by_id[i]["extra"] is None for i in [*range(1, 2_001), *range(100_001, 100_011)])
    assert all(by_id[i]["extra"] == f"e{i}" for i in range(2_001, 5_001))
    assert all(by_id[i]["extra"] is None and by_id[i]["n"] == 1 for i in range(200_001, 200_011))
    # the new version from its commit, as when the server holds it to its commit (the
    # first is each slot's own, from its start)
    versions = _versions(live, "t")
    assert [v.version for v in versions] == [1, 2]
    assert [c["name"] for c in versions[1].columns] == ["id", "n", "note", "price", "extra"]
    assert versions[1:] == _versions(held, "t")[1:]
    for table in ("t", "small"):
        got, want = lake_changes(live, table), lake_changes(held, table)
        assert [_without_seq(c) for c in got] == [_without_seq(c) for c in want], table
