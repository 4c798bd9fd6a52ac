"""`capture --follow` survives a lost replication connection: it reconnects with backoff and
resumes exactly from the lake's committed position, so nothing is lost or doubled."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from capture_support import (
    capture_config,
    lake_changes,
    normalise,
    normalise_row,
    replay,
    source_rows,
)

from conftest import Database, run_cli, start_cli
from riverbed.config import load_project
from riverbed.source.connection import connection_lost
from riverbed.source.embedded import EmbeddedServer
from riverbed.state import SQLiteStore

TABLES = "source:\n  schema: r\n"


def raw_rows(config: Path) -> list[int]:
    project = load_project(config)
    manifest = SQLiteStore(project.path(project.config.state.path))
    try:
        import pyarrow.parquet as pq

        ids: list[int] = []
        for file in manifest.lake.files("raw", "items"):
            table = pq.read_table(project.path("lake") / file.path, columns=["id", "_op"])
            ids += [i for i, op in zip(*table.to_pydict().values()) if op in ("I", "L")]
        return sorted(ids)
    finally:
        manifest.close()


def wait_for(
    condition: object, what: str, proc: subprocess.Popen[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            raise AssertionError(f"capture exited while waiting for {what}: {proc.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_follow_reconnects_after_the_connection_is_killed(
    database: Database, tmp_path: Path
) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema r; create table r.items (id int primary key, name text)")
        conn.execute("insert into r.items select g, 'x' from generate_series(1, 10) g")
    text = capture_config(tmp_path, database).read_text()
    config = tmp_path / "riverbed.yaml"
    config.write_text(text.replace("source:\n  dsn:", "source:\n  schema: r\n  dsn:"))
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    proc = start_cli("capture", "--follow", "-c", str(config))
    try:
        with database.connect(autocommit=True) as conn:
            conn.execute("insert into r.items select g, 'y' from generate_series(11, 20) g")
            wait_for(lambda: len(raw_rows(config)) == 20, "the first changes", proc)
            killed = conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where backend_type = 'walsender' and datname = current_database()"
            ).fetchall()
            assert killed and all(k[0] for k in killed)
            conn.execute("insert into r.items select g, 'z' from generate_series(21, 30) g")
            wait_for(lambda: len(raw_rows(config)) >= 30, "changes after the reconnect", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    # each interruption said once (it was printed a second time, with " (Ctrl-C stops)")
    notices = [line for line in err.splitlines() if "capture interrupted" in line]
    assert notices and len({n.removesuffix(" (Ctrl-C stops)") for n in notices}) == len(notices)
    assert raw_rows(config) == list(range(1, 31))  # nothing lost, nothing twice


def lake_matches_source(config: Path, database: Database) -> bool:
    """The lake replayed by key is the source table, row for row."""
    lake = {
        tuple(normalise(k) for k in key): normalise_row(row)
        for key, row in replay(lake_changes(config, "items"), ["id"]).items()
    }
    with database.connect() as conn:
        return lake == source_rows(conn, "r", "items", ["id"])


def test_follow_rides_out_the_source_server_stopping_and_starting_again(
    own_server: EmbeddedServer, own_database: Database, tmp_path: Path
) -> None:
    # `riverbed source down` is a fast shutdown: the server ends the replication stream itself
    # (psycopg2 then says "no COPY in progress") and terminates the heartbeat connection
    with own_database.connect(autocommit=True) as conn:
        conn.execute("create schema r; create table r.items (id int primary key, name text)")
        conn.execute("insert into r.items select g, 'x' from generate_series(1, 10) g")
    text = capture_config(tmp_path, own_database).read_text()
    config = tmp_path / "riverbed.yaml"
    config.write_text(text.replace("source:\n  dsn:", "source:\n  schema: r\n  dsn:"))
    proc = start_cli("capture", "--follow", "-c", str(config))
    try:
        wait_for(lambda: lake_matches_source(config, own_database), "the snapshot", proc)
        with own_database.connect(autocommit=True) as conn:
            conn.execute("insert into r.items select g, 'y' from generate_series(11, 20) g")
            conn.execute("update r.items set name = 'u' where id in (2, 12)")
            conn.execute("delete from r.items where id in (3, 13)")
        wait_for(lambda: lake_matches_source(config, own_database), "the first changes", proc)
        with own_database.connect(autocommit=True) as conn:
            # committed just before the stop: possibly not streamed yet, and must not be lost
            conn.execute("insert into r.items select g, 'z' from generate_series(21, 30) g")
        own_server.down()
        own_server.up()
        with own_database.connect(autocommit=True) as conn:
            conn.execute("insert into r.items select g, 'w' from generate_series(31, 40) g")
            conn.execute("update r.items set name = 'v' where id in (4, 24)")
            conn.execute("delete from r.items where id in (5, 25)")
        wait_for(
            lambda: lake_matches_source(config, own_database),
            "the changes after the restart",
            proc,
            timeout=180,
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    # each interruption said once (it was printed a second time, with " (Ctrl-C stops)")
    notices = [line for line in err.splitlines() if "capture interrupted" in line]
    assert notices and len({n.removesuffix(" (Ctrl-C stops)") for n in notices}) == len(notices)
    assert lake_matches_source(config, own_database)
    assert raw_rows(config) == list(range(1, 41))  # every insert exactly once: nothing doubled


def test_follow_stops_naming_the_gap_when_its_slot_was_replaced_while_it_reconnected(
    database: Database, tmp_path: Path
) -> None:
    """The slot dropped and created again while `--follow` was disconnected: reconnecting to
    it would silently skip every change committed in between, so capture stops and says so."""
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema r; create table r.items (id int primary key, name text)")
        conn.execute("insert into r.items select g, 'x' from generate_series(1, 10) g")
    text = capture_config(tmp_path, database).read_text()
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        text.replace("source:\n", "source:\n  schema: r\n", 1).replace(
            "slot: riverbed", "slot: moved"
        )
    )
    proc = start_cli("capture", "--follow", "-c", str(config))
    try:
        wait_for(lambda: len(raw_rows(config)) == 10, "the snapshot", proc)
        with database.connect(autocommit=True) as conn:
            conn.execute("insert into r.items select g, 'y' from generate_series(11, 20) g")
            wait_for(lambda: len(raw_rows(config)) == 20, "the first changes", proc)
            walsender = (
                "select pg_terminate_backend(active_pid) from pg_replication_slots"
                " where slot_name = 'moved' and active_pid is not null"
            )
            conn.execute(walsender)
            # committed while capture is away: the replaced slot never sends them
            conn.execute("insert into r.items select g, 'z' from generate_series(21, 30) g")
            while True:  # replaced between two of its attempts to reconnect
                try:
                    conn.execute(
                        "select pg_drop_replication_slot('moved'),"
                        " pg_create_logical_replication_slot('moved', 'pgoutput')"
                    )
                    break
                except psycopg.errors.ObjectInUse:
                    conn.execute(walsender)
                    time.sleep(0.05)
            conn.execute("insert into r.items select g, 'w' from generate_series(31, 40) g")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "error:" in last and "'moved'" in last and "--resnapshot" in last, err
    assert "lost to this lake" in last or "no longer exists" in last, err
    assert raw_rows(config) == list(range(1, 21))  # nothing of the new slot's stream


def lake_position(config: Path) -> int:
    project = load_project(config)
    manifest = SQLiteStore(project.path(project.config.state.path))
    try:
        return manifest.capture.position("riverbed") or 0
    finally:
        manifest.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_follower_stopped_while_other_tables_are_busy_resumes_through_its_own_slot(
    database: Database, tmp_path: Path, stop: signal.Signals
) -> None:
    """While only tables capture does not capture are written, psycopg2 confirms the server's
    WAL end itself, past the lake's position: the slot is still this project's, and the next
    capture resumes through it (the check for a replaced slot must not fire), losing nothing."""
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema r; create table r.items (id int primary key, name text)")
        conn.execute("create table public.noise (id serial primary key, v text)")
        conn.execute("insert into r.items select g, 'x' from generate_series(1, 10) g")
    text = capture_config(tmp_path, database).read_text()
    config = tmp_path / "riverbed.yaml"
    config.write_text(text.replace("source:\n", "source:\n  schema: r\n", 1))
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    with background_workload(database, "insert into public.noise (v) values ('n')"):
        proc = start_cli("capture", "--follow", "-c", str(config))
        try:
            with database.connect(autocommit=True) as conn:
                conn.execute("insert into r.items select g, 'y' from generate_series(11, 20) g")
                wait_for(lambda: len(raw_rows(config)) == 20, "the first changes", proc)
                # the slot moves on with the busy other table, several times
                for _ in range(3):
                    row = conn.execute("select pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
                    assert row is not None
                    at = int(row[0])
                    wait_for(lambda at=at: lake_position(config) > at, "an idle advance", proc)
            proc.send_signal(stop)
            proc.communicate(timeout=60)
        finally:
            proc.kill()
    with database.connect(autocommit=True) as conn:
        conn.execute("insert into r.items select g, 'z' from generate_series(21, 30) g")
    again = run_cli("capture", "--once", "-c", str(config))
    assert again.code == 0, again.text
    assert "resuming slot riverbed" in again.err
    assert raw_rows(config) == list(range(1, 31))  # nothing lost, nothing twice


@contextmanager
def background_workload(database: Database, statement: str) -> Iterator[None]:
    """``statement`` run over and over in a thread for the duration of the with-block."""
    done = threading.Event()

    def drive() -> None:
        with database.connect(autocommit=True) as conn:
            while not done.is_set():
                conn.execute(statement)
                time.sleep(0.01)

    writer = threading.Thread(target=drive)
    writer.start()
    try:
        yield
    finally:
        done.set()
        writer.join()


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg.errors.CannotConnectNow("the database system is shutting down"), True),
        (psycopg.errors.ConnectionFailure("connection failure"), True),
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        # a failing statement is not a lost server: reconnecting would hide it
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg.errors.UndefinedTable('relation "x" does not exist'), False),
        (psycopg.ProgrammingError("the query has 1 placeholder but 2 parameters"), False),
    ],
)
def test_only_a_lost_server_counts_as_a_lost_connection(error: psycopg.Error, lost: bool) -> None:
    assert connection_lost(error) is lost


def test_a_capture_starting_while_a_lag_measurement_peeks_at_the_slot_waits_for_it(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --every` measures the capture lag by peeking at the slot, which holds it while it
    decodes. A capture that checked the slot was free just before a measurement began found it
    busy when it started streaming and stopped with "lost the connection to the source: slot is
    active" (the demo's second run, in CI): it must wait for the measurement instead."""
    import riverbed.capture.runner as runner

    with database.connect(autocommit=True) as conn:
        conn.execute("create schema r; create table r.items (id int primary key, name text)")
    text = capture_config(tmp_path, database).read_text()
    config = tmp_path / "riverbed.yaml"
    config.write_text(text.replace("source:\n", TABLES, 1))
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    with database.connect(autocommit=True) as conn:
        # enough pending changes that decoding them holds the slot for a while
        conn.execute("insert into r.items select g, 'x' from generate_series(1, 200000) g")
    project = load_project(config)
    slot = SQLiteStore(project.path(project.config.state.path)).capture.names(
        project.config.source
    )[0]
    peeking = threading.Event()
    peeks: list[BaseException | int] = []

    def peek() -> None:
        try:
            with database.connect(autocommit=True) as conn:
                peeks.append(pid := conn.info.backend_pid)
                peeking.set()
                conn.execute(
                    "select count(*) from pg_logical_slot_peek_binary_changes(%s, null, null,"
                    " 'proto_version', '1', 'publication_names', 'riverbed')",
                    (slot,),
                )
                assert pid
        except BaseException as exc:
            peeks.append(exc)
            peeking.set()

    checked = runner.wait_while_peeked

    def measurement_begins_after_the_check(conn: Any, name: str, state: Any) -> Any:
        state = checked(conn, name, state)
        if peeks:  # waiting for the slot once the stream found it busy
            return state
        thread = threading.Thread(target=peek)
        thread.start()
        peeking.wait(30)
        with database.connect(autocommit=True) as watch:
            for _ in range(300):  # until the peek holds the slot
                row = watch.execute(
                    "select active_pid from pg_replication_slots where slot_name = %s", (slot,)
                ).fetchone()
                if row and row[0] == peeks[0]:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError(f"the peek never held the slot: {peeks}")
        return state  # as it was at the check: free

    monkeypatch.setattr(runner, "wait_while_peeked", measurement_begins_after_the_check)
    result = runner.run_capture(project, follow=False)
    assert result.stream is not None and result.stream.rows == 200000
    assert raw_rows(config) == list(range(1, 200001))
    assert not [p for p in peeks if isinstance(p, BaseException)], peeks
