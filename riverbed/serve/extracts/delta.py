"""Cells maintained by deltas: a refresh's cost follows the rows that changed, not the days
they fall on nor the history.

A cell is a sum over grain rows (partial.py), so the new cell is the old one plus the grain
rows of the changed keys as they are now, minus the same keys' rows as they were when the
previous generation was made. The keys are those every change reaches (changes.changed_keys:
the items a change touches, their returns and orders, and every item of those orders: see
distinct orders below); each fact's versions of them are read
from the warehouse once (a semi-join on the keys, which the scan's zone maps narrow to the
recent row groups), and the extract ranks them twice into the current-state views' rows
(riverbed.load.fact_current.current_rows):

* now: every version;
* before: every version but those of the batches loaded since (the facts are event facts:
  a load only appends, so the rows before those batches are the state the previous
  generation counted).

The dimensions' rows are the ``snapshot_*`` copies the previous generation kept (before) and
the ones just read (now), dim_date the warehouse's (its days only grow). The grain query runs
in the extract over temporary views of those names, so it is the same query that counts a
rebuild. Each dataset's delta is summed per cell and merged (a cell changed, created, or
deleted when its rows count reaches 0; a SUM whose non-NULL count reaches 0 is NULL again;
see merge for how the cells are written);
the rollups take the sum of their base's delta per coarser cell, so a month's cells are never
summed again from its days.

A cell's distinct orders (``orders``, COUNT(DISTINCT i.order_id)) is no sum, but it is the
number of orders with at least one item counted in the cell, and an order's contribution to a
cell depends only on its own items. So the keys are widened to whole orders (every item of
each order an item or a return changed in, or whose customer or status changed), each side's
orders are counted distinct per cell and the counts subtracted (``subtract``): the orders
left out have the same items on both sides, so they count the same before and now, and the
difference is exact. The sums of the same cells come out right too (the unchanged items of a
widened order cancel). An order found on one side only (new, or all its items deleted) is
counted on that side alone.

The rollups' distinct orders (``extract_*_orders_monthly``) are their base's days' summed,
as a full build makes them (derive.py), whether or not an order spans two days: a month's
cell holds the sum of its days' cells, so its delta is the sum of its days' deltas, as for
any sum. While split_orders.py holds an order those sums are not the months' distinct
orders, and rollup.py then reads no summed orders (the charts counting them are answered
live); once it holds none again, each month's sum is its count again, with no refresh of it.

It maintains a dataset whose every measure is additive or counts distinct orders
(``maintained``: another count distinct, of customers say, would need whole customers) and
whose grain reads only facts, snapshotted dimensions (their kept attributes) and dim_date,
while the facts hold what the previous generation counted plus the new batches and nothing
else (``extract_fact_rows``; after a withdrawn batch, ``run --reprocess``, the state before
cannot be read and refresh.py builds the extract whole). The other datasets have the touched
days summed again (refresh.py), in the same refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from riverbed.lake.schema import OP
from riverbed.load.fact_current import current_rows
from riverbed.load.model import FactModel
from riverbed.load.warehouse import Warehouse
from riverbed.serve.extracts import changes, partial, split_orders
from riverbed.serve.extracts.datasets import DATE_COLUMNS, Dataset
from riverbed.serve.semantic.measures import MEASURES

# a count distinct deltas keep: of the order, which every item of the order shares
WHOLE_ORDER = frozenset({"i.order_id"})
FACT_ROWS = "extract_fact_rows"  # each fact's rows when the generation was made
DATE = "dim_date"
DAY = "date_key"
# a day's parts (dataset column -> dim_date's), which its date_key gives (_keys)
DAY_PARTS = {name: sources[0].split(".", 1)[1] for name, sources in DATE_COLUMNS[1:]}
DATES = "grain_dates"  # dim_date, as the families read it (refresh._merge_family)
# dimension -> its snapshot, the columns it keeps
_KEPT = {
    dim: (snapshot, {key, *attrs}) for snapshot, (dim, key, attrs) in changes.SNAPSHOTS.items()
}


def maintained(datasets: Sequence[Dataset], facts: Sequence[FactModel]) -> list[Dataset]:
    """Those of ``datasets`` (the extract's base ones) deltas can maintain; the others' touched
    days are summed again (refresh.py)."""
    views = frozenset(f.view for f in facts if f.name in changes.FACTS)
    summable = tuple(d for d in datasets if all(map(_kept_by_deltas, d.measures)))
    return [d for d in summable if _readable(_of_relation(summable, d.relation.name), views)]


def _kept_by_deltas(measure: str) -> bool:
    """An additive measure, or a count distinct of the order (the keys taken whole orders)."""
    return MEASURES[measure].additive or MEASURES[measure].expr in WHOLE_ORDER


def _of_relation(datasets: tuple[Dataset, ...], relation: str) -> tuple[Dataset, ...]:
    return tuple(d for d in datasets if d.relation.name == relation)


@cache
def _readable(datasets: tuple[Dataset, ...], views: frozenset[str]) -> bool:
    """Whether every table the grain of ``datasets`` (one relation's) reads can be read as it
    was before the loads since: a fact, dim_date, a snapshotted dimension's kept columns."""
    select = partial.grain_select(datasets)
    aliases = {}
    for table in select.find_all(exp.Table):
        if table.name not in views and table.name not in _KEPT and table.name != DATE:
            return False
        aliases[table.alias_or_name] = table.name
    for column in select.find_all(exp.Column):
        kept = _KEPT.get(aliases.get(column.table, ""))
        if kept and column.name not in (*kept[1], "is_current_record"):
            return False
    return True


def consistent(extract: duckdb.DuckDBPyConnection, counts: dict[str, tuple[int, int]]) -> bool:
    """Whether each fact holds the rows the previous generation counted plus the new ones."""
    if not extract.execute(
        "SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [FACT_ROWS]
    ).fetchall():
        return False
    recorded = dict(extract.execute(f"SELECT fact, n FROM {FACT_ROWS}").fetchall())
    return all(recorded.get(fact) == n - new for fact, (n, new) in counts.items())


def record(extract: duckdb.DuckDBPyConnection, counts: dict[str, tuple[int, int]]) -> None:
    extract.execute(f"CREATE OR REPLACE TABLE {FACT_ROWS} (fact VARCHAR, n BIGINT)")
    extract.executemany(
        f"INSERT INTO {FACT_ROWS} VALUES (?, ?)", [(f, n) for f, (n, _) in counts.items()]
    )


@dataclass(frozen=True)
class Fetched:
    """What a refresh by deltas reads of the warehouse (``fetch``): each fact's versions of
    the changed keys, and dim_date."""

    versions: dict[str, pa.Table]
    dates: pa.Table


def fetch(
    warehouse: Warehouse,
    changed: changes.Changed,
    facts: Sequence[FactModel],
    catalog: dict[str, dict[str, str]],
) -> Fetched:
    """Every version of the keys every change reaches (changes.changed_keys: whole orders),
    per fact, truncates included; read before the extract is open (refresh.py reads them
    while the previous generation is being copied)."""
    keys = changes.changed_keys(warehouse, changed)
    # the items first: their orders' range bounds the orders' scan
    ranked = sorted((f for f in facts if f.name in keys), key=lambda f: f.name != changes.ITEM_FACT)
    fetched: dict[str, pa.Table] = {}
    for fact in ranked:
        columns = ", ".join(catalog[fact.name])
        where = keys[fact.name]
        if fact.name == changes.STATUS_FACT:
            orders = pc.min_max(fetched[changes.ITEM_FACT].column("order_id"))
            lo, hi = orders["min"].as_py(), orders["max"].as_py()
            where = f"{changes.between('order_id', lo, hi)} AND {where}"
        # the truncates too: the ranking finds the last one among the rows it is given
        fetched[fact.name] = changes.read(
            warehouse,
            f"SELECT {columns} FROM {fact.name} WHERE {where}"
            f" UNION ALL SELECT {columns} FROM {fact.name} WHERE {OP} = 'T'",
        )
    return Fetched(fetched, warehouse.query(exp.select("*").from_(DATE)))


def grains(
    extract: duckdb.DuckDBPyConnection,
    fetched: Fetched,
    changed: changes.Changed,
    datasets: Sequence[Dataset],
    facts: Sequence[FactModel],
    now: dict[str, pa.Table],
) -> dict[str, pa.Table]:
    """The grain rows of the changed keys, as they are now and as they were before, per
    relation of the base ``datasets``: ``grain_<now|before>_<relation>``, and dim_date
    (``grain_dates``), what subtract reads; and split_orders redone for the orders of the keys
    (whole orders: each with all its items). ``fetched``: the keys' versions (fetch); ``now``:
    the snapshots' rows just read. The two sides are made at once, each on a cursor of its own
    (a DuckDB query of a few thousand rows keeps one core busy; the two sides share nothing
    but what they read)."""
    ranked = tuple(f for f in facts if f.name in fetched.versions)
    relations = tuple(
        tuple(e for e in datasets if e.relation is d.relation)
        for d in {d.relation.name: d for d in datasets}.values()
    )
    narrowed = _narrowed(tuple(datasets), tuple((f.view, f.name) for f in ranked))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="extract-side") as pool:
        sides = [
            pool.submit(_side, extract, state, fetched, changed, ranked, relations, narrowed, now)
            for state in ("now", "before")
        ]
        found = {name: rows for side in sides for name, rows in side.result().items()}
    return {**found, DATES: fetched.dates}


def _side(
    extract: duckdb.DuckDBPyConnection,
    state: str,
    fetched: Fetched,
    changed: changes.Changed,
    ranked: tuple[FactModel, ...],
    relations: tuple[tuple[Dataset, ...], ...],
    narrowed: dict[str, str],
    now: dict[str, pa.Table],
) -> dict[str, pa.Table]:
    """One side's grain rows (grains): the facts' versions ranked into the current-state
    views' rows (all of them now; before, all but those of the batches loaded since), the
    snapshotted dimensions as they are now or were kept, and each relation's grain query
    over them, in a cursor's temporary tables (the cursor's own: gone when it closes)."""
    with extract.cursor() as side:
        for fact in ranked:
            side.register(f"versions_{fact.name}", fetched.versions[fact.name])
            source = f"versions_{fact.name}"
            if state == "before":
                new = exp.column("batch_id").isin(
                    *(exp.Literal.string(b) for b in changed.batches.get(fact.name, []))
                )
                loaded_since = new.sql(dialect="duckdb") if new.expressions else "FALSE"
                source = f"before_{fact.name}"
                side.execute(
                    f"CREATE TEMP VIEW {source} AS SELECT * FROM versions_{fact.name}"
                    f" WHERE NOT COALESCE({loaded_since}, FALSE)"
                )
            names = [c for c in fetched.versions[fact.name].column_names if c != OP]
            view = _ranked(replace(fact, name=source), tuple(names))
            # ranked once per side: every grain (and split_orders) reads them
            side.execute(f'CREATE TEMP TABLE "{fact.view}" AS {view}')
            if state == "now" and fact.name == changes.ITEM_FACT:
                split_orders.redo(side, f"versions_{fact.name}", fact.view)
        side.register("dates_now", fetched.dates)
        side.execute(f"CREATE TEMP VIEW {DATE} AS SELECT * FROM dates_now")
        for snapshot, (dimension, _, _) in changes.SNAPSHOTS.items():
            rows = snapshot
            if state == "now":
                rows = f"{snapshot}_now"
                side.register(rows, now[snapshot])
            # only the keys the changed versions name: the grains join the dimension on
            # them alone (_narrowed), and a hash join over every customer costs the most
            where = f" WHERE {narrowed[dimension]}" if dimension in narrowed else ""
            side.execute(
                f"CREATE TEMP TABLE {dimension} AS"
                f" SELECT *, TRUE AS is_current_record FROM {rows}{where}"
            )
        return {
            f"grain_{state}_{grouped[0].relation.name}": side.sql(
                partial.grain_sql(grouped)
            ).to_arrow_table()
            for grouped in relations
        }


@cache
def _narrowed(datasets: tuple[Dataset, ...], views: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Snapshotted dimension -> a condition keeping its rows whose key a fact version names,
    for those dimensions every grain of ``datasets`` inner-joins on nothing but its key equal
    to a fact view's column of the same name (``views``: (view, fact)), so that the rows left
    out join no grain row, now or before."""
    facts = dict(views)
    found: dict[str, set[str]] = {}
    refused: set[str] = set()
    for relation in {d.relation.name: d for d in datasets}.values():
        select = partial.grain_select(_of_relation(datasets, relation.relation.name))
        aliases = {t.alias_or_name: t.name for t in select.find_all(exp.Table)}
        for join in select.args.get("joins") or []:
            table = join.this
            if not isinstance(table, exp.Table) or table.name not in _KEPT:
                continue
            key = changes.SNAPSHOTS[_KEPT[table.name][0]][1]
            named = {
                facts[aliases[c.table]]
                for eq in join.find_all(exp.EQ)
                for c, d in ((eq.left, eq.right), (eq.right, eq.left))
                if isinstance(c, exp.Column)
                and isinstance(d, exp.Column)
                and d.table == table.alias_or_name
                and d.name == key
                and c.name == key
                and aliases.get(c.table) in facts
            }
            if join.side or join.kind not in ("", "INNER") or not named:
                refused.add(table.name)
            found.setdefault(table.name, set()).update(named)
    return {
        dim: f"{changes.SNAPSHOTS[_KEPT[dim][0]][1]} IN ("
        + " UNION ALL ".join(
            f"SELECT {changes.SNAPSHOTS[_KEPT[dim][0]][1]} FROM versions_{f}" for f in sorted(fs)
        )
        + ")"
        for dim, fs in found.items()
        if dim not in refused
    }


def subtract(extract: duckdb.DuckDBPyConnection, dataset: Dataset) -> None:
    """``delta_<dataset>``: its cells of the grain rows now minus those of the rows before,
    in one pass over both sides (the sums' values negated before). Distinct orders are
    counted per side (``_side``: 1 now, -1 before) and subtracted: the keys are whole orders,
    so an order's items in a cell are all among them or none is, and the orders left out
    count the same on both sides of the cell. Counted as one row per cell, order and side
    first, each adding its side, which costs DuckDB less than two COUNT(DISTINCT) FILTERs."""
    relation = dataset.relation.name
    distinct = [m for m in dataset.measures if not MEASURES[m].additive]
    assert len(distinct) <= 1, f"{dataset.name}: one count distinct (of orders, maintained)"
    summed = [m for m in (*dataset.measures, *partial.hidden(dataset)) if m not in distinct]
    keys = _keys(dataset)
    kept = ", ".join((*keys, *distinct))
    negatives = ", ".join(f"-{m} AS {m}" for m in summed)
    sums = [f"SUM({m}) AS {m}" for m in summed]
    rows = (
        f"(SELECT {kept}, {', '.join(summed)}, 1 AS _side FROM grain_now_{relation}"
        f" UNION ALL SELECT {kept}, {negatives}, -1 FROM grain_before_{relation}) AS changed"
    )
    if distinct:
        rows = f"(SELECT {kept}, _side, {', '.join(sums)} FROM {rows} GROUP BY ALL) AS orders"
    values = sums + [f"SUM(CASE WHEN {m} IS NULL THEN 0 ELSE _side END) AS {m}" for m in distinct]
    cells = f"SELECT {', '.join((*keys, *values))} FROM {rows} GROUP BY ALL"
    parts = [c for c in dataset.column_names if c not in keys]
    if parts:  # the day's parts, from dim_date after the sums
        named = ", ".join(f"{DAY_PARTS[c]} AS {c}" for c in parts)
        cells = (
            f"SELECT c.*, {', '.join(f'p.{c}' for c in parts)} FROM ({cells}) AS c"
            f" LEFT JOIN (SELECT date_key, {named} FROM {DATES}) AS p USING (date_key)"
        )
    extract.execute(
        f"CREATE OR REPLACE TEMP TABLE delta_{dataset.name} AS SELECT * FROM ({cells}) AS d"
        f" WHERE NOT ({no_change(dataset)})"
    )


def _keys(dataset: Dataset) -> tuple[str, ...]:
    """The columns that tell ``dataset``'s cells apart: all of them but the parts of the day
    (year, month, date), which its date_key gives, the same on both sides of a delta (dim_date
    only grows); each key more costs DuckDB's grouping and joins more than a lookup after."""
    if DAY not in dataset.column_names:
        return dataset.column_names
    return tuple(c for c in dataset.column_names if c not in DAY_PARTS)


def before_days(extract: duckdb.DuckDBPyConnection, dataset: Dataset, days: list[int]) -> None:
    """``delta_<dataset>`` begun as the cells of ``days`` taken away, before they are summed
    again (refresh.py's days path adds the new ones)."""
    extract.execute(
        f"CREATE OR REPLACE TEMP TABLE delta_{dataset.name} AS"
        f" {negated(dataset, dataset.name)} WHERE date_key IN (SELECT UNNEST(?::INTEGER[]))",
        [days],
    )


def roll_up(extract: duckdb.DuckDBPyConnection, rollup: Dataset) -> None:
    """``delta_<rollup>``: its base's delta summed per coarser cell."""
    assert rollup.rollup_of is not None
    cells = partial.local_cells(rollup, f"delta_{rollup.rollup_of.name}")
    extract.execute(
        f"CREATE OR REPLACE TEMP TABLE delta_{rollup.name} AS SELECT * FROM ({cells}) AS d"
        f" WHERE NOT ({no_change(rollup)})"
    )


def merge(extract: duckdb.DuckDBPyConnection, dataset: Dataset) -> int:
    """Apply ``delta_<dataset>`` to the dataset's cells: (cells changed).

    The changed cells are deleted and written again, also when they are a large share of a
    small table (a month's cells of a rollup): DuckDB's checkpoint then marks the deletes and
    appends the inserts, where an update has it rewrite each updated column of the touched
    row groups whole (~0.15 s a month rollup at 10M fact rows); the deleted rows are left to
    the checkpoints that may vacuum (refresh.VACUUM_EVERY). The old cells are found by one
    join with the delta (their row ids kept), which the delete then names directly."""
    name = dataset.name
    same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM d.{c}" for c in _keys(dataset))
    totals = []
    for m in dataset.measures:
        total = f"COALESCE(t.{m}, 0) + COALESCE(d.{m}, 0)"
        if MEASURES[m].agg == "sum":  # NULL again when no row has a value
            total = f"CASE WHEN COALESCE(t._n_{m}, 0) + d._n_{m} = 0 THEN NULL ELSE {total} END"
        totals.append((m, total))
    totals += [(h, f"COALESCE(t.{h}, 0) + d.{h}") for h in partial.hidden(dataset)]
    # the cells' stored order: the day, a rollup's year and month
    first = dataset.column_names[0]
    second = dataset.column_names[1] if len(dataset.column_names) > 1 else None
    changed, lo, hi, lo2, hi2 = extract.execute(
        f"SELECT COUNT(*), MIN({first}), MAX({first}), MIN({second or 0}), MAX({second or 0})"
        f" FROM delta_{name}"
    ).fetchall()[0]
    if not changed:
        return 0
    values = [f"d.{c}" for c in dataset.column_names] + [f"{v} AS {c}" for c, v in totals]
    # spelled out, the delta's range lets the scan of the cells skip the other row groups;
    # within one year, a rollup's months too
    within = changes.between(first, lo, hi)
    if second and lo == hi:
        within += f" AND {changes.between(second, lo2, hi2)}"
    # the old cells' rows found in two passes: the rows whose narrow keys match (a scan of
    # those columns alone), then every column of those rows only (by rowid). One join read
    # every column of every row in range: a customer moved to another region changes cells
    # on every day of its history, so the range was the whole table (0.27 s against 0.12 s
    # at 6M cells, issue 20 §1)
    narrow = _narrow_keys(extract, dataset)
    matched = " AND ".join(f"t.{c} IS NOT DISTINCT FROM d.{c}" for c in narrow)
    candidates = (
        f"SELECT t.rowid FROM (SELECT rowid, {', '.join(narrow)} FROM {name} WHERE {within})"
        f" AS t SEMI JOIN delta_{name} AS d ON {matched}"
    )
    extract.execute(
        f"CREATE OR REPLACE TEMP TABLE merged_{name} AS SELECT t.rowid AS _old, {', '.join(values)}"
        f" FROM delta_{name} AS d LEFT JOIN (SELECT rowid, * FROM {name}"
        f" WHERE rowid IN ({candidates})) AS t ON {same}"
    )
    extract.execute(f"DELETE FROM {name} WHERE rowid IN (SELECT _old FROM merged_{name})")
    extract.execute(
        f"INSERT INTO {name} BY NAME SELECT * EXCLUDE (_old) FROM merged_{name}"
        f" WHERE {partial.ROWS} > 0"
    )
    extract.execute(f"DROP TABLE merged_{name}")
    return int(changed)


def _narrow_keys(extract: duckdb.DuckDBPyConnection, dataset: Dataset) -> list[str]:
    """The keys of ``dataset`` (_keys) that are not text: the day and the members' ids, cheap
    to scan and together nearly as selective as all of them (all keys when every one is)."""
    text = {
        row[0]
        for row in extract.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND data_type = 'VARCHAR'"
            " AND database_name <> 'temp'",
            [dataset.name],
        ).fetchall()
    }
    keys = _keys(dataset)
    return [k for k in keys if k not in text] or list(keys)


def days_of(extract: duckdb.DuckDBPyConnection, datasets: Sequence[Dataset]) -> set[int]:
    found: set[int] = set()
    for d in datasets:
        rows = extract.execute(f"SELECT DISTINCT date_key FROM delta_{d.name}").fetchall()
        found |= {int(r[0]) for r in rows if r[0] is not None}
    return found


@cache
def _ranked(fact: FactModel, names: tuple[str, ...]) -> str:
    return current_rows(fact, names).sql(dialect="duckdb")


def negated(dataset: Dataset, rows: str) -> str:
    """``dataset``'s columns and measures of ``rows``, each summed value negated."""
    values = [f"-{m} AS {m}" for m in (*dataset.measures, *partial.hidden(dataset))]
    return f"SELECT {', '.join((*dataset.column_names, *values))} FROM {rows}"


def no_change(dataset: Dataset) -> str:
    """A delta cell that changes nothing (an item changed in columns no dataset shows)."""
    counts = [f"{h} = 0" for h in partial.hidden(dataset)]
    return " AND ".join([*counts, *(f"COALESCE({m}, 0) = 0" for m in dataset.measures)])
