"""Reading a table's visible raw files as one change log, across schema versions.

What every later stage (and the tests) reads: the manifest's files for a table, concatenated
in source order (snapshot rows first, then by commit LSN and position in the transaction),
with columns unified across schema versions: a column added later is null before it existed,
a dropped column is null after, and a column whose type changed is promoted (int32 -> int64,
decimal widening) or, where no promotion exists, read as text.

Unchanged-TOAST marks are resolved here (``resolve_toast=True``): a column listed in a row's
``_toast_unchanged`` takes the value of the previous row of the same key, which is what the
source had, since the update did not touch it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from riverbed.lake.manifest import Manifest
from riverbed.lake.storage import LakeStorage


def read_changes(
    storage: LakeStorage, manifest: Manifest, table: str, *, resolve_toast: bool = True
) -> pa.Table:
    """All visible changes of ``table`` in source order (empty table when there are none)."""
    files = manifest.files("raw", table)
    parts = [pq.read_table(storage.open_input(f.path)) for f in files]
    if not parts:
        return pa.table({})
    combined = concat_versions(parts)
    combined = combined.take(_source_order(combined))
    if resolve_toast and "_toast_unchanged" in combined.column_names:
        keys = _key_columns(manifest, table)
        combined = resolve_unchanged_toast(combined, keys)
    return combined


def _source_order(table: pa.Table) -> pa.Array:
    # snapshot rows carry the consistent point as _lsn, which precedes every streamed commit,
    # so (_lsn, _seq) is the source order for both
    return pc.sort_indices(table, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])


def concat_versions(parts: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose schemas differ by added, dropped or re-typed columns."""
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    # no promotion exists for some column (e.g. int -> text): read those columns as text
    types: dict[str, set[pa.DataType]] = {}
    for part in parts:
        for f in part.schema:
            types.setdefault(f.name, set()).add(f.type)
    conflicting = {name for name, kinds in types.items() if len(kinds) > 1}
    cast_parts = []
    for part in parts:
        for name in conflicting & set(part.column_names):
            index = part.column_names.index(name)
            part = part.set_column(index, name, pc.cast(part.column(name), pa.string()))
        cast_parts.append(part)
    return pa.concat_tables(cast_parts, promote_options="permissive")


def _key_columns(manifest: Manifest, table: str) -> list[str]:
    versions = manifest.schema_versions(table)
    if not versions:
        return []
    return [c["name"] for c in versions[-1].columns if c["key"]]


def resolve_unchanged_toast(table: pa.Table, keys: list[str]) -> pa.Table:
    """Fill columns marked unchanged with the previous value of the same key (source order)."""
    marks = table.column("_toast_unchanged").to_pylist()
    if not any(marks) or not keys:
        return table
    marked_columns = sorted({name for names in marks if names for name in names})
    key_values = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    filled: dict[str, list[Any]] = {}
    for name in marked_columns:
        values = table.column(name).to_pylist()
        last: dict[tuple[Any, ...], Any] = {}
        for i, (key, names) in enumerate(zip(key_values, marks, strict=True)):
            if names and name in names:
                values[i] = last.get(key)
            last[key] = values[i]
        filled[name] = values
    for name, values in filled.items():
        index = table.column_names.index(name)
        table = table.set_column(index, name, pa.array(values, table.schema.field(name).type))
    return table
