"""The transform's records in the state store: its batches, the raw files they consumed, their
quality results, the batches taken back, the raw files set aside as bad.

The transform writes them (riverbed.transform.bookmarks); other stages read them here (status
shows quality results and bad files) or take batches back (a resnapshot withdraws every fact's
batches, as `run --reprocess` does) without importing the transform.
"""

from __future__ import annotations

import json
import time
from typing import Any

from riverbed.lake.layout import batch_of
from riverbed.state import StateStore

SCHEMA = """
create table if not exists transform_batches (
  batch_id          text primary key,
  table_name        text not null,
  engine            text not null,
  status            text not null,      -- staged | failed | superseded
  input_files       integer not null,
  rows_in           integer not null,
  rows_out          integer not null,
  rows_quarantined  integer not null,
  min_lsn           integer not null,
  max_lsn           integer not null,
  seconds           real not null,
  error             text,
  created_at        real not null
);
create index if not exists transform_batches_by_table on transform_batches (table_name, created_at);
create table if not exists transform_inputs (
  path        text primary key,
  table_name  text not null,
  batch_id    text not null
);
create table if not exists quality_results (
  batch_id    text not null,
  table_name  text not null,
  rule        text not null,
  rule_type   text not null,
  action      text not null,
  checked     integer not null,
  failed      integer not null,
  ratio       real not null,
  status      text not null,            -- pass | warn | fail | quarantined
  observed    text,
  samples     text not null,            -- JSON list of key values of failing rows
  created_at  real not null,
  primary key (batch_id, rule)
);
create table if not exists transform_withdrawals (
  batch_id    text not null,            -- a staged batch `run --reprocess` took back
  table_name  text not null,
  created_at  real not null,
  primary key (table_name, batch_id)
);
create table if not exists bad_files (
  path        text primary key,         -- where the raw file was
  table_name  text not null,
  moved_to    text not null,
  reason      text not null,
  created_at  real not null
);
"""


def withdraw_batches(manifest: StateStore, table: str, from_lsn: int) -> list[dict[str, Any]]:
    """Forget every batch of ``table`` that consumed a raw file holding changes at or after
    ``from_lsn``: its inputs become pending again and its staged and quarantined files leave
    the manifest (the next run stages them anew; the load stage takes their fact rows out
    first, see transform_withdrawals). Returns the batches
    forgotten, which downstream stages will reload."""
    manifest.ensure_schema(SCHEMA)
    batches = manifest.query(
        "select batch_id, rows_out, rows_quarantined, min_lsn, max_lsn from transform_batches"
        " where table_name = ? and status = 'staged' and max_lsn >= ? order by max_lsn",
        (table, from_lsn),
    )
    ids = [r[0] for r in batches]
    forgotten = set(ids)
    with manifest.transaction() as db:
        # the staged and quarantined files of the forgotten batches, told by their folder
        withdrawn = [
            (path,)
            for (path,) in db.execute(
                "select path from lake_files where stage in ('staged', 'quarantine')"
                " and table_name = ?",
                (table,),
            )
            if batch_of(path) in forgotten
        ]
        db.executemany("delete from lake_files where path = ?", withdrawn)
        for batch_id in ids:
            # the load stage takes the batch's rows out of the warehouse before it loads
            # what replaces them (possibly under the same id)
            db.execute(
                "insert or replace into transform_withdrawals values (?, ?, ?)",
                (batch_id, table, time.time()),
            )
            db.execute("delete from transform_inputs where batch_id = ?", (batch_id,))
            db.execute(
                "update transform_batches set status = 'superseded' where batch_id = ?",
                (batch_id,),
            )
    return [
        {"batch_id": r[0], "rows": r[1], "quarantined": r[2], "min_lsn": r[3], "max_lsn": r[4]}
        for r in batches
    ]


def quality_results(
    manifest: StateStore, table: str | None = None, limit_batches: int = 1
) -> list[dict[str, Any]]:
    """Quality results of each table's latest ``limit_batches`` batches."""
    manifest.ensure_schema(SCHEMA)
    query = (
        "select b.table_name, b.batch_id, b.status, b.rows_in, b.rows_out,"
        " b.rows_quarantined, b.created_at from transform_batches b"
        " where b.status in ('staged', 'failed')"
    )
    params: tuple[Any, ...] = ()
    if table is not None:
        query += " and b.table_name = ?"
        params = (table,)
    query += " order by b.table_name, b.created_at desc"
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in manifest.query(query, params):
        if seen.get(row[0], 0) >= limit_batches:
            continue
        seen[row[0]] = seen.get(row[0], 0) + 1
        rules = manifest.query(
            "select rule, rule_type, action, checked, failed, ratio, status, observed,"
            " samples from quality_results where batch_id = ? order by rowid",
            (row[1],),
        )
        out.append(
            {
                "table": row[0],
                "batch_id": row[1],
                "status": row[2],
                "rows_in": row[3],
                "rows_out": row[4],
                "rows_quarantined": row[5],
                "at": row[6],
                "rules": [
                    {
                        "rule": r[0],
                        "type": r[1],
                        "action": r[2],
                        "checked": r[3],
                        "failed": r[4],
                        "ratio": r[5],
                        "status": r[6],
                        "observed": r[7],
                        "samples": json.loads(r[8]),
                    }
                    for r in rules
                ],
            }
        )
    return out


def bad_files(manifest: StateStore) -> list[dict[str, Any]]:
    """The raw files the transform set aside as unreadable, oldest first."""
    manifest.ensure_schema(SCHEMA)
    rows = manifest.query(
        "select path, table_name, moved_to, reason, created_at from bad_files order by 5"
    )
    return [
        {"path": r[0], "table": r[1], "moved_to": r[2], "reason": r[3], "at": r[4]} for r in rows
    ]
