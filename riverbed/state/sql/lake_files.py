"""The lake's manifest: which files exist for the stages that follow, and the captured tables'
schema versions.

A file in the lake is invisible until its row here is committed. Capture commits the rows of
every file of a flush together with the new source position in ONE transaction, and only then
confirms that position to the replication slot (riverbed.capture.stream); the transform commits
its outputs with its bookmarks the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from riverbed.state.records import LakeFile, SchemaVersion, TableSummary
from riverbed.state.sql.database import Database, upsert

SCHEMA = """
create table if not exists lake_files (
  path           text primary key,
  stage          text not null,
  table_name     text not null,
  rows           integer not null,
  bytes          integer not null,
  min_lsn        integer not null,
  max_lsn        integer not null,
  schema_version integer not null,
  full_load      integer not null default 0,
  slot           text,
  created_at     real not null,
  -- a raw file's first and last commit time, microseconds since the epoch (UTC); null for
  -- files recorded before these columns were (see LakeFile.committed_from)
  min_commit_ts  integer,
  max_commit_ts  integer
);
create index if not exists lake_files_by_table on lake_files (stage, table_name, max_lsn);
-- `run --follow` asks for the newest file of a stage every ~0.1 s: one index probe
create index if not exists lake_files_by_created on lake_files (stage, created_at);
create table if not exists table_schemas (
  table_name  text not null,
  version     integer not null,
  columns     text not null,
  first_lsn   integer not null,
  created_at  real not null,
  primary key (table_name, version)
);
"""
# columns a store created by an earlier release lacks
# (batch_id: a staged or quarantined file's transform batch, the ``batch=<id>`` of its path, so
# that the batches not loaded yet are found by the database, not by reading every staged file;
# null for the files of an earlier release until SQLLoadState.unloaded names them)
ADDED_COLUMNS = {
    "lake_files": {"min_commit_ts": "integer", "max_commit_ts": "integer", "batch_id": "text"}
}

FILE_COLUMNS = (
    "path, stage, table_name, rows, bytes, min_lsn, max_lsn, schema_version, full_load, "
    "min_commit_ts, max_commit_ts"
)


class SQLLakeFiles:
    def __init__(self, db: Database):
        self._db = db

    def add(self, files: Iterable[LakeFile], slot: str | None = None) -> None:
        """Make ``files`` visible (captured through ``slot``, for capture's own files)."""
        now = time.time()
        with self._db.write() as db:
            db.executemany(
                upsert(
                    "lake_files",
                    (*FILE_COLUMNS.split(", "), "slot", "created_at", "batch_id"),
                    ("path",),
                    ":path, :stage, :table, :rows, :bytes, :min_lsn, :max_lsn,"
                    " :schema_version, :full_load, :min_commit_ts, :max_commit_ts, :slot,"
                    " :created_at, :batch_id",
                ),
                [
                    {
                        "path": f.path,
                        "stage": f.stage,
                        "table": f.table,
                        "rows": f.rows,
                        "bytes": f.bytes,
                        "min_lsn": f.min_lsn,
                        "max_lsn": f.max_lsn,
                        "schema_version": f.schema_version,
                        "full_load": int(f.full_load),
                        "slot": slot,
                        "created_at": now,
                        "min_commit_ts": f.min_commit_ts,
                        "max_commit_ts": f.max_commit_ts,
                        "batch_id": f.batch_id,
                    }
                    for f in files
                ],
            )

    def remove(self, paths: Iterable[str]) -> None:
        """Make the files at ``paths`` invisible (the caller deletes them after)."""
        with self._db.write() as db:
            db.executemany("delete from lake_files where path = ?", [(p,) for p in paths])

    def resized(self, path: str, size: int) -> None:
        """``path`` was rewritten in place (an erasure scrubbed it): its new size in bytes.
        Nothing else of its record changes: the same rows at the same positions."""
        with self._db.write() as db:
            db.execute("update lake_files set bytes = ? where path = ?", (size, path))

    def files(self, stage: str, table: str | None = None) -> list[LakeFile]:
        """Visible files of a stage (optionally one table), in LSN order."""
        query = f"select {FILE_COLUMNS} from lake_files where stage = ?"
        params: tuple[Any, ...] = (stage,)
        if table is not None:
            query += " and table_name = ?"
            params += (table,)
        query += " order by min_lsn, path"
        rows = self._db.rows(query, params)
        return [lake_file(r) for r in rows]

    def newest(self, stage: str) -> float | None:
        """When the newest visible file of ``stage`` was made visible (its ``created_at``,
        the committing host's clock), None when there is none: the high-water mark `run
        --follow` watches, one index probe however many files there are."""
        row = self._db.row("select max(created_at) from lake_files where stage = ?", (stage,))
        return None if row is None or row[0] is None else float(row[0])

    def tables(self, stage: str) -> list[str]:
        """The tables with visible files at ``stage``."""
        rows = self._db.rows(
            "select distinct table_name from lake_files where stage = ? order by 1", (stage,)
        )
        return [r[0] for r in rows]

    def summary(self, stage: str) -> dict[str, TableSummary]:
        """Per table: files, rows, newest schema version, when its newest file landed."""
        rows = self._db.rows(
            "select table_name, count(*), sum(rows), max(schema_version), max(created_at),"
            " coalesce(sum(case when full_load <> 0 then rows end), 0)"
            " from lake_files where stage = ? group by 1 order by 1",
            (stage,),
        )
        return {
            r[0]: TableSummary(
                files=r[1], rows=r[2], schema_version=r[3], landed_at=r[4], snapshot_rows=r[5]
            )
            for r in rows
        }

    def add_schemas(self, schemas: Iterable[SchemaVersion]) -> None:
        """Record new schema versions of captured tables (a version already known stays)."""
        now = time.time()
        with self._db.write() as db:
            db.executemany(
                "insert into table_schemas (table_name, version, columns, first_lsn,"
                " created_at) values (?, ?, ?, ?, ?) on conflict do nothing",
                [(s.table, s.version, json.dumps(s.columns), s.first_lsn, now) for s in schemas],
            )

    def schema_versions(self, table: str) -> list[SchemaVersion]:
        """Every schema version of a captured table, oldest first."""
        rows = self._db.rows(
            "select version, columns, first_lsn from table_schemas where table_name = ?"
            " order by version",
            (table,),
        )
        return [SchemaVersion(table, r[0], json.loads(r[1]), r[2]) for r in rows]


def lake_file(row: Any) -> LakeFile:
    return LakeFile(
        path=row[0],
        stage=row[1],
        table=row[2],
        rows=row[3],
        bytes=row[4],
        min_lsn=row[5],
        max_lsn=row[6],
        schema_version=row[7],
        full_load=bool(row[8]),
        min_commit_ts=row[9],
        max_commit_ts=row[10],
    )
