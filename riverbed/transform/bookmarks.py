"""Bookmarks: which raw files each table's transform has consumed, kept in the state store
(store.transform, riverbed.state.sql.transform).

A batch's staged and quarantined files, its bookmarks (the raw files it consumed) and its quality
results are committed in ONE state-store transaction, after every output file is written. So a
crash before that commit leaves only orphan files (the rerun takes the same inputs, derives the
same batch id, and overwrites them with the same content); a crash after it leaves nothing to
redo. A file is never skipped and never processed twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from riverbed.state import LakeFile, StateStore
from riverbed.state.records import BatchRecord, QualityResult


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
    results: list[QualityResult]
    seconds: float


class Bookmarks:
    """The transform's plan of batches over the raw files pending, and its batches' records
    in the state store (store.transform)."""

    def __init__(self, manifest: StateStore):
        self.manifest = manifest

    def plan(self, table: str, batch_rows: int) -> list[Batch]:
        """The pending files cut into batches of about ``batch_rows`` rows (whole files)."""
        batches: list[Batch] = []
        current: list[LakeFile] = []
        rows = 0
        for file in self.manifest.transform.pending(table):
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
        self.manifest.transform.commit(
            _record(outcome, "staged", None),
            [f.path for f in outcome.batch.files],
            outcome.results,
            outcome.outputs,
        )

    def record_failure(self, outcome: BatchOutcome, error: str) -> None:
        """A batch stopped by a quality rule with action fail: results kept, nothing consumed."""
        self.manifest.transform.record(_record(outcome, "failed", error), outcome.results)

    def quarantine_file(self, file: LakeFile, moved_to: str, reason: str) -> None:
        """A raw file that cannot be read: consumed by no batch, recorded, visible as bad."""
        self.manifest.transform.set_aside(file, moved_to, reason)


def _record(outcome: BatchOutcome, status: str, error: str | None) -> BatchRecord:
    batch = outcome.batch
    return BatchRecord(
        batch_id=batch.batch_id,
        table=batch.table,
        engine=outcome.engine,
        status=status,
        input_files=len(batch.files),
        rows_in=outcome.rows_in,
        rows_out=outcome.rows_out,
        rows_quarantined=outcome.rows_quarantined,
        min_lsn=batch.min_lsn,
        max_lsn=batch.max_lsn,
        seconds=outcome.seconds,
        error=error,
    )


def batches_total(batches: Sequence[Batch]) -> int:
    return sum(b.rows for b in batches)
