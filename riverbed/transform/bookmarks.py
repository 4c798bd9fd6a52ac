"""Bookmarks: which raw files each table's transform has consumed, kept in the state store.

A batch's staged and quarantined files, its bookmarks (the raw files it consumed) and its quality
results are committed in ONE state-store transaction, after every output file is written. So a
crash before that commit leaves only orphan files (the rerun takes the same inputs, derives the
same batch id, and overwrites them with the same content); a crash after it leaves nothing to
redo. A file is never skipped and never processed twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from riverbed.lake.batches import SCHEMA, bad_files, quality_results, withdraw_batches
from riverbed.state import LakeFile, StateStore


@dataclass(frozen=True)
class RuleResult:
    rule: str  # the rule's label
    rule_type: str
    action: str
    checked: int
    failed: int
    status: str  # pass | warn | fail | quarantined
    observed: str | None = None
    samples: list[Any] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.failed / self.checked if self.checked else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "type": self.rule_type,
            "action": self.action,
            "checked": self.checked,
            "failed": self.failed,
            "ratio": round(self.ratio, 6),
            "status": self.status,
            "observed": self.observed,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Batch:
    """A set of raw files of one table, transformed together."""

    table: str
    files: tuple[LakeFile, ...]

    @property
    def batch_id(self) -> str:
        """Stable across retries of the same input: the newest LSN it holds, then a digest of
        the input paths (so a rewound, re-planned batch never reuses an old id)."""
        digest = hashlib.sha256("\n".join(f.path for f in self.files).encode()).hexdigest()
        return f"{self.max_lsn:016X}-{digest[:10]}"

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def min_lsn(self) -> int:
        return min(f.min_lsn for f in self.files)

    @property
    def max_lsn(self) -> int:
        return max(f.max_lsn for f in self.files)


@dataclass(frozen=True)
class BatchOutcome:
    batch: Batch
    engine: str
    rows_in: int
    rows_out: int
    rows_quarantined: int
    outputs: list[LakeFile]
    results: list[RuleResult]
    seconds: float


class Bookmarks:
    """The transform's state in the state store, beside the manifest it commits with."""

    def __init__(self, manifest: StateStore):
        self.manifest = manifest
        manifest.ensure_schema(SCHEMA)

    def pending(self, table: str) -> list[LakeFile]:
        """Raw files of ``table`` no batch has consumed, in source order."""
        done = {
            r[0]
            for r in self.manifest.query(
                "select path from transform_inputs where table_name = ?", (table,)
            )
        }
        return [f for f in self.manifest.lake.files("raw", table) if f.path not in done]

    def plan(self, table: str, batch_rows: int) -> list[Batch]:
        """The pending files cut into batches of about ``batch_rows`` rows (whole files)."""
        batches: list[Batch] = []
        current: list[LakeFile] = []
        rows = 0
        for file in self.pending(table):
            if current and rows + file.rows > batch_rows:
                batches.append(Batch(table, tuple(current)))
                current, rows = [], 0
            current.append(file)
            rows += file.rows
        if current:
            batches.append(Batch(table, tuple(current)))
        return batches

    def commit(self, outcome: BatchOutcome) -> None:
        """Make a batch's outputs visible and consume its inputs, atomically."""
        now = time.time()
        batch = outcome.batch
        with self.manifest.transaction() as db:
            self.manifest.lake.add(outcome.outputs)
            db.executemany(
                "insert or replace into transform_inputs values (?, ?, ?)",
                [(f.path, batch.table, batch.batch_id) for f in batch.files],
            )
            self._record(db, outcome, "staged", None, now)

    def record_failure(self, outcome: BatchOutcome, error: str) -> None:
        """A batch stopped by a quality rule with action fail: results kept, nothing consumed."""
        with self.manifest.transaction() as db:
            self._record(db, outcome, "failed", error, time.time())

    def _record(
        self, db: Any, outcome: BatchOutcome, status: str, error: str | None, now: float
    ) -> None:
        batch = outcome.batch
        db.execute(
            "insert or replace into transform_batches values"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch.batch_id,
                batch.table,
                outcome.engine,
                status,
                len(batch.files),
                outcome.rows_in,
                outcome.rows_out,
                outcome.rows_quarantined,
                batch.min_lsn,
                batch.max_lsn,
                outcome.seconds,
                error,
                now,
            ),
        )
        db.execute("delete from quality_results where batch_id = ?", (batch.batch_id,))
        db.executemany(
            "insert into quality_results values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    batch.batch_id,
                    batch.table,
                    r.rule,
                    r.rule_type,
                    r.action,
                    r.checked,
                    r.failed,
                    r.ratio,
                    r.status,
                    r.observed,
                    json.dumps(r.samples, default=str),
                    now,
                )
                for r in outcome.results
            ],
        )

    def quarantine_file(self, file: LakeFile, moved_to: str, reason: str) -> None:
        """A raw file that cannot be read: consumed by no batch, recorded, visible as bad."""
        now = time.time()
        with self.manifest.transaction() as db:
            self.manifest.lake.remove([file.path])
            self.manifest.lake.add([dataclasses.replace(file, path=moved_to, stage="bad")])
            db.execute(
                "insert or replace into bad_files values (?, ?, ?, ?, ?)",
                (file.path, file.table, moved_to, reason, now),
            )

    def recent_counts(self, table: str, limit: int = 10) -> list[int]:
        """Row counts of the table's last staged batches, oldest first."""
        rows = self.manifest.query(
            "select rows_in from transform_batches where table_name = ? and status = 'staged'"
            " order by max_lsn desc, created_at desc limit ?",
            (table, limit),
        )
        return [int(r[0]) for r in reversed(rows)]

    def rewind(self, table: str, from_lsn: int) -> list[dict[str, Any]]:
        """Forget every batch of ``table`` that consumed a raw file holding changes at or after
        ``from_lsn`` (riverbed.lake.batches.withdraw_batches). Returns the batches forgotten,
        which downstream stages will reload."""
        return withdraw_batches(self.manifest, table, from_lsn)

    def results(self, table: str | None = None, limit_batches: int = 1) -> list[dict[str, Any]]:
        """Quality results of each table's latest ``limit_batches`` batches."""
        return quality_results(self.manifest, table, limit_batches)

    def bad_files(self) -> list[dict[str, Any]]:
        return bad_files(self.manifest)


def batches_total(batches: Sequence[Batch]) -> int:
    return sum(b.rows for b in batches)
