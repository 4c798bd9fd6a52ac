"""The stream's batch: complete transactions (and at most one open one) not in the lake yet,
and writing it as raw Parquet files.

A batch's files are written first and made visible afterwards, by the stream's manifest
commit; a file written but never committed is an orphan the next capture deletes
(runner._remove_orphans). Files are named after the LSN range of their rows and the batch's
running part number, so two batches never write the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.capture.changes import TableBuffer, TxInfo, partitions
from riverbed.lake.layout import raw_file_path
from riverbed.lake.parquet import write_table
from riverbed.lake.schema import COMMIT_TS
from riverbed.lake.storage import LakeStorage
from riverbed.state import LakeFile


@dataclass
class Batch:
    """Complete (and at most one open) transactions not yet in the lake."""

    txs: list[TxInfo] = field(default_factory=list)
    buffers: dict[tuple[str, int], TableBuffer] = field(default_factory=dict)
    spilled: list[LakeFile] = field(default_factory=list)
    rows: int = 0
    first_commit_at: float | None = None  # monotonic time of the first complete transaction
    end_lsn: int | None = None  # end LSN of the last complete transaction
    part: int = 0

    def empty(self) -> bool:
        return not self.rows and not self.spilled


def write_batch(storage: LakeStorage, batch: Batch, open_tx: TxInfo | None) -> list[LakeFile]:
    """Write what ``batch`` buffers, one file per table, schema version and hour; ``open_tx``:
    the transaction still streaming in, whose rows are buffered too (a spill)."""
    txs = batch.txs + ([open_tx] if open_tx is not None else [])
    files = []
    for (table, version), buffer in batch.buffers.items():
        if not len(buffer):
            continue
        arrow = buffer.to_arrow(txs)
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
