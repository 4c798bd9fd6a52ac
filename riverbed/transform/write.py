"""Writing one checked batch: its staged and quarantined Parquet, in parallel parts (the
bookmarks commit them, see bookmarks.py); and setting unreadable raw files aside."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.lake.layout import bad_path, bad_prefix, batch_file_path, set_aside_from
from riverbed.lake.parquet import write_table
from riverbed.lake.storage import LakeFileMissing, LakeStorage
from riverbed.observe.logs import log_event
from riverbed.state import LakeFile, StateStore
from riverbed.state.records import QualityResult
from riverbed.transform.bookmarks import Batch, Bookmarks

PART_ROWS = 512 * 1024  # two parts of a default batch: one per core, few fsyncs
log = logging.getLogger("riverbed.transform")


@dataclass(frozen=True)
class Checked:
    """A batch that passed its checks, its outputs not yet written."""

    batch: Batch
    started: float
    rows_in: int
    good: pa.Table
    bad: pa.Table
    results: list[QualityResult]
    # rows of erased keys whose personal values were scrubbed (riverbed.govern.erasure): the
    # batch's raw files hold them too, and are scrubbed once the batch is committed
    erased: int = 0


def write_outputs(storage: LakeStorage, checked: Checked) -> list[LakeFile]:
    """The batch's staged and quarantined Parquet (safe on another thread: storage only)."""
    batch = checked.batch
    return write_parts(storage, batch, "staged", checked.good) + write_parts(
        storage, batch, "quarantine", checked.bad
    )


def write_parts(storage: LakeStorage, batch: Batch, stage: str, table: pa.Table) -> list[LakeFile]:
    """Write ``table`` as parts of PART_ROWS rows, in parallel: Parquet encoding and ZSTD
    run outside the GIL, so the parts use every core. Part names follow the row order, so
    a retry writes the same files."""
    if table.num_rows == 0:
        return []
    version = max(f.schema_version for f in batch.files)
    starts = list(range(0, table.num_rows, PART_ROWS))

    def write(index: int) -> LakeFile:
        part = table.slice(starts[index], PART_ROWS)
        path = batch_file_path(stage, batch.table, batch.batch_id, index)
        size = write_table(storage, path, part)
        lsns = part.column("_lsn")
        return LakeFile(
            path=path,
            stage=stage,
            table=batch.table,
            rows=part.num_rows,
            bytes=size,
            min_lsn=int(pc.min(lsns).as_py()),
            max_lsn=int(pc.max(lsns).as_py()),
            schema_version=version,
            full_load=False,
        )

    if len(starts) == 1:
        return [write(0)]
    with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 2)) as pool:
        return list(pool.map(write, range(len(starts))))


def set_aside(
    storage: LakeStorage, bookmarks: Bookmarks, file: LakeFile, reason: str
) -> dict[str, Any]:
    """Move an unreadable raw file out of the way, record it, and go on without it.

    Three steps, each safe to be killed after: the copy in bad/ appears whole (a rerun
    reads the original again, finds it bad and copies it again); the manifest records the
    move in one transaction (no batch reads the original from then on); the original is
    deleted last (a rerun deletes it, see finish_set_asides)."""
    target = bad_path(file.path)
    with suppress(LakeFileMissing):  # already copied by a run that stopped before recording
        storage.write_atomic(target, storage.read(file.path))
    bookmarks.quarantine_file(file, target, reason)
    storage.delete(file.path)
    # the run goes on and succeeds without the file's changes: say so where it is seen
    log_event(
        log,
        "raw_file_set_aside",
        f"{file.table}: unreadable raw file {file.path} set aside as {target}, its changes "
        f"left out ({reason})",
        logging.WARNING,
        path=file.path,
        moved_to=target,
    )
    return {"path": file.path, "table": file.table, "moved_to": target, "reason": reason}


def finish_set_asides(
    storage: LakeStorage, manifest: StateStore, bookmarks: Bookmarks, table: str
) -> None:
    """Complete what a run killed while setting raw files of ``table`` aside left undone:
    an original still there after its move was recorded is deleted, and a move whose copy
    is in bad/ but whose original is gone unrecorded (the order runs before this one used:
    copy, delete, record) is recorded, so no batch waits for a file that is not there."""
    copies = storage.list(bad_prefix(table))
    if not copies:
        return  # the usual case: one listing of an empty folder
    recorded = {b.path for b in manifest.transform.bad_files() if b.table == table}
    listed = {f.path: f for f in manifest.lake.files("raw", table)}
    for copy in copies:
        original = set_aside_from(copy)
        if original in recorded:
            # (a raw file in the manifest under that name is a new one: kept)
            if original not in listed and storage.exists(original):
                storage.delete(original)
        elif original in listed and not storage.exists(original):
            set_aside(
                storage, bookmarks, listed[original], "set aside by a run that stopped midway"
            )
