"""Dimension attributes changed in place: a seller renamed or moved to another region, a product
renamed, without a pass over the history of the key.

A dataset shows a dimension's attributes beside its key where it holds both (``seller_id``
with ``seller`` and ``seller_region``): one key is one value of each, so the key's cells are
the same cells after the change, only labelled anew. Counting them again from the warehouse
(changes.py: every item of the key, over all its history) costs what the key's history costs
(a seller of three years: every day of the three years), which is what made a refresh grow
with the history (issue 20 §1: 0.6M cells over all 914 days for one 10,000-change run at 30x).
So a key present before and now whose changed attributes are all *relabelable* (every dataset
showing them holds the key too) is not a changed key for the deltas: its cells take the new
values by an UPDATE on the key, in every dataset and rollup showing them, and the previous
generation's snapshot row takes them too, so the deltas of the same refresh (other changes
to the same key's items) read the key's rows before as labelled now and meet the relabelled
cells. A key new or gone, or with an attribute a dataset shows without the key (a product's
category in the per-customer cells, a customer's region in the sales cells), is a changed key
as before: its cells are counted again (delta.py).
"""

from __future__ import annotations

from functools import cache

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.serve.extracts import changes
from riverbed.serve.extracts.datasets import ALIASES, DATASETS, Dataset

RELABELLED = "relabelled_rows"  # the new values of the keys relabelled, while it runs


def _alias(snapshot: str) -> str:
    dimension = changes.SNAPSHOTS[snapshot][0]
    return next(alias for alias, table in ALIASES.items() if table == dimension)


@cache
def shown(snapshot: str) -> tuple[tuple[Dataset, str, tuple[tuple[str, str], ...]], ...]:
    """Per dataset showing an attribute of ``snapshot``'s dimension: (the dataset, its column
    holding the key or "" when it holds none, (its column, the attribute) of each one shown)."""
    _, _, attributes = changes.SNAPSHOTS[snapshot]
    alias = _alias(snapshot)
    found = []
    for dataset in DATASETS:
        mapping = dataset.mapping()
        columns = tuple((mapping[(alias, a)], a) for a in attributes if (alias, a) in mapping)
        if columns:
            found.append((dataset, dataset.key_of(columns[0][0]) or "", columns))
    return tuple(found)


@cache
def relabelable(snapshot: str) -> frozenset[str]:
    """The attributes of ``snapshot`` every dataset showing them shows beside the key."""
    _, _, attributes = changes.SNAPSHOTS[snapshot]
    keyless = {a for _, key, columns in shown(snapshot) if not key for _, a in columns}
    return frozenset(attributes) - keyless


def split(
    extract: duckdb.DuckDBPyConnection, snapshot: str, now: pa.Table
) -> tuple[list[int], list[int]]:
    """(the keys to count again, the keys to relabel) of those whose shown attributes differ
    between the extract's ``snapshot`` and ``now``: a new or gone key, or one with an attribute
    changed that is not relabelable, is counted again."""
    _, key, attributes = changes.SNAPSHOTS[snapshot]
    differ = " OR ".join(f"n.{c} IS DISTINCT FROM s.{c}" for c in (key, *attributes))
    fixed = [a for a in attributes if a not in relabelable(snapshot)]
    counted = " OR ".join(
        [f"n.{key} IS NULL", f"s.{key} IS NULL", *(f"n.{a} IS DISTINCT FROM s.{a}" for a in fixed)]
    )
    extract.register("now_rows", now)
    try:
        # one hash join on the key (a key is one row each side: current rows)
        found = extract.execute(
            f"SELECT COALESCE(n.{key}, s.{key}), {counted} FROM now_rows AS n"
            f" FULL JOIN {snapshot} AS s ON n.{key} = s.{key} WHERE {differ}"
        ).fetchall()
    finally:
        extract.unregister("now_rows")
    again = sorted({int(k) for k, count in found if k is not None and count})
    relabel = sorted({int(k) for k, count in found if k is not None and not count})
    return again, relabel


def apply(
    extract: duckdb.DuckDBPyConnection, now: dict[str, pa.Table], keys: dict[str, list[int]]
) -> int:
    """Give the cells of ``keys`` (snapshot -> keys to relabel) their attributes ``now`` in
    every dataset showing them, and the snapshot rows too (see the module docstring): the
    cells relabelled."""
    cells = 0
    for snapshot, relabel in keys.items():
        if not relabel:
            continue
        _, key, attributes = changes.SNAPSHOTS[snapshot]
        rows = now[snapshot]
        extract.register(RELABELLED, rows.filter(pc.is_in(rows.column(key), pa.array(relabel))))
        try:
            for dataset, held, columns in shown(snapshot):
                if not held:
                    continue
                sets = ", ".join(f'"{column}" = r.{a}' for column, a in columns)
                done = extract.execute(
                    f"UPDATE {dataset.name} AS t SET {sets} FROM {RELABELLED} AS r"
                    f' WHERE t."{held}" = r.{key}'
                ).fetchall()
                cells += int(done[0][0]) if dataset.rollup_of is None else 0
            sets = ", ".join(f"{a} = r.{a}" for a in attributes)
            extract.execute(
                f"UPDATE {snapshot} AS t SET {sets} FROM {RELABELLED} AS r WHERE t.{key} = r.{key}"
            )
        finally:
            extract.unregister(RELABELLED)
    return cells
