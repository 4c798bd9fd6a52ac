"""Erasing a data subject's personal values from Arrow rows (``scrub``) and from a lake
file (``scrub_file``): what `riverbed forget` applies to the lake's files, and the transform
to an erased key's later changes and the raw files that brought them.

An erased value becomes NULL, whatever its type: a redaction text would not fit a number or
a date, and would read as a value. A key is matched by its text (``42``; several key columns
joined by ``,``), as the command line names it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import reduce

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.lake.layout import COMPACTED, compacted_prefix
from riverbed.lake.parquet import open_file, write_table
from riverbed.lake.storage import LakeStorage


def key_text(rows: pa.Table, match: Sequence[str]) -> pa.ChunkedArray:
    """Each row's key as text: the ``match`` columns' values joined by ','."""
    texts = [pc.cast(rows.column(name), pa.string()) for name in match]
    if len(texts) == 1:
        return texts[0]
    return pc.binary_join_element_wise(*texts, ",")


def holds(rows: pa.Table, match: Sequence[str]) -> bool:
    """Whether ``rows`` carry every ``match`` column (a key can be looked for in them)."""
    return all(name in rows.column_names for name in match)


def scrub(
    rows: pa.Table, columns: Sequence[str], match: Sequence[str], keys: Collection[str]
) -> tuple[pa.Table, int]:
    """``rows`` with ``columns`` NULL on every row whose key is one of ``keys``, and how many
    rows held a value that was erased (0: nothing to do, ``rows`` returned as they were)."""
    present = [c for c in columns if c in rows.column_names]
    if not keys or not present or not holds(rows, match) or rows.num_rows == 0:
        return rows, 0
    hit = pc.fill_null(pc.is_in(key_text(rows, match), pa.array(list(keys), pa.string())), False)
    holding = reduce(pc.or_, [pc.is_valid(rows.column(c)) for c in present])
    erased = pc.and_(hit, holding)
    count = pc.sum(erased).as_py() or 0
    if not count:
        return rows, 0
    for name in present:
        index = rows.column_names.index(name)
        column = rows.column(index)
        nulls = pa.nulls(rows.num_rows, column.type)
        rows = rows.set_column(index, rows.field(index), pc.if_else(erased, nulls, column))
    return rows, int(count)


def scrub_file(
    storage: LakeStorage,
    path: str,
    columns: Sequence[str],
    match: Sequence[str],
    keys: Collection[str],
) -> tuple[int, int] | None:
    """Scrub one Parquet file of the lake in place: the scrubbed rows are written beside it
    and renamed over it (one PUT on S3), so a reader sees the old file or the new one, whole.
    Its size and the rows scrubbed, or None when it holds none of ``keys`` (its key columns
    are read first, the whole file only when it does). A file scrubbed before is not written
    again: (its size, 0)."""
    data = storage.read(path)
    parquet = open_file(storage, path, data)
    if not all(name in parquet.schema_arrow.names for name in match):
        return None
    found = key_text(parquet.read(columns=list(match)), match)
    if not any(value in keys for value in found.unique().to_pylist()):
        return None
    scrubbed, count = scrub(parquet.read(), columns, match, keys)
    if not count:
        return len(data), 0
    return write_table(storage, path, scrubbed), count


def drop_compacted(storage: LakeStorage, table: str) -> int:
    """Delete ``table``'s compacted current rows and TOAST history (riverbed.transform.
    compacted): derived from its staged and raw files, they are rebuilt from the scrubbed
    ones rather than scrubbed themselves. How many files there were."""
    paths = [p for kind in COMPACTED for p in storage.list(compacted_prefix(kind, table))]
    for path in paths:
        storage.delete(path)
    return len(paths)
