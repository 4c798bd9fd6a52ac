"""Parquet files in the lake: ZSTD, typed columns, written atomically through the storage."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from riverbed.lake.storage import LakeStorage

COMPRESSION = "zstd"
ROW_GROUP_ROWS = 128 * 1024
# Pages gather here, in C++, before they reach the Python sink: unbuffered, the writer calls
# back into Python (and waits for the GIL) about once per page, a thousand times per 512k-row
# file, which stalls a writer thread whenever another thread is busy in Python.
SINK_BUFFER = 16 * 1024 * 1024


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """Options for every Parquet file the lake holds.

    Dictionary encoding only for string columns: there it pays (statuses, countries, categories,
    ``_op``), while on keys, timestamps and amounts it costs twice the CPU of the rest of the
    write and yields bigger files, because their dictionaries overflow and fall back to plain.
    """
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    return {"compression": COMPRESSION, "use_dictionary": strings}


def write_table(storage: LakeStorage, path: str, table: pa.Table) -> int:
    """Write ``table`` to ``path`` as one Parquet file, visible only when complete. Returns bytes."""
    with storage.open_atomic(path) as sink:
        counter = CountingSink(sink)  # streamed: no second copy of the file in memory
        buffered = pa.BufferedOutputStream(pa.PythonFile(counter, mode="w"), SINK_BUFFER)
        pq.write_table(
            table, buffered, row_group_size=ROW_GROUP_ROWS, **writer_options(table.schema)
        )
        buffered.close()  # flushes the rest
    return counter.written


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
