"""Parquet files in the lake: ZSTD, typed columns, written atomically through the storage."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from riverbed.lake.storage import LakeStorage

COMPRESSION = "zstd"
ROW_GROUP_ROWS = 128 * 1024


def write_table(storage: LakeStorage, path: str, table: pa.Table) -> int:
    """Write ``table`` to ``path`` as one Parquet file, visible only when complete. Returns bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    data = sink.getvalue().to_pybytes()
    storage.write_atomic(path, data)
    return len(data)


class CountingSink:
    """A file-like wrapper that counts the bytes written through it."""

    def __init__(self, inner: object):
        self.inner = inner
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.inner.write(data)  # type: ignore[attr-defined]
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()

    def tell(self) -> int:
        return self.written

    def close(self) -> None:
        # the storage's context manager closes (and commits) the real sink
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False
