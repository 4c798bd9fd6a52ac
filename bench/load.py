#!/usr/bin/env python3
"""Speed of the load stage: the SCD2 MERGE of a big dimension and the append of event facts, on
DuckDB and PostgreSQL, next to the limits measured in the same run on the same engine.

What is measured (Riverbed's own statements, as `riverbed run` issues them, through the
``Warehouse`` protocol; data generated with numpy, so only the warehouse work is timed):

1. dimension: a customer-like dimension (natural key, 3 tracked columns, 1 type1 column, 1 other
   column) first loaded with N keys (default 1,000,000; shown, no target); then a batch where 10%
   of the keys change: 70% of those once, 20% twice, 10% three times (each change to a tracked
   column, a type1 column, or both), with increasing LSNs and commit times. Timed: the MERGE
   statements of ``riverbed.load.scd2.scd2_statements`` in one transaction (the staging load is
   shown apart; staging and the dimension are analyzed after loading, untimed, as the loader
   does). The limits: ``CREATE TABLE copy AS SELECT * FROM dim`` of the merged dimension, same
   engine, same run; on DuckDB also a hand-written full-compare merge of the same changes
   (bench/_hand_merge.py: the source's state after the batch, every key, compared with the
   current rows; UPDATE the changed, INSERT their new versions). Targets: DuckDB, MERGE <= 3x
   the copy and <= the hand-written merge; PostgreSQL, MERGE <= 2x the copy. With
   ``--scale-keys N`` the merge of 100,000 changed keys is also timed (with its hand-written
   limit) on DuckDB dimensions of --keys and of N keys, built directly: Riverbed's merge
   should cost about the same at both sizes, a full compare grows with the dimension.
   An external reference beside it: the same change set through a dbt-duckdb snapshot
   (bench/_dbt_snapshot.py; check strategy on the tracked columns), its node's time from
   dbt's run_results.json and its process's; target: Riverbed's MERGE at least 2x faster
   than the node. dbt is a bench-only dependency run as a subprocess (``--dbt``, else dbt on
   PATH; ``pip install -e .[bench]``, best in an environment of its own); without it the
   line says how to install it.
2. facts: F new fact rows (default 1,000,000) keyed to that dimension, staged (their load
   order and window noted on the way in, as the stage state does); timed:
   ``riverbed.load.facts.append``, as the facts state calls it: the preaction +
   insert of ``append_statements`` (each row's surrogate key as of its event time,
   ``batch_id``, source position) + the check for keys left NULL (and the inferred-member
   statements where there are any), one transaction. The limit: a plain bulk insert of the
   same fact rows, exactly as the fact table stores them, into an empty table of the same
   shape, indexes included (PostgreSQL's: the loader's on the sort key and batch_id)
   (``INSERT INTO plain SELECT * FROM fact_orders``): appending them without the preaction
   and without resolving any key. Both are the best of nine, each into an emptied,
   checkpointed table. Targets: fact append >= 70% (DuckDB), >= 75% (PostgreSQL) of the plain
   insert's rate; printed with the bound of an append that adds only the key join (on
   PostgreSQL also with that join in one process, as it runs an INSERT ... SELECT).
3. a small batch: 1,000 more facts staged the same way and appended onto the loaded fact
   table, best of nine (shown, no target): the cost of an append beyond its rows, which is
   most of what frequent small batches from change capture cost.

PostgreSQL is the embedded server in a throwaway folder. Each figure is printed beside its limit
and target with PASS or FAIL, and the load average before and after: other work on the
machine slows both sides of a ratio, so compare within one run. Run:

    python bench/load.py                        (about 2 minutes on 2 cores)
    python bench/load.py --scale-keys 10000000  (adds the merge at 1M and 10M keys; minutes)
    python bench/load.py --keys 200000 --facts 200000 --skip-postgres
    python bench/load.py --dbt /path/to/venv/bin/dbt  (dbt-duckdb in a venv of its own)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import _dbt_snapshot as dbt
import _hand_merge as hand
import numpy as np
import pyarrow as pa
from _server import command_line, machine, throwaway_server
from sqlglot import exp

from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.facts import (
    Plan,
    PlanOfParts,
    append_statements,
    fact_ddl,
    fact_indexes,
)
from riverbed.load.facts import append as append_batch
from riverbed.load.model import FAR_FUTURE, DimensionModel, FactModel, sql_type
from riverbed.load.postgres_warehouse import PostgresWarehouse
from riverbed.load.scd2 import dimension_ddl, scd2_statements, staging_ddl
from riverbed.load.warehouse import Warehouse

DIM = DimensionModel(
    "customers", "dim_customer", ("customer_id",), ("name", "city", "tier"), ("phone",)
)
FACT = FactModel("orders", "fact_orders", ("order_id",), (("customer_id", DIM),))
START_US = 1_700_000_000_000_000
REPEATS = 9  # the fact append and its limit: best of nine
SMALL = 1_000  # rows of the small batch
CHANGED = 100_000  # keys the batch changes in the merge's run at scale (--scale-keys)
# targets, each against its limit measured in the same run on the same engine
DUCKDB_FACT_SHARE = 0.70  # fact append >= 70% of the plain insert's rate
POSTGRES_FACT_SHARE = 0.75
POSTGRES_MERGE_COPIES = 2.0  # SCD2 merge <= 2x the CREATE TABLE AS copy


def dimension_rows(keys: np.ndarray, version: np.ndarray, lsn0: int, ts0: int) -> pa.Table:
    """One staged change per entry: tracked values derived from (key, version)."""
    n = len(keys)
    lsn = np.arange(lsn0, lsn0 + n, dtype=np.int64)
    return pa.table(
        {
            "customer_id": pa.array(keys, pa.int64()),
            "name": pa.array(np.char.add("name-", keys.astype(str))),
            "city": pa.array(np.char.add("city-", (keys * 7 + version * 3 % 97).astype(str))),
            "tier": pa.array(np.char.add("tier-", (version % 4).astype(str))),
            "phone": pa.array(np.char.add("+1-", (keys + version).astype(str))),
            "signup_channel": pa.array(np.char.add("ch-", (keys % 5).astype(str))),
            "_op": pa.array(np.where(version == 0, "L", "U")),
            "_commit_ts": pa.array(ts0 + lsn - lsn0, pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array(lsn),
            "_seq": pa.array(np.zeros(n, dtype=np.int64)),
            "_toast_unchanged": pa.nulls(n, pa.string()),
        }
    )


def change_batch(n_keys: int, rng: np.random.Generator, changed_keys: int = 0) -> pa.Table:
    """Changes to ``changed_keys`` random keys (default a tenth of them): 70% once, 20%
    twice, 10% three times."""
    size = changed_keys or n_keys // 10
    changed = rng.choice(n_keys, size=size, replace=False).astype(np.int64)
    times = rng.choice([1, 2, 3], size=len(changed), p=[0.7, 0.2, 0.1])
    keys = np.repeat(changed, times)
    version = np.concatenate([np.arange(1, t + 1) for t in times])
    # events in source order: a key's changes at increasing LSNs, keys interleaved
    order = np.lexsort((keys, version))
    return dimension_rows(keys[order], version[order], 10 * n_keys, START_US + 10**9)


def fact_rows(n: int, n_keys: int, rng: np.random.Generator, after: int = 0) -> pa.Table:
    """``n`` new orders of random customers; ``after``: how many orders came before them."""
    lsn = np.arange(20 * n_keys + after, 20 * n_keys + after + n, dtype=np.int64)
    return pa.table(
        {
            "order_id": pa.array(np.arange(after, after + n, dtype=np.int64)),
            "customer_id": pa.array(rng.integers(0, n_keys, n, dtype=np.int64)),
            "amount": pa.array(rng.integers(100, 100_000, n) / 100).cast(pa.decimal128(12, 2)),
            "status": pa.array(rng.choice(["placed", "paid", "shipped"], n)),
            "_op": pa.array(np.full(n, "I")),
            "_commit_ts": pa.array(START_US + 2 * 10**9 + lsn, pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array(lsn),
            "_seq": pa.array(np.zeros(n, dtype=np.int64)),
            "_toast_unchanged": pa.nulls(n, pa.string()),
        }
    )


def columns_of(rows: pa.Table) -> dict[str, exp.DataType]:
    cdc = {"_op", "_commit_ts", "_lsn", "_seq", "_toast_unchanged"}
    return {f.name: sql_type(f.type) for f in rows.schema if f.name not in cdc}


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


class Breakdown:
    """The warehouse, with the seconds each statement took while ``recording``: what a timed
    load spent where (per statement, by its first words). A thin proxy: every call goes
    through the ``Warehouse`` protocol as before."""

    def __init__(self, wh: Warehouse):
        self.wh = wh
        self.name, self.dialect, self.has_indexes = wh.name, wh.dialect, wh.has_indexes
        self.recording: list[tuple[str, float]] | None = None

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.wh, attribute)

    def _timed(self, call: Callable[[], object], statement: object) -> object:
        started = time.perf_counter()
        try:
            return call()
        finally:
            if self.recording is not None:
                self.recording.append((head(statement), time.perf_counter() - started))

    def execute(self, statement: exp.Expr | str) -> int:
        return int(self._timed(lambda: self.wh.execute(statement), statement))  # type: ignore[call-overload]

    def query(self, statement: exp.Expr | str) -> pa.Table:
        return self._timed(lambda: self.wh.query(statement), statement)  # type: ignore[return-value]

    def keeps_order(self, insert: exp.Expr | str, table: str) -> bool:
        return bool(
            self._timed(lambda: self.wh.keeps_order(insert, table), "keeps_order (EXPLAIN)")
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.wh.transaction():
            yield
            started = time.perf_counter()
        if self.recording is not None:
            self.recording.append(("COMMIT", time.perf_counter() - started))

    @contextlib.contextmanager
    def record(self, into: list[tuple[str, float]]) -> Iterator[None]:
        self.recording = into
        try:
            yield
        finally:
            self.recording = None


def head(statement: object) -> str:
    text = statement if isinstance(statement, str) else statement.sql()  # type: ignore[attr-defined]
    words = " ".join(text.split()[:6])
    return words if len(words) <= 60 else words[:57] + "..."


def merge(
    wh: Warehouse,
    rows: pa.Table,
    columns: dict[str, exp.DataType],
    steps: list[tuple[str, float]] | None = None,
) -> tuple[float, float]:
    """Stage ``rows`` and apply them; (staging seconds, merge seconds). ``steps``: where a
    Breakdown warehouse records the merge's statements."""

    def stage() -> None:
        with wh.transaction():
            wh.execute(exp.TruncateTable(expressions=[exp.to_table(DIM.staging)]))
            wh.load_arrow(DIM.staging, rows)

    def apply() -> None:
        with wh.transaction():
            for statement in scd2_statements(DIM, columns, wh.dialect):
                wh.execute(statement)

    staging = timed(stage)
    wh.analyze(DIM.staging)  # untimed, as the stage state does after loading staging
    with wh.record(steps) if steps is not None else contextlib.nullcontext():  # type: ignore[attr-defined]
        merging = timed(apply)
    wh.analyze(DIM.name)  # untimed, as the dimension state does after a merge
    return staging, merging


def hand_merge(wh: Warehouse, columns: dict[str, exp.DataType]) -> float:
    """The hand-written full-compare merge (bench/_hand_merge.py) of the snapshot
    ``hand.prepare`` loaded, in one transaction; its seconds."""
    values = [name for name in columns if name not in DIM.keys]

    def apply() -> None:
        with wh.transaction():
            for statement in hand.statements(DIM, values):
                wh.execute(statement)

    return timed(apply)


def bench_engine(
    wh: Breakdown, n_keys: int, n_facts: int, steps: dict[str, list[tuple[str, float]]]
) -> dict[str, float]:
    """The figures of one engine; ``steps``: the statements of the timed merge and of the
    fastest append, with their seconds."""
    rng = np.random.default_rng(7)
    initial = dimension_rows(
        np.arange(n_keys, dtype=np.int64), np.zeros(n_keys, dtype=np.int64), 1, START_US
    )
    columns = columns_of(initial)
    wh.execute(staging_ddl(DIM, columns, wh.dialect))
    for statement in dimension_ddl(DIM, columns, wh.dialect, indexes=wh.has_indexes):
        wh.execute(statement)
    figures: dict[str, float] = {}
    figures["first_stage"], figures["first_merge"] = merge(wh, initial, columns)
    changes = change_batch(n_keys, rng)
    figures["changes"] = changes.num_rows
    if wh.name == "duckdb":  # the limit: the same changes merged by comparing whole tables
        hand.prepare(wh, DIM, columns, hand.snapshot(initial, changes, "customer_id"))
    steps["merge"] = []
    figures["stage"], figures["merge"] = merge(wh, changes, columns, steps["merge"])
    if wh.name == "duckdb":
        figures["hand"] = hand_merge(wh, columns)
    figures["dim_rows"] = float(
        wh.query("select count(*) as n from dim_customer").column("n")[0].as_py()
    )
    wh.execute("drop table if exists dim_copy")
    figures["copy"] = timed(
        lambda: wh.execute("create table dim_copy as select * from dim_customer")
    )

    facts = fact_rows(n_facts, n_keys, rng)
    fact_columns = columns_of(facts)
    wh.execute(staging_ddl(FACT.source, fact_columns, wh.dialect))
    wh.execute(fact_ddl(FACT, fact_columns))
    indexes = fact_indexes(FACT, ["order_id"], None) if wh.has_indexes else []
    for index in indexes:  # the loader's (PostgreSQL)
        wh.execute(index)
    plan = stage_facts(wh, facts, "bench-batch")

    def append() -> None:
        # the facts state, as the loader runs it: the statements in one transaction
        append_batch(wh, FACT, list(fact_columns), ["bench-batch"], plan)

    # the same fact rows, exactly as stored (keys, positions, batch_id), bulk-inserted into an
    # empty table of the same shape: what appending them costs without resolving anything
    wh.execute("drop table if exists plain_orders")
    wh.execute("create table plain_orders as select * from fact_orders limit 0")
    for index in indexes:  # the same shape: the same indexes
        index.this.set("this", exp.to_identifier(f"plain_{index.this.name}"))
        index.this.set("table", exp.to_table("plain_orders"))
        wh.execute(index)

    def plain() -> None:
        with wh.transaction():
            wh.execute("insert into plain_orders select * from fact_orders")

    def lookup() -> None:
        # the append's key join alone, counted rather than stored: what resolving the keys
        # costs on top of any insert; plain / (plain + lookup) bounds the append's share
        window = plan.window
        insert = append_statements(FACT, list(fact_columns), ["-"], [], wh.dialect, window)[1]
        select = insert.expression.copy()
        select.set("expressions", [exp.func("count", exp.column(DIM.surrogate, table="d0"))])
        wh.query(select)

    def serial_lookup() -> None:
        # PostgreSQL runs no INSERT ... SELECT in parallel, where its planner gives the
        # counted lookup two workers: the lookup as the append's insert runs it, one process
        with wh.transaction():
            wh.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            lookup()

    # best of REPEATS for each, each load into an emptied table (emptying is not timed): a
    # single sub-second figure on a shared 2-core machine moves by a fifth from run to run
    figures["append"] = figures["plain"] = figures["lookup"] = float("inf")
    figures["serial"] = float("inf")
    for _ in range(REPEATS):
        empty(wh, "fact_orders")
        recorded: list[tuple[str, float]] = []
        with wh.record(recorded):
            seconds = timed(append)
        if seconds < figures["append"]:
            figures["append"], steps["append"] = seconds, recorded
        empty(wh, "plain_orders")
        figures["plain"] = min(figures["plain"], timed(plain))
        figures["lookup"] = min(figures["lookup"], timed(lookup))
        if wh.name == "postgres":
            figures["serial"] = min(figures["serial"], timed(serial_lookup))
    figures["fact_rows"] = float(
        wh.query("select count(*) as n from fact_orders").column("n")[0].as_py()
    )

    # a small batch, as change capture delivers them between runs, onto the loaded fact
    # table: what an append costs beyond its rows (statements, checks, commit). The tables'
    # statistics refreshed, as the loader does after a load that grew a table by a tenth
    for table in (DIM.name, FACT.name):
        wh.analyze(table)
    small = stage_facts(wh, fact_rows(SMALL, n_keys, rng, after=n_facts), "small-batch")
    figures["small"] = float("inf")
    for _ in range(REPEATS):
        wh.execute("delete from fact_orders where batch_id = 'small-batch'")
        figures["small"] = min(
            figures["small"],
            timed(lambda: append_batch(wh, FACT, list(fact_columns), ["small-batch"], small)),
        )
    return figures


def stage_facts(wh: Warehouse, rows: pa.Table, batch_id: str) -> Plan:
    """The stage state (runner.stage), untimed: truncate-and-load the fact staging table, the load order and
    window seen on the way in, the planner's statistics refreshed."""
    plan = PlanOfParts(["order_id"])
    with wh.transaction():
        wh.execute(exp.TruncateTable(expressions=[exp.to_table(FACT.staging)]))
        staged = rows.append_column("_batch_id", pa.array([batch_id] * rows.num_rows, pa.string()))
        wh.load_arrow(FACT.staging, staged)
        plan.add(staged)
    wh.analyze(FACT.staging)
    return plan.plan()


def empty(wh: Warehouse, table: str) -> None:
    """Empty ``table`` so each timed load starts from the same state. DuckDB: delete every
    row, then checkpoint; otherwise the deleted rows of earlier repeats are cleaned up by
    whichever load's commit happens to trigger the automatic checkpoint. PostgreSQL:
    TRUNCATE, a new heap and new indexes; rows deleted and vacuumed leave their pages to be
    refilled out of order, and block-range summaries (the BRIN on batch_id) only ever widen."""
    if wh.name == "duckdb":
        wh.execute(f"delete from {table}")
        wh.execute("checkpoint")
    else:
        wh.execute(f"truncate {table}")


def verdict(figure: str, value: str, target: str, passed: bool) -> str:
    return f"{figure:<46} {value:>8}   target {target}: {'PASS' if passed else 'FAIL'}"


def report(engine: str, f: dict[str, float], n_facts: int) -> list[str]:
    ratio = f["merge"] / f["copy"]
    rate, plain_rate = n_facts / f["append"], n_facts / f["plain"]
    share = rate / plain_rate
    bound = f["plain"] / (f["plain"] + f["lookup"])
    lines = [
        f"{engine:<9} first load of {int(f['dim_rows'] - f['changes']):,} keys: staging {f['first_stage']:.2f} s, merge {f['first_merge']:.2f} s",
        f"{engine:<9} {int(f['changes']):,} changes to 10% of the keys: staging {f['stage']:.2f} s, MERGE {f['merge']:.2f} s; "
        f"limit CREATE TABLE AS copy of the {int(f['dim_rows']):,}-row dimension {f['copy']:.2f} s",
        f"{engine:<9} {n_facts:,} facts appended (preaction + as-of keys) in {f['append']:.2f} s = {rate:,.0f} rows/s; "
        f"limit plain bulk insert of the same rows {f['plain']:.2f} s = {plain_rate:,.0f} rows/s",
        f"{engine:<9} the key lookup alone (the append's join, counted, not stored) {f['lookup']:.2f} s: "
        f"an append that inserts as fast as the limit and adds only the lookup reaches {bound:.1%}",
        *(
            [
                f"{engine:<9} the key lookup in one process, as PostgreSQL runs an INSERT ... "
                f"SELECT (no parallel workers) {f['serial']:.2f} s: the bound with it "
                f"{f['plain'] / (f['plain'] + f['serial']):.1%}"
            ]
            if f["serial"] < float("inf")
            else []
        ),
        f"{engine:<9} a batch of {SMALL:,} facts appended to the {int(f['fact_rows']):,}-row fact table in {f['small'] * 1000:.1f} ms (no target)",
    ]
    if engine == "duckdb":
        lines += [
            f"{engine:<9} the same changes by a hand-written full-compare UPDATE + INSERT (limit): {f['hand']:.2f} s",
            verdict(
                "SCD2 merge / hand-written merge (duckdb)",
                f"{f['merge'] / f['hand']:.2f}x",
                "<= 1x",
                f["merge"] <= f["hand"],
            ),
            verdict("SCD2 merge / copy (duckdb)", f"{ratio:.2f}x", "<= 3x", ratio <= 3),
            verdict(
                "fact append / plain insert (duckdb)",
                f"{share:.1%}",
                f">= {DUCKDB_FACT_SHARE:.0%} (bound {bound:.1%})",
                share >= DUCKDB_FACT_SHARE,
            ),
        ]
    else:
        lines += [
            verdict(
                f"SCD2 merge / copy ({engine})",
                f"{ratio:.2f}x",
                f"<= {POSTGRES_MERGE_COPIES:g}x",
                ratio <= POSTGRES_MERGE_COPIES,
            ),
            verdict(
                f"fact append / plain insert ({engine})",
                f"{share:.1%}",
                f">= {POSTGRES_FACT_SHARE:.0%} (bound {bound:.1%})",
                share >= POSTGRES_FACT_SHARE,
            ),
        ]
    return lines


def breakdown(engine: str, steps: dict[str, list[tuple[str, float]]]) -> list[str]:
    """The statements of the timed merge and of the fastest append, with their seconds (the
    ones under 5 ms of each summed into one line)."""
    lines = []
    for part, recorded in steps.items():
        small = [seconds for _, seconds in recorded if seconds < 0.005]
        shown = [f"{name} {seconds:.2f}" for name, seconds in recorded if seconds >= 0.005]
        shown.append(f"{len(small)} others {sum(small):.3f}")
        lines.append(f"{engine:<9} {part} by statement (s): " + "; ".join(shown))
    return lines


def dimension_table(n_keys: int) -> pa.Table:
    """A dimension of ``n_keys`` keys, one current version each, as the first load leaves it
    (built directly: loading 10M keys through the merge would take minutes, untimed)."""
    rows = dimension_rows(
        np.arange(n_keys, dtype=np.int64), np.zeros(n_keys, dtype=np.int64), 1, START_US
    )
    far = pa.scalar(datetime.fromisoformat(FAR_FUTURE), pa.timestamp("us", tz="UTC"))
    names = [n for n in rows.column_names if n not in ("_op", "_commit_ts", "_toast_unchanged")]
    table = rows.select(names)
    table = table.append_column(DIM.surrogate, pa.array(np.arange(1, n_keys + 1, dtype=np.int64)))
    table = table.append_column("effective_date", rows.column("_commit_ts"))
    table = table.append_column("expiry_date", pa.repeat(far, n_keys))
    for flag, value in (("is_current_record", True), ("is_deleted", False), ("is_inferred", False)):
        table = table.append_column(flag, pa.repeat(value, n_keys))
    return table


def merge_at_scale(folder: Path, n_keys: int) -> dict[str, float]:
    """DuckDB: CHANGED keys changed once to three times, merged into a dimension of
    ``n_keys`` keys: Riverbed's merge and the hand-written full-compare merge."""
    rng = np.random.default_rng(11)
    wh = DuckDBWarehouse(folder / f"scale-{n_keys}.duckdb")
    try:
        dim = dimension_table(n_keys)
        initial = dimension_rows(np.arange(2, dtype=np.int64), np.zeros(2, dtype=np.int64), 1, 0)
        columns = columns_of(initial)
        wh.execute(staging_ddl(DIM, columns, wh.dialect))
        for statement in dimension_ddl(DIM, columns, wh.dialect):
            wh.execute(statement)
        wh.load_arrow(DIM.name, dim)
        changes = change_batch(n_keys, rng, CHANGED)
        source = dimension_rows(
            np.arange(n_keys, dtype=np.int64), np.zeros(n_keys, dtype=np.int64), 1, START_US
        )
        hand.prepare(wh, DIM, columns, hand.snapshot(source, changes, "customer_id"))
        del dim, source
        _, merged = merge(wh, changes, columns)
        return {"changes": changes.num_rows, "merge": merged, "hand": hand_merge(wh, columns)}
    finally:
        wh.close()


def dbt_reference(option: str | None, folder: Path, n_keys: int, merged: float) -> list[str]:
    """The same change set as bench_engine's merge (the same generator, the same seed)
    through a dbt-duckdb snapshot (bench/_dbt_snapshot.py), beside Riverbed's merge."""
    found = dbt.find(option)
    if found is None:
        return [f"duckdb    {dbt.MISSING}"]
    initial = dimension_rows(
        np.arange(n_keys, dtype=np.int64), np.zeros(n_keys, dtype=np.int64), 1, START_US
    )
    changes = change_batch(n_keys, np.random.default_rng(7))
    after = hand.snapshot(initial, changes, "customer_id")
    names = [n for n in after.column_names if n not in ("_lsn",)]
    before = initial.select(names)
    f = dbt.snapshot_run(found, folder, DIM, before, after.select(names))
    return [
        f"duckdb    the same changes through a dbt-duckdb snapshot (check strategy; reference): "
        f"node {f['node']:.2f} s (dbt's run_results.json), process {f['process']:.2f} s, "
        f"{int(f['closed']):,} versions closed; Riverbed's MERGE {merged:.2f} s",
        verdict(
            "dbt snapshot node / SCD2 merge (duckdb)",
            f"{f['node'] / merged:.2f}x",
            ">= 2x",
            f["node"] >= 2 * merged,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="dimension keys")
    parser.add_argument("--facts", type=int, default=1_000_000, help="fact rows appended")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-duckdb", action="store_true")
    parser.add_argument(
        "--dbt",
        help="the dbt executable for the dbt-duckdb snapshot reference (default: dbt on PATH; "
        "a bench-only dependency: pip install -e .[bench], best in its own environment)",
    )
    parser.add_argument(
        "--scale-keys",
        type=int,
        default=0,
        help=f"also merge {CHANGED:,} changed keys into DuckDB dimensions of --keys and this "
        "many keys (e.g. 10000000; minutes): the merge's cost follows the changes",
    )
    args = parser.parse_args()
    print(f"command   {command_line()}")
    print(f"machine   {machine()}")
    print(f"load      {load_average()} (other work shares the cores: compare within the run)")
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="riverbed-bench-") as folder:
        if not args.skip_duckdb:
            duck = DuckDBWarehouse(Path(folder) / "warehouse.duckdb")
            figures = engine_lines(duck, args, lines)
            lines += dbt_reference(args.dbt, Path(folder), args.keys, figures["merge"])
        if args.scale_keys:
            at: list[dict[str, float]] = []
            for n_keys in (args.keys, args.scale_keys):
                f = merge_at_scale(Path(folder), n_keys)
                at.append(f)
                lines.append(
                    f"duckdb    {int(f['changes']):,} changes to {CHANGED:,} of {n_keys:,} keys: "
                    f"MERGE {f['merge']:.2f} s; hand-written full compare {f['hand']:.2f} s"
                )
            grown = args.scale_keys / args.keys
            lines.append(
                f"duckdb    the same changes on a {grown:g}x larger dimension: MERGE "
                f"{at[1]['merge'] / at[0]['merge']:.2f}x, hand-written full compare "
                f"{at[1]['hand'] / at[0]['hand']:.2f}x (no target: the merge should follow the "
                "changes, not the dimension)"
            )
    if not args.skip_postgres:
        with throwaway_server() as (server, _):
            engine_lines(PostgresWarehouse(server.dsn("postgres")), args, lines)
    print()
    print("\n".join(lines))
    print(f"load      {load_average()}")
    print(f"\nreproduce: {command_line()}")
    return 0


def engine_lines(wh: Warehouse, args: argparse.Namespace, lines: list[str]) -> dict[str, float]:
    """bench_engine on ``wh`` (closed after), its report and its statements' times added to
    ``lines``; its figures."""
    steps: dict[str, list[tuple[str, float]]] = {}
    try:
        figures = bench_engine(Breakdown(wh), args.keys, args.facts, steps)
    finally:
        wh.close()
    lines += report(wh.name, figures, args.facts)
    lines += breakdown(wh.name, steps)
    return figures


def load_average() -> str:
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return "load average unknown"
    return f"load average {one}, {five}, {fifteen}"


if __name__ == "__main__":
    sys.exit(main())
