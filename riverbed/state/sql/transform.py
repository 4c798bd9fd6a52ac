"""The transform's records: its batches, the raw files they consumed, their quality results,
the batches taken back, the raw files set aside as bad.

A batch's outputs, the raw files it consumed and its results are committed in ONE transaction
(commit), so a raw file is consumed exactly when its batch's output is visible. A withdrawn
batch (withdraw) gives its raw files back and hides its staged files in the same way; the load
reads which batches were withdrawn (withdrawn) to take their rows out of the warehouse, then
forgets them (forget_withdrawn). Status reads the results and bad files, and `run`'s check the
raw files still pending, without importing the transform.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from riverbed.state.records import (
    BadFile,
    BatchQuality,
    BatchRecord,
    LakeFile,
    QualityResult,
    RuleTotals,
    WithdrawnBatch,
)
from riverbed.state.sql.database import Database, upsert
from riverbed.state.sql.lake_files import FILE_COLUMNS, SQLLakeFiles, lake_file

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


_BATCH_COLUMNS = (
    "batch_id",
    "table_name",
    "engine",
    "status",
    "input_files",
    "rows_in",
    "rows_out",
    "rows_quarantined",
    "min_lsn",
    "max_lsn",
    "seconds",
    "error",
    "created_at",
)


class SQLTransformState:
    def __init__(self, db: Database, lake: SQLLakeFiles):
        self._db = db
        self._lake = lake

    def pending(self, table: str) -> list[LakeFile]:
        """Raw files of ``table`` no batch has consumed, in source order: found by the
        database (one probe of transform_inputs' key per raw file), not by reading every raw
        file and every consumed path."""
        rows = self._db.rows(
            f"select {FILE_COLUMNS} from lake_files f where stage = 'raw' and table_name = ?"
            " and not exists (select 1 from transform_inputs i where i.path = f.path)"
            " order by min_lsn, path",
            (table,),
        )
        return [lake_file(r) for r in rows]

    def pending_raw_files(self, tables: Sequence[str] | None = None) -> list[str]:
        """Raw files (of ``tables``, or all) not consumed by a batch nor set aside as bad."""
        query = (
            "select path from lake_files f where stage = 'raw'"
            " and not exists (select 1 from transform_inputs i where i.path = f.path)"
            " and not exists (select 1 from bad_files b where b.path = f.path)"
        )
        params: tuple[Any, ...] = ()
        if tables:
            query += f" and table_name in ({', '.join('?' * len(tables))})"
            params = tuple(tables)
        with self._db.read() as db:
            return [r[0] for r in db.execute(query, params)]

    def commit(
        self,
        batch: BatchRecord,
        inputs: Iterable[str],
        results: Iterable[QualityResult],
        outputs: Iterable[LakeFile],
    ) -> None:
        """Make a batch's ``outputs`` visible and consume its ``inputs`` (raw file paths),
        atomically, with its record and results."""
        with self._db.write() as db:
            self._lake.add(outputs)
            db.executemany(
                upsert("transform_inputs", ("path", "table_name", "batch_id"), ("path",)),
                [(path, batch.table, batch.batch_id) for path in inputs],
            )
            self.record(batch, results)

    def record(self, batch: BatchRecord, results: Iterable[QualityResult]) -> None:
        """Record a batch and its rules' results (replacing those of an earlier attempt),
        consuming nothing: a batch a quality rule failed."""
        now = time.time()
        with self._db.write() as db:
            db.execute(
                upsert(
                    "transform_batches",
                    _BATCH_COLUMNS,
                    ("batch_id",),
                    ", ".join(f":{c}" for c in _BATCH_COLUMNS).replace(":table_name", ":table"),
                ),
                {**dataclasses.asdict(batch), "created_at": now},
            )
            db.execute("delete from quality_results where batch_id = ?", (batch.batch_id,))
            db.executemany(
                "insert into quality_results (batch_id, table_name, rule, rule_type, action,"
                " checked, failed, ratio, status, observed, samples, created_at) values"
                " (:batch_id, :table, :rule, :rule_type, :action, :checked, :failed, :ratio,"
                " :status, :observed, :samples, :created_at)",
                [
                    {
                        **dataclasses.asdict(r),
                        "ratio": r.ratio,
                        "batch_id": batch.batch_id,
                        "table": batch.table,
                        "samples": json.dumps(r.samples, default=str),
                        "created_at": now,
                    }
                    for r in results
                ],
            )

    def set_aside(self, file: LakeFile, moved_to: str, reason: str) -> None:
        """A raw file that cannot be read, moved to ``moved_to``: consumed by no batch,
        recorded, visible as a file of stage bad instead, atomically."""
        with self._db.write() as db:
            self._lake.remove([file.path])
            self._lake.add([dataclasses.replace(file, path=moved_to, stage="bad")])
            db.execute(
                upsert(
                    "bad_files",
                    ("path", "table_name", "moved_to", "reason", "created_at"),
                    ("path",),
                ),
                (file.path, file.table, moved_to, reason, time.time()),
            )

    def recent_counts(self, table: str, limit: int = 10) -> list[int]:
        """Rows in of the table's last ``limit`` staged batches, oldest first."""
        rows = self._db.rows(
            "select rows_in from transform_batches where table_name = ?"
            " and status = 'staged' order by max_lsn desc, created_at desc limit ?",
            (table, limit),
        )
        return [int(r[0]) for r in reversed(rows)]

    def withdraw(self, table: str, from_lsn: int) -> list[WithdrawnBatch]:
        """Take back every staged batch of ``table`` that consumed a raw file holding changes
        at or after ``from_lsn``: its inputs become pending again, its staged and quarantined
        files leave the manifest (the next run stages them anew), and it waits in
        ``withdrawn`` for the load to take its rows out. The batches taken back, in LSN
        order."""
        with self._db.write() as db:
            rows = db.execute(
                "select batch_id, rows_out, rows_quarantined, min_lsn, max_lsn"
                " from transform_batches where table_name = ? and status = 'staged'"
                " and max_lsn >= ? order by max_lsn",
                (table, from_lsn),
            ).fetchall()
            batches = [
                WithdrawnBatch(
                    batch_id=r[0], rows=r[1], rows_quarantined=r[2], min_lsn=r[3], max_lsn=r[4]
                )
                for r in rows
            ]
            ids = {b.batch_id for b in batches}
            # the staged and quarantined files of the batches, told by their batch folder
            outputs = [
                f.path
                for stage in ("staged", "quarantine")
                for f in self._lake.files(stage, table)
                if f.batch_id in ids
            ]
            self._lake.remove(outputs)
            for batch in batches:
                # the load takes the batch's rows out of the warehouse before it loads what
                # replaces them (possibly under the same id)
                db.execute(
                    upsert(
                        "transform_withdrawals",
                        ("batch_id", "table_name", "created_at"),
                        ("table_name", "batch_id"),
                    ),
                    (batch.batch_id, table, time.time()),
                )
                db.execute("delete from transform_inputs where batch_id = ?", (batch.batch_id,))
                db.execute(
                    "update transform_batches set status = 'superseded' where batch_id = ?",
                    (batch.batch_id,),
                )
        return batches

    def withdrawn(self, table: str) -> list[str]:
        """The ids of ``table``'s batches withdrawn whose rows the load has not taken out of
        the warehouse yet (forget_withdrawn)."""
        rows = self._db.rows(
            "select batch_id from transform_withdrawals where table_name = ?"
            " order by created_at, batch_id",
            (table,),
        )
        return [r[0] for r in rows]

    def forget_withdrawn(self, table: str, batch_ids: Iterable[str]) -> None:
        """The load took these withdrawn batches' rows out: they are withdrawn no longer."""
        with self._db.write() as db:
            db.executemany(
                "delete from transform_withdrawals where table_name = ? and batch_id = ?",
                [(table, b) for b in batch_ids],
            )

    def quality(self, table: str | None = None, limit_batches: int = 1) -> list[BatchQuality]:
        """Each table's (or ``table``'s) latest ``limit_batches`` staged or failed batches
        with their results: by table, newest first."""
        query = (
            "select table_name, batch_id, status, rows_in, rows_out, rows_quarantined,"
            " created_at from transform_batches where status in ('staged', 'failed')"
        )
        params: tuple[Any, ...] = ()
        if table is not None:
            query += " and table_name = ?"
            params = (table,)
        query += " order by table_name, created_at desc"
        out: list[BatchQuality] = []
        seen: dict[str, int] = {}
        with self._db.read() as db:
            for row in db.execute(query, params).fetchall():
                if seen.get(row[0], 0) >= limit_batches:
                    continue
                seen[row[0]] = seen.get(row[0], 0) + 1
                out.append(
                    BatchQuality(
                        table=row[0],
                        batch_id=row[1],
                        status=row[2],
                        rows_in=row[3],
                        rows_out=row[4],
                        rows_quarantined=row[5],
                        at=row[6],
                        results=self._results(db, row[1]),
                    )
                )
        return out

    @staticmethod
    def _results(db: Any, batch_id: str) -> list[QualityResult]:
        rows = db.execute(
            "select rule, rule_type, action, checked, failed, ratio, status, observed, samples"
            " from quality_results where batch_id = ? order by rowid",
            (batch_id,),
        ).fetchall()
        return [
            QualityResult(
                rule=r[0],
                rule_type=r[1],
                action=r[2],
                checked=r[3],
                failed=r[4],
                status=r[6],
                observed=r[7],
                samples=json.loads(r[8]),
            )
            for r in rows
        ]

    def failing_rules(self) -> list[RuleTotals]:
        """The rules that failed rows in any batch, summed per table and rule, by name."""
        rows = self._db.rows(
            "select table_name, rule, sum(checked), sum(failed), max(status)"
            " from quality_results group by table_name, rule having sum(failed) > 0"
            " order by 1, 2"
        )
        return [
            RuleTotals(table=r[0], rule=r[1], checked=r[2], failed=r[3], status=r[4]) for r in rows
        ]

    def quarantined_rows(self) -> int:
        """Rows quarantined by every batch ever recorded."""
        (total,) = self._db.row("select sum(rows_quarantined) from transform_batches")
        return int(total or 0)

    def bad_files(self) -> list[BadFile]:
        """The raw files set aside as unreadable, oldest first."""
        rows = self._db.rows(
            "select path, table_name, moved_to, reason, created_at from bad_files"
            " order by created_at"
        )
        return [BadFile(path=r[0], table=r[1], moved_to=r[2], reason=r[3], at=r[4]) for r in rows]
