"""Erasure requests (`riverbed forget TABLE KEY`) and the tombstones they leave.

A request is recorded before anything is erased and marked done once every copy is scrubbed:
a request still open is an erasure a kill interrupted, which the next `riverbed forget`
finishes. The row stays afterwards as the tombstone the transform reads, so later changes of
the key captured from the source are scrubbed before they are staged. It holds the table and
the key, the data subject's identifier, never the values erased.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from riverbed.state.records import Tombstone
from riverbed.state.sql.database import Database

SCHEMA = """
create table if not exists erasures (
  table_name    text not null,
  key_text      text not null,  -- the key as `riverbed forget` names it (values joined by ',')
  requested_at  real not null,
  completed_at  real,           -- null while the erasure is under way
  primary key (table_name, key_text)
);
"""


class SQLErasureLog:
    def __init__(self, db: Database):
        self._db = db

    def request(self, table: str, keys: Iterable[str]) -> None:
        """Record the erasure of ``keys`` of ``table`` as under way (again, when done before:
        a rerun erases anew whatever came back since)."""
        now = time.time()
        with self._db.write() as db:
            db.executemany(
                "insert into erasures (table_name, key_text, requested_at) values (?, ?, ?)"
                " on conflict (table_name, key_text) do update set completed_at = null",
                [(table, key, now) for key in keys],
            )

    def complete(self, table: str, keys: Iterable[str]) -> None:
        now = time.time()
        with self._db.write() as db:
            db.executemany(
                "update erasures set completed_at = ? where table_name = ? and key_text = ?",
                [(now, table, key) for key in keys],
            )

    def tombstones(self, table: str | None = None) -> list[Tombstone]:
        """Every erasure of ``table`` (None: of every table), under way or done, oldest first."""
        query = "select table_name, key_text, requested_at, completed_at from erasures"
        params: tuple[str, ...] = ()
        if table is not None:
            query += " where table_name = ?"
            params = (table,)
        rows = self._db.rows(query + " order by requested_at, table_name, key_text", params)
        return [Tombstone(table=r[0], key=r[1], requested_at=r[2], completed_at=r[3]) for r in rows]

    def compact(self) -> None:
        """Rewrite the store without its free space (riverbed.state.sql.database), so values
        deleted from the store no longer sit in freed blocks."""
        self._db.compact()
