"""Reading one batch: its raw files in source order, each column in its declared type, and
unchanged-TOAST marks resolved against earlier versions of the same key (in the batch, else
in the raw files before it: their compacted TOAST history, compacted.py, and the few raw
files it does not cover yet)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.lake.declared import Declared, as_declared
from riverbed.lake.parquet import open_file, read_table
from riverbed.lake.reader import RowGroupFilter, concat_versions, resolve_unchanged_toast
from riverbed.lake.schema import OP, POSITION_COLUMNS, TOAST_UNCHANGED
from riverbed.lake.storage import LakeError, LakeStorage
from riverbed.state import LakeFile, StateStore
from riverbed.transform import compacted
from riverbed.transform.bookmarks import Batch

LOST = "__lost"  # why a raw row lost a value to its declared type (riverbed.lake.declared)
TYPE_RULE = "type"  # the built-in check that sets such rows aside


class BadFile(Exception):
    """A raw file that cannot be read: set aside, the run goes on without it."""

    def __init__(self, file: LakeFile, reason: str):
        super().__init__(reason)
        self.file = file
        self.reason = reason


EMPTY = pa.table({})


def read_batch(storage: LakeStorage, batch: Batch, declared: Declared) -> pa.Table:
    """The batch's raw rows in source order, each column as its ``declared`` type; a row
    that lost a value to that (see riverbed.lake.declared) says why in column LOST."""
    parts = []
    for file in batch.files:
        try:
            part = read_table(storage, file.path)
        except LakeError:
            raise
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadFile(file, f"{type(exc).__name__}: {exc}") from exc
        part, lost = as_declared(part, declared.get(file.schema_version, {}))
        # mostly no value is lost: an all-null column costs no Python list of a million Nones
        why = pa.nulls(part.num_rows, pa.string()) if lost is None else pa.array(lost, pa.string())
        parts.append(part.append_column(LOST, why))
    return in_source_order(concat_versions(parts))


def has_marks(raw: pa.Table) -> bool:
    """Whether some row of ``raw`` carries an unchanged-TOAST mark."""
    if TOAST_UNCHANGED not in raw.column_names:
        return False
    return bool(raw.column(TOAST_UNCHANGED).null_count < raw.num_rows)


def resolve_toast(
    storage: LakeStorage, manifest: StateStore, batch: Batch, keys: list[str], raw: pa.Table
) -> pa.Table:
    """Fill unchanged-TOAST values from the previous version of each key: in this batch,
    else in the raw files before it. Marks that nothing can fill stay on the row."""
    if not has_marks(raw):
        return raw
    resolved = resolve_unchanged_toast(raw, keys)
    marks = resolved.column("_toast_unchanged")
    if marks.null_count == resolved.num_rows:
        return resolved
    # earlier versions of the still-marked keys, from the files before this batch
    open_rows = pc.invert(pc.is_null(marks))
    wanted = resolved.filter(open_rows).select(keys)
    needed = sorted({n for names in marks.to_pylist() if names for n in names})
    history = _history(storage, manifest, batch, keys, wanted, needed)
    if history.num_rows == 0:
        return resolved
    flag = "__from_history"
    combined = concat_versions(
        [
            history.append_column(flag, pa.array(np.ones(history.num_rows, dtype=bool))),
            raw.append_column(flag, pa.array(np.zeros(raw.num_rows, dtype=bool))),
        ]
    )
    order = pc.sort_indices(combined, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
    combined = resolve_unchanged_toast(combined.take(order), keys)
    mine = combined.filter(pc.invert(combined.column(flag)))
    return mine.select(raw.column_names)


def _history(
    storage: LakeStorage,
    manifest: StateStore,
    batch: Batch,
    keys: list[str],
    wanted: pa.Table,
    needed: list[str],
) -> pa.Table:
    """The versions of the ``wanted`` keys before this batch that can fill the ``needed``
    columns: read projected to those columns, then cut down to what resolution uses (see
    latest_values), so a long-lived table's history costs a scan, not a Python walk."""
    parts = []
    key_set = wanted.group_by(keys).aggregate([])
    columns = [*keys, *needed, OP, *POSITION_COLUMNS, TOAST_UNCHANGED]
    found = compacted.sources(storage, manifest, batch.table, compacted.TOAST)
    # compacted files are sorted by key: their statistics skip the groups of other keys
    pruning = RowGroupFilter([(keys[0], key_set.column(0))]) if len(keys) == 1 else None
    inputs = [(c.path, True) for c in found.compacted] + [
        (file.path, False)
        for file in found.uncovered
        if file.max_lsn <= batch.min_lsn and file not in batch.files
    ]
    for path, merged in inputs:
        parquet = open_file(storage, path)
        present = [c for c in dict.fromkeys(columns) if c in parquet.schema_arrow.names]
        if merged and pruning is not None:
            part = parquet.read_row_groups(pruning.groups(parquet), columns=present)
        else:
            part = parquet.read(columns=present)
        if merged:  # only what came before the batch, as the raw files read are
            part = part.filter(pc.less_equal(part.column("_lsn"), batch.min_lsn))
        # join on the keys alone (Arrow joins cannot carry list columns), then take
        index = part.select(keys).append_column("__r", pa.array(np.arange(part.num_rows)))
        part = part.take(index.join(key_set, keys, join_type="left semi").column("__r"))
        if part.num_rows:
            parts.append(part)
    if not parts:
        return pa.table({})
    return latest_values(concat_versions(parts), keys, needed)


def split_untyped(raw: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The rows that kept every value in its declared type, and those that did not, set
    aside with the reason (rule "type"), whatever the config's rules say."""
    lost = raw.column(LOST)
    raw = raw.drop_columns([LOST])
    if lost.null_count == raw.num_rows:
        return raw, EMPTY
    kept = pc.is_null(lost)
    untyped = raw.filter(pc.invert(kept))
    untyped = untyped.append_column("_rule", pa.repeat(pa.scalar(TYPE_RULE), untyped.num_rows))
    untyped = untyped.append_column("_reason", lost.filter(pc.invert(kept)))
    return raw.filter(kept), untyped


def in_source_order(table: pa.Table) -> pa.Table:
    # engines return rows in any order; the lake holds them in source order
    if table.num_rows < 2:
        return table
    lsn = table.column("_lsn").to_numpy()
    seq = table.column("_seq").to_numpy()
    steps_lsn, steps_seq = np.diff(lsn), np.diff(seq)
    if bool(np.all((steps_lsn > 0) | ((steps_lsn == 0) & (steps_seq > 0)))):
        return table  # already in order: the common case for DuckDB
    order = pc.sort_indices(table, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
    return table.take(order)


def latest_values(history: pa.Table, keys: list[str], needed: list[str]) -> pa.Table:
    """The rows of ``history`` that resolving unchanged-TOAST marks after it needs, in source
    order: per key, the latest row holding each needed column's value (not a delete, column
    not marked), and the key's last row; plus every marked insert with the delete just before
    it (a key-changing update, which takes its values from the old key).

    Rows in between only carry marks (the value did not change), so dropping them changes no
    result; a product repriced a thousand times keeps two rows, not a thousand."""
    order = pc.sort_indices(history, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
    history = history.take(order)
    position = pa.array(np.arange(history.num_rows))
    marks = history.column("_toast_unchanged")
    flat = pc.list_flatten(marks)
    parents = pc.list_parent_indices(marks)
    not_delete = pc.not_equal(history.column("_op"), "D")
    keep = [_last_per_key(history.select(keys), position, None)]
    for name in needed:
        if name not in history.column_names:
            continue
        marked = pc.is_in(position, pc.filter(parents, pc.equal(flat, name)))
        holds = pc.and_(not_delete, pc.invert(marked))
        keep.append(_last_per_key(history.select(keys), position, holds))
    marked_insert = pc.and_(
        pc.equal(history.column("_op"), "I"), pc.invert(pc.is_null(marks))
    ).to_numpy(zero_copy_only=False)
    inserts = np.flatnonzero(marked_insert)
    keep.append(inserts)
    keep.append(inserts[inserts > 0] - 1)  # the delete of the old key, checked by the resolver
    rows = np.unique(np.concatenate(keep))
    return history.take(pa.array(rows))


def _last_per_key(keys: pa.Table, position: pa.Array, where: pa.Array | None) -> np.ndarray:
    table = keys.append_column("__p", position)
    if where is not None:
        table = table.filter(where)
    if table.num_rows == 0:
        return np.array([], dtype=np.int64)
    last = table.group_by(keys.column_names).aggregate([("__p", "max")])
    return last.column("__p_max").to_numpy()
