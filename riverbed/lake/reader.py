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

import bisect
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from riverbed.lake.parquet import read_table
from riverbed.lake.schema import POSITION_COLUMNS
from riverbed.lake.storage import LakeStorage
from riverbed.state import StateStore


def read_changes(
    storage: LakeStorage, manifest: StateStore, table: str, *, resolve_toast: bool = True
) -> pa.Table:
    """All visible changes of ``table`` in source order (empty table when there are none)."""
    files = manifest.lake.files("raw", table)
    parts = [read_table(storage, f.path) for f in files]
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
    return pc.sort_indices(table, sort_keys=[(name, "ascending") for name in POSITION_COLUMNS])


def concat_versions(parts: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose schemas differ by added, dropped or re-typed columns.

    Each column is decided on its own: widened to a common type where one exists (int32 ->
    int64, decimal widening), read as PostgreSQL-style text where none does (int -> text).
    """
    types: dict[str, list[pa.DataType]] = {}
    for part in parts:
        for f in part.schema:
            kinds = types.setdefault(f.name, [])
            if f.type not in kinds:
                kinds.append(f.type)
    target: dict[str, pa.DataType] = {}
    for name, kinds in types.items():
        if len(kinds) > 1:
            target[name] = _common_type(name, kinds)
    if target:
        parts = [_cast_columns(part, target) for part in parts]
    return pa.concat_tables(parts, promote_options="permissive")


def _common_type(name: str, kinds: list[pa.DataType]) -> pa.DataType:
    try:
        unified = pa.unify_schemas(
            [pa.schema([pa.field(name, kind)]) for kind in kinds], promote_options="permissive"
        )
        return unified.field(name).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()


def _cast_columns(part: pa.Table, target: dict[str, pa.DataType]) -> pa.Table:
    for name, kind in target.items():
        if name not in part.column_names or part.schema.field(name).type == kind:
            continue
        index = part.column_names.index(name)
        column = part.column(name)
        cast = as_pg_text(column) if kind == pa.string() else pc.cast(column, kind)
        part = part.set_column(index, name, cast)
    return part


def as_pg_text(column: pa.ChunkedArray) -> pa.Array:
    """A column as text in PostgreSQL's notation where Arrow's differs (arrays: {1,2})."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pa.array(
            [None if v is None else _pg_array(v) for v in column.to_pylist()], pa.string()
        )
    return pc.cast(column, pa.string())


def _pg_array(values: list[Any]) -> str:
    def element(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, list):
            return _pg_array(value)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text == "" or any(c in text for c in ' ,{}"\\') or text.upper() == "NULL":
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    return "{" + ",".join(element(v) for v in values) + "}"


def _key_columns(manifest: StateStore, table: str) -> list[str]:
    versions = manifest.lake.schema_versions(table)
    if not versions:
        return []
    return [c["name"] for c in versions[-1].columns if c["key"]]


def resolve_unchanged_toast(table: pa.Table, keys: list[str]) -> pa.Table:
    """Fill columns marked unchanged with the value the source had (source order).

    That is the previous version of the same key; or, when the update also changed the key
    (captured as a D of the old key directly followed by an I of the new key in the same
    transaction), the previous version of the old key. A mark is removed once its value is
    filled; a column whose previous version is not in ``table`` stays marked (and null), so a
    later stage can still keep the value it already has.

    Only the rows of keys that a marked row reads are walked (in Python, row by row); the
    rest are left as they are, so a million-row batch with a few marks costs a few scans.
    """
    marks = table.column("_toast_unchanged")
    if marks.null_count == table.num_rows or not keys or table.num_rows == 0:
        return table
    lengths = pc.fill_null(pc.list_value_length(marks), 0).to_numpy()
    marked = np.flatnonzero(lengths > 0)
    if len(marked) == 0:
        return table
    # a marked row right after a D in the same transaction may read the D's (old) key
    ops = table.column("_op")
    lsn, seq = table.column("_lsn").to_numpy(), table.column("_seq").to_numpy()
    before = marked[marked > 0] - 1
    rekeyed = before[
        pc.equal(ops.take(before), "D").to_numpy(zero_copy_only=False)
        & (lsn[before] == lsn[before + 1])
        & (seq[before] == seq[before + 1] - 1)
    ]
    read = table.select(keys).take(np.concatenate([marked, rekeyed])).group_by(keys).aggregate([])
    index = table.select(keys).append_column("__i", pa.array(np.arange(table.num_rows)))
    rows = np.sort(index.join(read, keys, join_type="left semi").column("__i").to_numpy())
    resolved = _resolve_rows(table.take(rows), keys)
    # put the walked rows back in their places
    at = np.arange(table.num_rows)
    at[rows] = table.num_rows + np.arange(len(rows))
    positions = pa.array(at)
    for name in resolved.column_names:
        index_of = table.column_names.index(name)
        merged = pa.concat_arrays(
            [table.column(name).combine_chunks(), resolved.column(name).combine_chunks()]
        )
        table = table.set_column(index_of, table.schema.field(name), merged.take(positions))
    return table


def _resolve_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    """resolve_unchanged_toast over ``table``, every version of its keys in source order
    (the D of a key-changing update has the next ``_seq`` of the same ``_lsn``, so it is the
    row right before the new key's however many rows were left out). Returns the marked
    columns and the marks."""
    marks = table.column("_toast_unchanged").to_pylist()
    marked_columns = sorted({name for names in marks if names for name in names})
    key_values = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    ops = table.column("_op").to_pylist()
    lsns = table.column("_lsn").to_pylist()
    seqs = table.column("_seq").to_pylist()
    columns = {name: table.column(name).to_pylist() for name in marked_columns}
    last: dict[tuple[Any, ...], dict[str, Any]] = {}
    remaining: list[list[str] | None] = list(marks)
    for i, key in enumerate(key_values):
        if ops[i] == "D":
            continue  # a delete carries the key only; the values it ends stay known below
        names = marks[i]
        if names:
            source = last.get(key)
            if (
                source is None
                and i
                and ops[i - 1] == "D"
                and lsns[i - 1] == lsns[i]
                and seqs[i - 1] == seqs[i] - 1
            ):
                source = last.get(key_values[i - 1])  # the key changed in this very update
            unresolved = [n for n in names if source is None or n in source["_unresolved"]]
            for name in names:
                columns[name][i] = None if source is None else source.get(name)
            remaining[i] = unresolved or None
        last[key] = {name: columns[name][i] for name in marked_columns}
        last[key]["_unresolved"] = remaining[i] or ()
    arrays = {
        name: pa.array(values, table.schema.field(name).type) for name, values in columns.items()
    }
    arrays["_toast_unchanged"] = pa.array(remaining, table.schema.field("_toast_unchanged").type)
    return pa.table(arrays)


class RowGroupFilter:
    """Which row groups of a Parquet file can hold a row whose ``column`` is one of ``values``,
    for some (column, values): those whose min/max statistics of the column enclose one of
    them. A group without statistics, or whose statistics do not compare with the values,
    counts as a possible match.

    Lake files are written in source order, and the keys a new batch refers to are mostly
    recent ones, so the groups that can hold them are few (a steady batch of returns reads
    one row group of its order items' history, not all of it)."""

    def __init__(self, restrict: list[tuple[str, pa.Array]]):
        self._sorted: list[tuple[str, Any]] = []
        for column, values in restrict:
            values = values.drop_null()
            if pa.types.is_integer(values.type):
                self._sorted.append((column, np.unique(values.to_numpy())))
            else:
                try:
                    self._sorted.append((column, sorted(set(values.to_pylist()))))
                except TypeError:  # values that do not order: no pruning by this column
                    self._sorted.append((column, None))

    def groups(self, parquet: pq.ParquetFile) -> list[int]:
        meta = parquet.metadata
        where = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
        return [
            i
            for i in range(meta.num_row_groups)
            if any(
                self._may_hold(meta.row_group(i), where.get(column), values)
                for column, values in self._sorted
            )
        ]

    @staticmethod
    def _may_hold(group: pq.RowGroupMetaData, index: int | None, values: Any) -> bool:
        if values is None or index is None:
            return True  # not comparable, or not in this file (a later schema's column)
        stats = group.column(index).statistics
        if stats is None or not stats.has_min_max:
            return True
        try:
            if isinstance(values, np.ndarray):
                at = int(np.searchsorted(values, stats.min, side="left"))
            else:
                at = bisect.bisect_left(values, stats.min)
            return at < len(values) and bool(values[at] <= stats.max)
        except (TypeError, ValueError, OverflowError):
            return True
