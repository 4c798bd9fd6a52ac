"""The chaos frame's own footing: where it takes the source to be when it waits for the pipeline
to catch up (frame.source_position) covers every commit, also those made with synchronous_commit
off, as the workload makes them. pg_current_wal_lsn(), which it took before, is where WAL has
been written to: the workload's last commits could be past it, the catch-up ended before their
rows were in the lake, and a check then found them missing from the warehouse."""

from __future__ import annotations

import time
from typing import Any

from chaos.frame import source_position
from conftest import Database
from riverbed.lake.positions import format_lsn, parse_lsn


def lsn(conn: Any, function: str) -> int:
    return parse_lsn(conn.execute(f"select {function}::text").fetchone()[0])


def test_the_source_position_covers_commits_whose_wal_is_not_written_yet(
    own_database: Database,
) -> None:
    with own_database.connect(autocommit=True) as conn:
        # the WAL writer wakes every 10 s: an asynchronous commit's WAL waits that long to be
        # written, unless a full page or another backend's synchronous commit writes it first
        conn.execute("alter system set wal_writer_delay = '10s'")
        conn.execute("select pg_reload_conf()")
        time.sleep(0.5)  # the WAL writer takes the setting on its next wake-up
        conn.execute("create table public.traffic (id int)")
        conn.execute("set synchronous_commit = off")
        for attempt in range(5):  # a commit that filled a page is written at once: again
            conn.execute("insert into public.traffic values (%s)", (attempt,))
            committed = lsn(conn, "pg_current_wal_insert_lsn()")
            written = lsn(conn, "pg_current_wal_lsn()")
            if written < committed:
                break
        assert written < committed, "every asynchronous commit was written at once"

    position = source_position(own_database)

    assert position >= committed, (
        f"the source position {format_lsn(position)} is before the last commit, which ends at "
        f"{format_lsn(committed)} (WAL written up to {format_lsn(written)})"
    )
