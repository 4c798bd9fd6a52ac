"""The current rows of a table (the latest staged version of every live key: what the
dimension will hold once loaded), which rules read for "unique" and "exists in" checks:
read from its compacted current rows and the staged files they do not cover yet
(compacted.py), kept for the rest of the run until the table stages a batch."""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.config.tables import TableConfig
from riverbed.lake.parquet import open_file, read_schema
from riverbed.lake.reader import RowGroupFilter, concat_versions
from riverbed.lake.schema import OP, POSITION_COLUMNS
from riverbed.lake.storage import LakeStorage
from riverbed.state import StateStore
from riverbed.transform import compacted
from riverbed.transform.read import in_source_order


class CurrentRows:
    """Current rows of the project's tables, read from ``storage`` as ``manifest`` lists them."""

    def __init__(self, storage: LakeStorage, manifest: StateStore, tables: dict[str, TableConfig]):
        self.storage = storage
        self.manifest = manifest
        self.tables = tables
        self._cache: dict[tuple[str, frozenset[str] | None], pa.Table] = {}

    def forget(self, table: str) -> None:
        """``table`` staged a batch: its current rows changed."""
        for cached in [k for k in self._cache if k[0] == table]:
            del self._cache[cached]

    def rows(
        self,
        table: str,
        columns: AbstractSet[str] | None,
        like: pa.Schema | None = None,
        *,
        restrict: list[tuple[str, pa.Array]] | None = None,
        holding_values: list[tuple[str, pa.Array]] | None = None,
    ) -> pa.Table:
        """The latest staged version of every live key of ``table`` (what the dimension will
        hold once loaded), with ``columns`` (None: all) besides its keys. ``restrict``: only
        the keys whose key columns hold these values; ``holding_values``: only the keys whose
        current version holds one of these values (any column).

        Kept for the rest of the run and dropped when ``table`` stages a batch, so a table
        referenced by every batch of another is read once per run, not once per batch.
        """
        cache_key = (table, frozenset(columns) if columns is not None else None)
        cached = self._cache.get(cache_key) if not (restrict or holding_values) else None
        if cached is not None:
            return cached
        found = compacted.sources(self.storage, self.manifest, table)
        files = found.paths
        if not files:
            return like.empty_table() if like is not None else self._empty_like(table)
        keys = list(self.tables[table].keys)
        value_tests = tests(holding_values or [])
        # a compacted file holds current versions only: one that holds none of the values
        # cannot make its key hold one. Versions in staged files are all read: a later one may
        # have given up a value an older one held.
        merged = {c.path for c in found.compacted}
        restrict = (restrict or []) + (holding_values or [])
        wanted_tests = tests(restrict)
        pruning = RowGroupFilter(restrict) if restrict else None

        def read(path: str) -> pa.Table:
            if holding_values and path not in merged:
                return read_file(path, None, [])
            return read_file(path, pruning, wanted_tests)

        def read_file(
            path: str, pruning: RowGroupFilter | None, wanted_tests: list[_Test]
        ) -> pa.Table:
            parquet = open_file(self.storage, path)  # one open per file
            wanted = None
            if columns is not None:
                wanted = [
                    n
                    for n in parquet.schema_arrow.names
                    if n in columns or n in keys or n in (OP, *POSITION_COLUMNS)
                ]
            if pruning is None:
                part = parquet.read(columns=wanted)
            else:  # only the row groups that can hold a key asked for (by their statistics)
                part = parquet.read_row_groups(pruning.groups(parquet), columns=wanted)
            # keep only the keys asked for, file by file: what is left is small
            return holding(part, wanted_tests)

        # files in parallel: reading and filtering release the GIL
        with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 2)) as pool:
            rows = concat_versions(list(pool.map(read, files)))
        latest = compacted.latest(in_source_order(rows), keys)
        latest = latest.filter(pc.not_equal(latest.column("_op"), "D"))
        if not restrict:
            self._cache[cache_key] = latest
        return holding(latest, value_tests)

    def _empty_like(self, table: str) -> pa.Table:
        """No staged rows yet: an empty relation with the table's raw columns, so rules that
        read it still bind."""
        raw = self.manifest.lake.files("raw", table)
        if raw:
            return read_schema(self.storage, raw[-1].path).empty_table()
        keys = self.tables[table].keys if table in self.tables else []
        return pa.table(
            {**{k: pa.array([], pa.string()) for k in keys}, "_op": pa.array([], pa.string())}
        )


_Test = tuple[str, Callable[[pa.ChunkedArray], pa.Array]]  # a column, a test of its values


def tests(restrict: list[tuple[str, pa.Array]]) -> list[_Test]:
    """Membership tests for (column, values) pairs, each built once to apply to many tables."""
    return [(column, _membership(values)) for column, values in restrict]


def holding(rows: pa.Table, tests: list[_Test]) -> pa.Table:
    """The rows whose value in some column of ``tests`` passes its test (all: no tests)."""
    if not tests:
        return rows
    mask = None
    for column, test in tests:
        found = test(rows.column(column))
        mask = found if mask is None else pc.or_(mask, found)
    return rows.filter(mask)


def _member(column: pa.ChunkedArray, values: pa.Array) -> pa.Array:
    """``column`` IN ``values``, one pass (see _membership)."""
    return _membership(values)(column)


def _membership(values: pa.Array) -> Callable[[pa.ChunkedArray], pa.Array]:
    """A test of ``column`` IN ``values`` to apply to many columns. Integer keys in a compact
    range (the usual serial/identity key) use a bitmap, several times faster than hashing."""
    values = values.drop_null()
    if len(values) and pa.types.is_integer(values.type):
        low, high = (v.as_py() for v in pc.min_max(values).values())
        if high - low < 200_000_000:
            bitmap = np.zeros(high - low + 1, dtype=bool)
            bitmap[values.to_numpy() - low] = True

            def by_bitmap(column: pa.ChunkedArray) -> pa.Array:
                if not pa.types.is_integer(column.type):
                    return pc.is_in(column, value_set=values)
                keys = column.combine_chunks().fill_null(low - 1).to_numpy() - low
                inside = (keys >= 0) & (keys <= high - low)
                found = np.zeros(len(keys), dtype=bool)
                found[inside] = bitmap[keys[inside]]
                return pa.array(found)

            return by_bitmap
    return lambda column: pc.is_in(column, value_set=values)
