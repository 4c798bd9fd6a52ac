"""A table's current rows kept compacted beside its staged batches, so that reading them (the
rules' "exists in", "unique", a reference to the table) costs a few files, not one per batch
the table ever staged.

Every staged batch holds versions; the current rows are the latest version of each key
(deletes included, as tombstones, so a batch staged later with older positions, a reprocessed
one, still loses to them). Files of current rows are kept in tiers under
``current/<table>/``: once FAN_IN staged files are not covered by any, they are merged into one
file of tier 1; once FAN_IN files of tier k exist, they are merged into one of tier k + 1.
A merged file goes at least to the tier its rows belong to (TIER_ROWS x FAN_IN^(k-1) rows and
more: tier k), so a big one, a snapshot's, is not merged again with small ones at every tier.
A row is rewritten once per tier it climbs, so a batch's cost stays the rows it brings (times
the few tiers), and a read opens at most FAN_IN - 1 files per tier plus the uncovered staged
files: O(log batches), sorted by key so a read by key takes a row group or two of each.

Each file names in its Parquet metadata the staged files it covers. Nothing else records
them: a compacted file is derived data, written atomically and rebuildable from the staged
files, so a kill -9 at any point loses nothing. A kill between writing a merged file and
deleting the files it merged leaves files whose staged files it covers too: a read takes the
covering file and deletes the covered ones. A compacted file naming a staged file the manifest
no longer lists (a batch withdrawn by ``run --reprocess``, a lake captured again) is stale: it
is deleted and its still-listed staged files are read directly until the next merge.
``riverbed forget`` deletes a table's compacted files with the rest of its erasure
(riverbed.lake.scrub.drop_compacted), so erased values never outlive it here.

The same tiers keep, under ``toast/<table>/``, what resolving unchanged-TOAST marks reads of
a table's raw files (``TOAST``: per key its last row and the last one holding each value, as
read.latest_values keeps of the history): once a table's batches carry marks their
consumed raw files are compacted, so a mark costs a few files however long the table's
history. Raw files no batch consumed yet are never covered.

The files are lake files like the rest: encrypted when the lake is; current rows hold what
staged files hold (personal columns already protected by the transform), the TOAST history
what raw files hold, and an erasure deletes both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.lake import layout
from riverbed.lake.parquet import open_file, read_table, write_table
from riverbed.lake.reader import concat_versions
from riverbed.lake.schema import CDC_COLUMNS, TOAST_UNCHANGED
from riverbed.lake.storage import LakeFileMissing, LakeStorage
from riverbed.state import LakeFile, StateStore

FAN_IN = 8  # files merged at once, and the most one tier holds before it is merged
TIER_ROWS = 8192  # a file of more rows than this times FAN_IN^(k-1) belongs to tier k + 1
_COVERS = b"riverbed.covers"  # Parquet metadata: JSON list of the staged paths a file covers
_TIER = b"riverbed.tier"
log = logging.getLogger("riverbed.transform")


Reduce = Callable[[pa.Table, Sequence[str]], pa.Table]  # rows in source order, keys -> kept


@dataclass(frozen=True)
class Kind:
    """What is compacted: the files of a manifest ``stage`` of a table, under ``prefix``,
    each merge keeping what ``reduce`` keeps of their rows."""

    prefix: str
    stage: str
    reduce: Reduce


def latest(rows: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The last row of each key of ``rows`` (in source order), deletes included, in the
    order those rows came."""
    numbered = rows.append_column("__i", pa.array(np.arange(rows.num_rows)))
    last = numbered.select([*keys, "__i"]).group_by(list(keys)).aggregate([("__i", "max")])
    newest = last.column("__i_max")
    return rows.take(newest.take(pc.sort_indices(newest)))


def toast_history(rows: pa.Table, keys: Sequence[str]) -> pa.Table:
    """What resolving unchanged-TOAST marks after ``rows`` needs of them, for every column
    (read.latest_values): per key its last row and the last one holding each value."""
    from riverbed.transform.read import latest_values

    if TOAST_UNCHANGED not in rows.column_names:  # no mark can follow: the last rows do
        return latest(rows, keys)
    values = [n for n in rows.column_names if n not in keys and n not in CDC_COLUMNS]
    return latest_values(rows, list(keys), values)


# a table's current rows, from its staged batches (rules read them: current.py)
CURRENT = Kind(layout.CURRENT, layout.STAGED, latest)
# the raw versions that fill unchanged-TOAST marks, from the raw files batches consumed
TOAST = Kind(layout.TOAST, layout.RAW, toast_history)


@dataclass(frozen=True)
class Compacted:
    """One file of compacted current rows and the staged files it covers."""

    path: str
    tier: int
    covers: frozenset[str]


@dataclass(frozen=True)
class Sources:
    """What holds what a kind keeps of a table: compacted files and the files none covers."""

    compacted: tuple[Compacted, ...]
    uncovered: tuple[LakeFile, ...]  # in the manifest's order

    @property
    def paths(self) -> list[str]:
        return [c.path for c in self.compacted] + [f.path for f in self.uncovered]


def folder(table: str, kind: Kind = CURRENT) -> str:
    return layout.compacted_prefix(kind.prefix, table)


def sources(
    storage: LakeStorage, manifest: StateStore, table: str, kind: Kind = CURRENT
) -> Sources:
    """The files to read ``table``'s rows of ``kind`` from; stale and superseded compacted
    files are deleted on the way (see the module docstring)."""
    listed = manifest.lake.files(kind.stage, table)
    present = {f.path for f in listed}
    found = []
    for path in storage.list(folder(table, kind)):
        described = _describe(storage, path)
        if described is None or not described.covers <= present:
            _delete(storage, path)  # unreadable or stale: rebuilt from the staged files
            continue
        found.append(described)
    kept: list[Compacted] = []
    # widest first: a file whose staged files a wider one covers was merged into it
    for candidate in sorted(found, key=lambda c: (-len(c.covers), c.path)):
        if any(candidate.covers & k.covers for k in kept):
            _delete(storage, candidate.path)
            continue
        kept.append(candidate)
    covered = set().union(*(c.covers for c in kept)) if kept else set()
    return Sources(tuple(kept), tuple(f for f in listed if f.path not in covered))


def compact(
    storage: LakeStorage,
    manifest: StateStore,
    table: str,
    keys: Sequence[str],
    kind: Kind = CURRENT,
    *,
    leave: AbstractSet[str] = frozenset(),
) -> int:
    """Merge what is due (module docstring) after ``table`` staged a batch; files written.
    ``leave``: files not to cover yet (raw files no batch has consumed)."""
    found = sources(storage, manifest, table, kind)
    written = 0
    due = [f.path for f in found.uncovered if f.path not in leave]
    if len(due) >= FAN_IN:
        _merge(storage, table, keys, kind, 1, due, frozenset(due), [])
        found = sources(storage, manifest, table, kind)
        written += 1
    tier = 1
    while any(c.tier >= tier for c in found.compacted):
        same = [c for c in found.compacted if c.tier == tier]
        if len(same) >= FAN_IN:
            covers = frozenset().union(*(c.covers for c in same))
            _merge(storage, table, keys, kind, tier + 1, [c.path for c in same], covers, same)
            found = sources(storage, manifest, table, kind)
            written += 1
        tier += 1
    return written


def _merge(
    storage: LakeStorage,
    table: str,
    keys: Sequence[str],
    kind: Kind,
    tier: int,
    inputs: list[str],
    covers: frozenset[str],
    replaced: list[Compacted],
) -> None:
    from riverbed.transform.read import in_source_order

    rows = in_source_order(concat_versions([read_table(storage, p) for p in inputs]))
    merged = kind.reduce(rows, keys)
    merged = merged.take(pc.sort_indices(merged, sort_keys=[(k, "ascending") for k in keys]))
    tier = max(tier, _tier_of(merged.num_rows))
    metadata = dict(merged.schema.metadata or {})
    metadata[_COVERS] = json.dumps(sorted(covers)).encode()
    metadata[_TIER] = str(tier).encode()
    path = layout.compacted_file_path(kind.prefix, table, tier, uuid.uuid4().hex[:12])
    write_table(storage, path, merged.replace_schema_metadata(metadata))
    for old in replaced:  # a kill before this: the next read drops them (covered)
        _delete(storage, old.path)
    log.debug("%s: %d current rows of %d files compacted into %s", table, merged.num_rows,
              len(inputs), path)  # fmt: skip


def _tier_of(rows: int) -> int:
    tier, size = 1, TIER_ROWS
    while rows > size:
        tier, size = tier + 1, size * FAN_IN
    return tier


def _describe(storage: LakeStorage, path: str) -> Compacted | None:
    try:
        metadata = open_file(storage, path).schema_arrow.metadata or {}
        covers = json.loads(metadata[_COVERS])
        return Compacted(path, int(metadata[_TIER]), frozenset(covers))
    except (LakeFileMissing, KeyError, ValueError, OSError, pa.ArrowException):
        return None


def _delete(storage: LakeStorage, path: str) -> None:
    with contextlib.suppress(LakeFileMissing):
        storage.delete(path)
