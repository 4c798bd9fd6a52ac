"""What the load stage put in the warehouse, and what its staging tables hold meanwhile.

The load stages a table's pending batches into a staging table, applies them, and only once
the warehouse committed records them as loaded (riverbed.load.runner): a crash in between
applies them again, with the same result. Recording them empties the table's staging record
in the same transaction, so the next round stages afresh; a staging record that outlives a
failed run lets the next one resume from what staging holds.

A fact's load plan is kept beside its staging record, keyed by the batches it describes: a
plan recorded for other batches (staging loaded again since, by a version that recorded none)
is never taken for the current ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from riverbed.lake.layout import batch_of
from riverbed.state.records import LakeFile, LoadBatch, Staging
from riverbed.state.sql.database import Database, upsert
from riverbed.state.sql.lake_files import FILE_COLUMNS, lake_file

SCHEMA = """
create table if not exists load_batches (
  batch_id    text not null,
  table_name  text not null,
  target      text not null,
  rows        integer not null,
  seconds     real not null,
  loaded_at   real not null,
  primary key (table_name, batch_id)
);
create index if not exists load_batches_loaded_at on load_batches (loaded_at);
create table if not exists load_staged (
  table_name  text primary key,
  batch_ids   text not null,
  rows        integer not null,
  staged_at   real not null
);
-- a fact's staged rows as the staging load saw them: load order and window (facts.PlanOfParts)
create table if not exists load_plans (
  table_name  text primary key,
  batch_ids   text not null,  -- the load_staged batches it describes
  plan        text not null
);
"""


class SQLLoadState:
    def __init__(self, db: Database):
        self._db = db

    def unloaded(self, tables: Sequence[str] | None = None) -> list[LakeFile]:
        """The staged files (of ``tables``, or every table) whose batch is not loaded yet, in
        LSN order: found by the database, one probe of load_batches' key per staged file, not
        by reading every file and every loaded batch (runs every second after a day of
        `run --follow` had read hundreds of thousands of rows each). A file recorded by an
        earlier release, without its batch_id, shows up here (no loaded batch matches null)
        and is given it from its path, once: opening a store never writes."""
        query = (
            f"select {FILE_COLUMNS}, batch_id from lake_files f where stage = 'staged'"
            " and not exists (select 1 from load_batches b where b.table_name = f.table_name"
            " and b.batch_id = f.batch_id)"
        )
        params: tuple[Any, ...] = ()
        if tables is not None:
            query += f" and table_name in ({', '.join('?' * len(tables)) or 'null'})"
            params = tuple(tables)
        query += " order by min_lsn, path"
        rows = self._db.rows(query, params)
        unnamed = [(batch_of(r[0]), r[0]) for r in rows if r[-1] is None and batch_of(r[0])]
        if unnamed:
            with self._db.write() as db:
                db.executemany("update lake_files set batch_id = ? where path = ?", unnamed)
            rows = self._db.rows(query, params)
        return [lake_file(r[:-1]) for r in rows]

    def stage(self, staging: Staging) -> None:
        """Record what ``staging.table``'s staging table holds now (and its plan, if any)."""
        batch_ids = _encode(staging.batch_ids)
        with self._db.write() as db:
            db.execute(
                upsert(
                    "load_staged", ("table_name", "batch_ids", "rows", "staged_at"), ("table_name",)
                ),
                (staging.table, batch_ids, staging.rows, staging.staged_at),
            )
            if staging.plan is not None:
                db.execute(
                    upsert("load_plans", ("table_name", "batch_ids", "plan"), ("table_name",)),
                    (staging.table, batch_ids, staging.plan),
                )

    def staging(self, table: str) -> Staging | None:
        """What ``table``'s staging table holds, not applied yet; None when nothing."""
        row = self._db.row(
            "select s.batch_ids, s.rows, s.staged_at, p.plan from load_staged s"
            " left join load_plans p"
            " on p.table_name = s.table_name and p.batch_ids = s.batch_ids"
            " where s.table_name = ?",
            (table,),
        )
        if row is None:
            return None
        return Staging(
            table=table,
            batch_ids=tuple(json.loads(row[0])),
            rows=row[1],
            staged_at=row[2],
            plan=row[3],
        )

    def unstage(self, table: str) -> None:
        """Forget what ``table``'s staging holds: it is stale, and staged again."""
        with self._db.write() as db:
            db.execute("delete from load_staged where table_name = ?", (table,))

    def record_loaded(self, batches: Iterable[LoadBatch]) -> None:
        """Record ``batches`` as loaded, and their tables' staging as applied, at once."""
        rows = [_row(b) for b in batches]
        with self._db.write() as db:
            db.executemany(
                upsert(
                    "load_batches",
                    ("batch_id", "table_name", "target", "rows", "seconds", "loaded_at"),
                    ("table_name", "batch_id"),
                    ":batch_id, :table, :target, :rows, :seconds, :loaded_at",
                ),
                rows,
            )
            db.executemany(
                "delete from load_staged where table_name = ?",
                [(table,) for table in sorted({r["table"] for r in rows})],
            )

    def loaded(self, table: str | None = None, since: float | None = None) -> list[LoadBatch]:
        """The batches loaded (of ``table``, or every table; ``since``: those recorded after
        that time only, found by loaded_at's index: a refresh asks for the few since its last,
        however long the history), oldest first."""
        query = "select batch_id, table_name, target, rows, seconds, loaded_at from load_batches"
        found: list[str] = []
        params: tuple[Any, ...] = ()
        if table is not None:
            found.append("table_name = ?")
            params += (table,)
        if since is not None:
            found.append("loaded_at > ?")
            params += (since,)
        if found:
            query += " where " + " and ".join(found)
        query += " order by loaded_at, table_name, batch_id"
        rows = self._db.rows(query, params)
        return [
            LoadBatch(
                batch_id=r[0], table=r[1], target=r[2], rows=r[3], seconds=r[4], loaded_at=r[5]
            )
            for r in rows
        ]

    def forget_loaded(self, table: str, batch_ids: Iterable[str]) -> None:
        """Batches of ``table`` the transform withdrew: no longer loaded."""
        with self._db.write() as db:
            db.executemany(
                "delete from load_batches where table_name = ? and batch_id = ?",
                [(table, b) for b in batch_ids],
            )

    def last_loaded_at(self) -> float | None:
        """When the newest batch was recorded as loaded; None before the first."""
        (loaded_at,) = self._db.row("select max(loaded_at) from load_batches")
        return None if loaded_at is None else float(loaded_at)


def _encode(batch_ids: Iterable[str]) -> str:
    # the text both tables hold and the plan's key compares: json.dumps of the list, as every
    # version has written it
    return json.dumps(list(batch_ids))


def _row(batch: LoadBatch) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "table": batch.table,
        "target": batch.target,
        "rows": batch.rows,
        "seconds": batch.seconds,
        "loaded_at": batch.loaded_at,
    }
