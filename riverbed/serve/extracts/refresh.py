"""The refresh the pipeline's ``publish`` state runs: a new generation of the extract, made from
the previous one and what was loaded since, published atomically (store.py).

Incremental when it can be: the new generation starts as a copy of the previous file (a
reflink where the filesystem has them, store.clone); the loads the state store recorded since
the previous generation's watermark (``loaded_at`` of the newest load it holds, so loads of a
run whose refresh failed or was killed are taken by the next one) and the dimension attributes
changed since (changes.py) give the keys whose grain rows may have changed (a rename the
datasets show beside the key is relabelled in place instead: relabel.py), and each cell they
touch takes its delta (delta.py: those keys' rows now minus before), the rollups follow
their base's delta (derive.py). Cost follows the changes, not the history nor the days they
fall on. A dataset deltas cannot maintain (delta.maintained: every dataset of the extract
can, distinct orders included; one counting another distinct thing could not) has the
business days those keys fall on deleted and aggregated again from the warehouse's
current-state views limited to those days, and their change is its rollups' delta
(``Refreshed.by_days`` names them). The orders whose items span two days are kept beside the
datasets either way (split_orders.py: the guard on summing distinct orders over days).
The copy runs in a thread of its own (the kernel copies, then writes it to disk) while the
warehouse is read: the new batches' counts, the dimensions' snapshots, the previous
generation's consistency and changed keys (read-only) and the changed keys' versions; the
copy is opened once all of that is in hand. The changed cells are deleted and written again;
most checkpoints leave the deleted rows where they are, every VACUUM_EVERY-th reclaims them.
Whole when there is no previous generation, the datasets' definitions changed
(datasets.fingerprint), a fact was truncated, or a batch the previous generation counted
was withdrawn from a fact (``run --reprocess``; see _write).

Nothing here writes the warehouse (it is opened as the load states open it, with their memory,
not a reader's), so a failed refresh never undoes a load. ``RIVERBED_EXTRACT_FAULT`` (tests only): ``fail`` raises, ``kill`` kills the process
with SIGKILL, each after the new generation is written and before it is published.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.config import Project
from riverbed.errors import RiverbedError
from riverbed.load.model import FactModel, warehouse_model
from riverbed.load.warehouse import Warehouse, open_warehouse
from riverbed.private import FILE_MODE
from riverbed.serve.extracts import changes, delta, derive, partial, relabel, split_orders, store
from riverbed.serve.extracts.datasets import ALIASES, DATASETS, Dataset, fingerprint, personal_held
from riverbed.state import StateStore

# The cells a refresh changes are deleted and written again (delta.merge); reclaiming the
# deleted ones has the checkpoint merge and rewrite whole row groups (a month rollup's every
# cell, ~0.15 s each at 10M fact rows), so most refreshes leave them, as deleted rows, and
# every VACUUM_EVERY-th lets the checkpoint reclaim them all: readers skip a bounded share
# of dead rows, and the file stays the size it was (measured over 10 refreshes at 10M).
VACUUM_EVERY = 16
FAULT = "RIVERBED_EXTRACT_FAULT"
SOURCES = "extract_sources"  # the source tables' columns, for the policy (policy.py)


class RefreshError(RiverbedError):
    """The extract could not be refreshed; the previous generation stays current."""


@dataclass(frozen=True)
class Refreshed:
    generation: store.Generation
    cells: int  # rows written into the datasets
    days: int  # business days recomputed (all of them on a full build)
    seconds: float
    way: str = "whole"  # whole, days (the touched days summed again) or deltas (delta.py)
    by_days: tuple[str, ...] = ()  # the base datasets whose touched days were summed again
    relabelled: Relabelled | None = None  # what relabel.apply did (None: built whole)


@dataclass(frozen=True)
class Relabelled:
    """The cells a refresh gave renamed dimension members' new labels (relabel.py), and the
    seconds that took: each renamed member's cells over all its history, where every other
    change costs what it brings."""

    cells: int
    seconds: float


def refresh(project: Project, manifest: StateStore, run_id: str | None) -> Refreshed | None:
    """Refresh the extract; None when the warehouse has no semantic layer to extract (no
    ``fact_order_items_current`` and the rest), which is no error."""
    started = time.monotonic()
    held = personal_held(project.config)
    if held:
        raise RefreshError(
            f"the extract would hold personal data ({', '.join(held)}); an extract keeps no "
            "personal column, so `riverbed forget` never has to scrub one: untag the column "
            "or leave it out of the datasets"
        )
    previous = store.current(project)
    name = store.new_name()
    path = store.prepare(project, name)
    whole = previous is None or previous.fingerprint != fingerprint()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-copy") as copier:
        # the previous generation copied (the kernel's copy, the GIL let go) while the
        # warehouse is read; _write opens the copy, or drops it and builds whole
        copy = None
        if previous is not None and not whole:
            copy = copier.submit(_copied, store.path_of(project, previous.name), path)
        try:
            # opened as the load states open it (a query's memory limit is for readers);
            # never written
            warehouse = open_warehouse(project.config.warehouse, project.root)
            try:
                from riverbed.serve.queries import read_catalog

                catalog = read_catalog(warehouse).tables
                if not set(ALIASES.values()) <= set(catalog):
                    _closed(copy)
                    _remove(path)
                    return None
                # the loads since the previous generation's newest: what it holds is not
                # read again
                since = previous.watermark if previous is not None else None
                loads = [b for b in manifest.loads.loaded(since=since) if b.target in changes.FACTS]
                watermark = max((b.loaded_at for b in loads), default=since or 0.0)
                vacuum = previous is None or previous.unvacuumed + 1 >= VACUUM_EVERY
                way, cells, days, by_days, relabelled = _write(
                    warehouse, catalog, path, previous, copy, project, loads, vacuum
                )
            finally:
                warehouse.close()
        except BaseException:
            _closed(copy)
            _remove(path)
            raise
    _fault()
    generation = store.Generation(
        name=name,
        fingerprint=fingerprint(),
        watermark=watermark,
        run_id=run_id,
        loaded_at=manifest.loads.last_loaded_at(),
        refreshed_at=time.time(),
        full=way == "whole",
        unvacuumed=0 if vacuum or way == "whole" or previous is None else previous.unvacuumed + 1,
    )
    store.publish(project, generation)
    store.prune(project)
    return Refreshed(generation, cells, days, time.monotonic() - started, way, by_days, relabelled)


def _write(
    warehouse: Warehouse,
    catalog: dict[str, dict[str, str]],
    path: Path,
    previous: store.Generation | None,
    copy: Future[duckdb.DuckDBPyConnection] | None,
    project: Project,
    loads: list,  # type: ignore[type-arg]
    vacuum: bool,
) -> tuple[str, int, int, tuple[str, ...], Relabelled | None]:
    """Write the new generation at ``path``: (how, as Refreshed.way; cells written, days; the
    datasets whose days were summed again; the relabelling, None when built whole).
    ``copy``: the previous generation being copied there and opened (None: built whole).
    ``vacuum``: the checkpoint may merge row groups to reclaim deleted cells (VACUUM_EVERY)."""
    full = copy is None
    changed = changes.Changed()
    facts = warehouse_model(project.config).facts
    fetched: delta.Fetched | None = None
    extract: duckdb.DuckDBPyConnection | None = None
    if previous is not None and copy is not None:
        before = store.path_of(project, previous.name)
        for batch in loads:
            if batch.loaded_at > previous.watermark:  # runs take turns: none loads meanwhile
                changed.batches.setdefault(batch.target, []).append(batch.batch_id)
    rows = changes.fact_rows(warehouse, changed)
    full = full or rows.truncated
    counts = rows.counts
    snapshots = {s: warehouse.query(changes.snapshot_query(s)) for s in changes.SNAPSHOTS}
    relabelled_keys: dict[str, list[int]] = {}
    if copy is not None and not full:
        full, changed.keys, relabelled_keys = _previously(before, counts, snapshots)
        if not full and changed and delta.maintained(_bases(), facts):
            fetched = delta.fetch(warehouse, changed, facts, catalog)
    if copy is not None:
        extract = copy.result()  # done (or failed) before the file is used or removed
    if full:
        if extract is not None:
            extract.close()
        _remove(path)
        extract = _opened(path)
    assert extract is not None
    if not vacuum:
        extract.execute("SET max_vacuum_tasks = 0")
    try:
        way = "whole"
        by_days: tuple[str, ...] = ()
        relabelled = None
        # first: written with the datasets, not after them (a checkpoint of their own)
        delta.record(extract, counts)
        _replace(extract, SOURCES, _sources(catalog))
        if full:
            cells, day_count = _build(extract, warehouse)
            split_orders.build(extract, warehouse)
        else:
            # first: the deltas read the relabelled keys' rows before as labelled now
            begun = time.monotonic()
            relabelled_cells = relabel.apply(extract, snapshots, relabelled_keys)
            relabelled = Relabelled(relabelled_cells, time.monotonic() - begun)
            way, cells, day_count, by_days = _recompute(
                extract, warehouse, changed, facts, catalog, snapshots, fetched
            )
            cells += relabelled_cells
            if way == "days":  # else redone for the orders delta.grains read
                split_orders.update(extract, warehouse, changed, facts)
        for snapshot, rows in snapshots.items():  # after: the deltas read them as before
            if full:
                _replace(extract, snapshot, rows)
            elif changed.keys.get(snapshot):  # else the copy is still the same
                _renew(extract, snapshot, rows, changed.keys[snapshot])
        extract.execute("CHECKPOINT")
    finally:
        extract.close()
    return way, cells, day_count, by_days, relabelled


def _closed(copy: Future[duckdb.DuckDBPyConnection] | None) -> None:
    """The copy done and its connection closed (it may be closed already), whatever befell."""
    if copy is not None:
        with contextlib.suppress(Exception):
            copy.result().close()


def _copied(before: Path, path: Path) -> duckdb.DuckDBPyConnection:
    """The previous generation copied to ``path`` and opened (in the copy's thread: the
    open reads the file's metadata while the warehouse is still read)."""
    store.clone(before, path)
    return _opened(path)


def _opened(path: Path) -> duckdb.DuckDBPyConnection:
    extract = duckdb.connect(str(path))
    path.chmod(FILE_MODE)  # DuckDB refuses an empty file made for it: tightened once open
    return extract


def _previously(
    before: Path, counts: dict[str, tuple[int, int]], snapshots: dict[str, pa.Table]
) -> tuple[bool, dict[str, list[int]], dict[str, list[int]]]:
    """From the previous generation (read while it is copied): whether it must be built whole
    instead, and the dimension keys whose shown attributes changed since it was made: those
    whose cells are counted again, and those relabelled in place (relabel.py).

    Whole when a batch the previous generation counted was withdrawn from a fact (`run
    --reprocess`): the state before the run cannot be read from the facts, nor are the
    withdrawn rows' keys and days named by any new batch (there may be none), so it is built
    whole, the one way that is exact then; a rare path, on a user's command."""
    with duckdb.connect(str(before), read_only=True) as extract:
        if not delta.consistent(extract, counts):
            return True, {}, {}
        found = {s: relabel.split(extract, s, t) for s, t in snapshots.items()}
    return False, {s: k[0] for s, k in found.items()}, {s: k[1] for s, k in found.items()}


def _bases() -> list[Dataset]:
    return [d for d in DATASETS if d.rollup_of is None]


def _build(extract: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> tuple[int, int]:
    """Every dataset whole: (cells written, days)."""
    # stored in day order: a refresh's days are the newest, so its deletes and the
    # checkpoint after them touch the last row groups only, not every one
    cells = sum(
        _replace(extract, d.name, warehouse.query(partial.counted(d)), order="date_key")
        for d in DATASETS
        if d.rollup_of is None
    )
    derive.build(extract)
    days = extract.execute("SELECT COUNT(DISTINCT date_key) FROM extract_sales").fetchall()
    return cells, int(days[0][0])


def _recompute(
    extract: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    changed: changes.Changed,
    facts: Sequence[FactModel],
    catalog: dict[str, dict[str, str]],
    snapshots: dict[str, pa.Table],
    fetched: delta.Fetched | None,
) -> tuple[str, int, int, tuple[str, ...]]:
    """Bring the cells ``changed`` touches up to date: (how, cells changed, days they fall on,
    the datasets whose days were summed again). By deltas of the changed keys for the
    datasets delta.py maintains (``deltas``); the others' touched days summed again, their
    cells' change kept as the delta the rollups take (``days`` when no dataset took deltas).

    Each base dataset and its rollups (a family: their deltas follow each other's) is merged
    in a transaction of its own, on a cursor of its own, one a core at once: a merge of a few
    thousand cells keeps one core busy, and the families write tables apart. The file is
    published whole or not at all (refresh), so no reader sees one family merged alone."""
    if not changed:
        return "deltas", 0, 0, ()
    bases = _bases()
    by_deltas = delta.maintained(bases, facts)
    by_days = [d for d in bases if d not in by_deltas]
    cells, days = 0, set[int]()
    if by_days:
        extract.execute("BEGIN")
        cells, days = _redo_touched(extract, warehouse, changed, by_days, facts, catalog)
        for base in by_days:
            derive.refresh(extract, base)
        extract.execute("COMMIT")
    if by_deltas:
        assert fetched is not None, "the changed keys' versions are fetched when deltas apply"
        # the largest families first, the widest grain first among equals: the last to
        # start is a small one
        largest_first = sorted(
            by_deltas, key=lambda d: (derive.family(d), len(d.column_names)), reverse=True
        )
        workers = max(1, min(len(largest_first), os.cpu_count() or 1))
        # one thread a query: DuckDB's threads cost a small query more than they give it,
        # and the sides (delta.grains), then the families keep the cores busy
        extract.execute("SET threads = 1")
        try:
            grains = delta.grains(extract, fetched, changed, by_deltas, facts, snapshots)
            with ThreadPoolExecutor(workers, thread_name_prefix="extract-merge") as pool:
                merged = pool.map(lambda base: _merge_family(extract, grains, base), largest_first)
                for family_cells, family_days in merged:
                    cells, days = cells + family_cells, days | family_days
        finally:
            extract.execute("RESET threads")
    way = "deltas" if by_deltas else "days"
    return way, cells, len(days), tuple(d.name for d in by_days)


def _merge_family(
    extract: duckdb.DuckDBPyConnection, grains: dict[str, pa.Table], base: Dataset
) -> tuple[int, set[int]]:
    """``base``'s delta made from the ``grains`` (delta.grains) and merged, its rollups
    after it, in one transaction: (the base's cells changed, the days they fall on)."""
    with extract.cursor() as family:
        for name, rows in grains.items():
            family.register(name, rows)
        family.execute("BEGIN")
        delta.subtract(family, base)
        cells = delta.merge(family, base)
        derive.refresh(family, base)
        days = delta.days_of(family, [base])
        family.execute("COMMIT")
    return cells, days


def _redo_touched(
    extract: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    changed: changes.Changed,
    bases: list[Dataset],
    facts: Sequence[FactModel],
    catalog: dict[str, dict[str, str]],
) -> tuple[int, set[int]]:
    """Sum again the days ``changed`` touches of ``bases``: (cells written, the days)."""
    item_days, return_days = changes.affected_days(warehouse, changed)
    cells = 0
    for relation, days in (("items", item_days), ("returns", return_days)):
        datasets = [d for d in bases if d.relation.name == relation]
        for dataset in datasets:
            delta.before_days(extract, dataset, days)
        if days and datasets:
            rows = warehouse.query(partial.grain_rows(datasets, days, facts, catalog))
            cells += sum(_redo_days(extract, d, days, rows) for d in datasets)
    return cells, set(item_days) | set(return_days)


def _redo_days(
    extract: duckdb.DuckDBPyConnection, dataset: Dataset, days: list[int], rows: pa.Table
) -> int:
    """Replace ``dataset``'s cells of ``days`` with those summed from the grain ``rows``, the
    change kept in ``delta_<dataset>`` (delta.before_days took the old cells away: the new
    ones are added)."""
    extract.execute(
        f"DELETE FROM {dataset.name} WHERE date_key IN (SELECT UNNEST(?::INTEGER[]))", [days]
    )
    with _registered(extract, "grain_rows", rows):
        cells = partial.local_cells(dataset, "grain_rows", grain=True)
        inserted = extract.execute(f"INSERT INTO {dataset.name} BY NAME {cells}").fetchall()
        extract.execute(f"INSERT INTO delta_{dataset.name} BY NAME {cells}")
    return int(inserted[0][0])


def _replace(
    extract: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, order: str | None = None
) -> int:
    ordered = f" ORDER BY {order}" if order else ""
    with _registered(extract, "incoming", _widened(rows)):
        extract.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming{ordered}")
    return rows.num_rows


def _renew(
    extract: duckdb.DuckDBPyConnection, snapshot: str, now: pa.Table, keys: list[int]
) -> None:
    """``snapshot``'s rows of ``keys`` (those counted again: new, gone or changed) made as
    ``now`` has them; its relabelled keys took theirs in place (relabel.apply) and the others
    are the same. Written again whole, a snapshot of every customer cost each refresh a
    copy of them all (0.07 s at 600,000 customers, issue 20 §1)."""
    key = changes.SNAPSHOTS[snapshot][1]
    extract.execute(f"DELETE FROM {snapshot} WHERE {key} IN (SELECT UNNEST(?::BIGINT[]))", [keys])
    incoming = now.filter(pc.is_in(now.column(key), pa.array(keys, now.schema.field(key).type)))
    with _registered(extract, "incoming", _widened(incoming)):
        extract.execute(f"INSERT INTO {snapshot} BY NAME SELECT * FROM incoming")


@contextlib.contextmanager
def _registered(extract: duckdb.DuckDBPyConnection, name: str, rows: pa.Table) -> Iterator[None]:
    """``rows`` readable as ``name`` in ``extract`` while the block runs."""
    extract.register(name, rows)
    try:
        yield
    finally:
        extract.unregister(name)


def _widened(rows: pa.Table) -> pa.Table:
    """``rows`` with every decimal as wide as a decimal goes, its scale kept: a PostgreSQL
    batch is typed by its own values (a sum of small counts: DECIMAL(1,0)), and a later
    refresh's cells must fit the column the full build made."""
    schema = pa.schema(
        field.with_type(pa.decimal128(38, field.type.scale))
        if pa.types.is_decimal(field.type)
        else field
        for field in rows.schema
    )
    return rows if schema == rows.schema else rows.cast(schema)


def _sources(catalog: dict[str, dict[str, str]]) -> pa.Table:
    tables = sorted(set(ALIASES.values()))
    rows = [
        (table, column, position)
        for table in tables
        for position, column in enumerate(catalog.get(table, {}))
    ]
    return pa.table(
        {
            "table_name": [r[0] for r in rows],
            "column_name": [r[1] for r in rows],
            "position": [r[2] for r in rows],
        }
    )


def _fault() -> None:
    fault = os.environ.get(FAULT)
    if fault == "fail":
        raise RefreshError("injected fault (RIVERBED_EXTRACT_FAULT=fail)")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)
