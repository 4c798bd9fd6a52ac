"""The stream's batch: complete transactions (and at most one open one) not in the lake yet,
and writing it as raw Parquet files.

A batch's files are written first and made visible afterwards, by the stream's manifest
commit; a file written but never committed is an orphan the next capture deletes
(runner._remove_orphans). Files are named after the LSN range of their rows and the batch's
running part number, so two batches never write the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.capture.changes import SUBXID, TableBuffer, TxInfo, partitions
from riverbed.lake.layout import raw_file_path
from riverbed.lake.parquet import write_table
from riverbed.lake.schema import CDC_FIELDS, COMMIT_TS, LSN, XID
from riverbed.lake.storage import LakeStorage
from riverbed.state import LakeFile


@dataclass(frozen=True)
class StagedChunk:
    """Rows of a streamed transaction staged before its commit: one table version's."""

    path: Path
    table: str
    version: int
    rows: int


@dataclass(frozen=True)
class StagedCommit:
    """A staged chunk of a committed transaction, for the writer to turn into lake files."""

    chunk: StagedChunk
    tx: TxInfo
    aborted: frozenset[int]  # subtransactions whose rows are left out


@dataclass
class Batch:
    """Complete (and at most one open) transactions not yet in the lake."""

    txs: list[TxInfo] = field(default_factory=list)
    buffers: dict[tuple[str, int], TableBuffer] = field(default_factory=dict)
    spilled: list[LakeFile] = field(default_factory=list)
    staged: list[StagedCommit] = field(default_factory=list)  # of streamed transactions
    rows: int = 0
    first_commit_at: float | None = None  # monotonic time of the first complete transaction
    end_lsn: int | None = None  # end LSN of the last complete transaction
    part: int = 0

    def empty(self) -> bool:
        return not self.rows and not self.spilled and not self.staged


def write_batch(storage: LakeStorage, batch: Batch, open_tx: TxInfo | None) -> list[LakeFile]:
    """Write what ``batch`` buffers, one file per table, schema version and hour; ``open_tx``:
    the transaction still streaming in, whose rows are buffered too (a spill)."""
    txs = batch.txs + ([open_tx] if open_tx is not None else [])
    files = []
    for (table, version), buffer in batch.buffers.items():
        if len(buffer):
            files += _write_rows(storage, batch, table, version, buffer.to_arrow(txs))
    return files


def write_staged(storage: LakeStorage, batch: Batch) -> list[LakeFile]:
    """Write the staged rows of the streamed transactions committed in ``batch`` as lake
    files, and delete the staged files."""
    files = []
    for staged in batch.staged:
        chunk = staged.chunk
        files += _write_rows(storage, batch, chunk.table, chunk.version, staged_rows(staged))
        chunk.path.unlink(missing_ok=True)
    return files


def _write_rows(
    storage: LakeStorage, batch: Batch, table: str, version: int, arrow: pa.Table
) -> list[LakeFile]:
    files = []
    for hour_us, rows in partitions(arrow):
        lsns = rows.column("_lsn").to_numpy()
        low, high = int(lsns.min()), int(lsns.max())
        path = raw_file_path(table, hour_us, low, high, version, batch.part)
        batch.part += 1
        size = write_table(storage, path, rows)
        commit = pc.min_max(rows.column(COMMIT_TS).cast(pa.int64()))
        files.append(
            LakeFile(
                path=path,
                stage="raw",
                table=table,
                rows=rows.num_rows,
                bytes=size,
                min_lsn=low,
                max_lsn=high,
                schema_version=version,
                min_commit_ts=commit["min"].as_py(),
                max_commit_ts=commit["max"].as_py(),
            )
        )
    return files


def staged_rows(staged: StagedCommit) -> pa.Table:
    """A staged chunk as lake rows: aborted subtransactions' rows left out, the commit's
    columns added, in the order of the lake's schema."""
    with pa.memory_map(str(staged.chunk.path)) as source:
        rows = pa.ipc.open_file(source).read_all()
    if staged.aborted:
        aborted = pa.array(sorted(staged.aborted), pa.int64())
        rows = rows.filter(pc.invert(pc.is_in(rows.column(SUBXID), value_set=aborted)))
    n = rows.num_rows
    commit = {
        COMMIT_TS: pa.array(np.full(n, staged.tx.commit_ts_us), pa.timestamp("us", tz="UTC")),
        LSN: pa.array(np.full(n, staged.tx.commit_lsn), pa.int64()),
        XID: pa.array(np.full(n, staged.tx.xid), pa.int64()),
    }
    cdc = {f.name for f in CDC_FIELDS}
    source = [name for name in rows.column_names if name not in cdc and name != SUBXID]
    arrays = [rows.column(name) for name in source]
    arrays += [commit[f.name] if f.name in commit else rows.column(f.name) for f in CDC_FIELDS]
    fields = [rows.schema.field(name) for name in source] + CDC_FIELDS
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
