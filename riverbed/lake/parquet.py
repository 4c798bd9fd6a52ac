"""Parquet files in the lake: ZSTD, typed columns, written atomically through the storage,
encrypted when ``lake.encryption`` is on (riverbed.lake.crypto).

The one place that writes or opens a lake Parquet file: every writer takes its options from
``writer_options`` and every reader opens files through ``open_file``, ``read_table``,
``read_schema`` or ``dataset``, so none repeats the decryption setup, and a file that cannot be
decrypted is a LakeError naming ``lake.encryption`` wherever it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from riverbed.lake.storage import LakeError, LakeStorage

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto

COMPRESSION = "zstd"
ROW_GROUP_ROWS = 128 * 1024
# Pages gather here, in C++, before they reach the Python sink: unbuffered, the writer calls
# back into Python (and waits for the GIL) about once per page, a thousand times per 512k-row
# file, which stalls a writer thread whenever another thread is busy in Python.
SINK_BUFFER = 16 * 1024 * 1024


def writer_options(schema: pa.Schema, storage: LakeStorage | None = None) -> dict[str, Any]:
    """Options for every Parquet file the lake holds (in ``storage``: encrypted with its keys
    when lake.encryption is on).

    Dictionary encoding only for string columns: there it pays (statuses, countries, categories,
    ``_op``), while on keys, timestamps and amounts it costs twice the CPU of the rest of the
    write and yields bigger files, because their dictionaries overflow and fall back to plain.
    """
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    options: dict[str, Any] = {"compression": COMPRESSION, "use_dictionary": strings}
    crypto = crypto_of(storage)
    if crypto is not None:
        options["encryption_properties"] = crypto.encryption(schema)
    return options


def write_table(storage: LakeStorage, path: str, table: pa.Table) -> int:
    """Write ``table`` to ``path`` as one Parquet file, visible only when complete. Returns bytes."""
    with storage.open_atomic(path) as sink:
        counter = CountingSink(sink)  # streamed: no second copy of the file in memory
        buffered = pa.BufferedOutputStream(pa.PythonFile(counter, mode="w"), SINK_BUFFER)
        pq.write_table(
            table,
            buffered,
            row_group_size=ROW_GROUP_ROWS,
            **writer_options(table.schema, storage),
        )
        buffered.close()  # flushes the rest
    return counter.written


def open_file(storage: LakeStorage, path: str, source: Any = None) -> pq.ParquetFile:
    """The lake file at ``path`` opened for reading (its footer read, decrypted when the lake
    is encrypted); ``source``: its bytes or a file already open, instead of opening ``path``."""
    crypto = crypto_of(storage)
    source = storage.open_input(path) if source is None else source
    if isinstance(source, bytes):
        source = pa.BufferReader(source)
    with _reading(storage, path):
        if crypto is None:
            return pq.ParquetFile(source)
        return pq.ParquetFile(source, decryption_properties=crypto.decryption())


def read_table(storage: LakeStorage, path: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of the lake file at ``path`` (only ``columns``, when given)."""
    parquet = open_file(storage, path)
    with _reading(storage, path):
        return parquet.read(columns=columns)


def read_schema(storage: LakeStorage, path: str) -> pa.Schema:
    """The Arrow schema of the lake file at ``path``."""
    return open_file(storage, path).schema_arrow


def dataset(paths: list[str], schema: pa.Schema, crypto: LakeCrypto | None) -> Any:
    """A ``pyarrow.dataset`` over local lake files, decrypting as it scans when ``crypto`` (the
    storage's) is given: what an engine that cannot decrypt the files itself is handed."""
    import pyarrow.dataset as ds

    fmt = crypto.dataset_format() if crypto is not None else "parquet"
    return ds.dataset(paths, schema=schema, format=fmt)


def crypto_of(storage: LakeStorage | None) -> LakeCrypto | None:
    """How ``storage``'s files are encrypted (a storage made without open_storage: not)."""
    return getattr(storage, "crypto", None)


def _reading(storage: LakeStorage, path: str) -> Any:
    """Turn a decryption failure into the one line that names lake.encryption and the fix."""
    crypto = crypto_of(storage)
    if crypto is not None:
        return crypto.reading()
    return _plain_reading(storage, path)


@contextmanager
def _plain_reading(storage: LakeStorage, path: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if "encrypted" not in str(exc).lower() or isinstance(exc, LakeError):
            raise
        raise LakeError(
            f"{storage.url}: {path} is encrypted; turn lake.encryption on (enabled: true) "
            "with the keyring the lake was written with"
        ) from None


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
