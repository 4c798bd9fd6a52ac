#!/usr/bin/env python3
"""Speed of a fact's current-state view (``riverbed.load.fact_current``) and of the append
that leaves out what changes nothing, on DuckDB and PostgreSQL.

The fact table: ``--rows`` rows (default 1,000,000) of ``--rows // 2`` orders: each inserted
once, then updates of random orders (a few to the values they had) and deletes of a twentieth,
in source order, as the append stores them. Timed, best of three:

1. ``SELECT SUM(amount), COUNT(*)`` over the view, against the same over the fact table (one
   scan, the floor); on PostgreSQL also without the view's index (``<fact>_current_idx``);
2. the append of a 1,000-row batch of updates and deletes (a third change nothing, a tenth
   delete orders never loaded), against a 1,000-row batch of inserts, which compares nothing.

No target: the figures say what the view costs a reader and the comparison an append. Run:

    python bench/current_view.py
    python bench/current_view.py --rows 200000 --skip-postgres
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from _server import command_line, machine, throwaway_server
from sqlglot import exp

from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.fact_current import current_view_ddl
from riverbed.load.facts import append, fact_ddl, fact_indexes, load_plan
from riverbed.load.model import FactModel, sql_type
from riverbed.load.postgres_warehouse import PostgresWarehouse
from riverbed.load.scd2 import staging_ddl
from riverbed.load.warehouse import Warehouse

FACT = FactModel("orders", "fact_orders", ("order_id",), ())
START_US = 1_700_000_000_000_000
REPEATS = 3


def changes(keys: np.ndarray, ops: np.ndarray, amounts: np.ndarray, lsn0: int) -> pa.Table:
    n = len(keys)
    lsn = np.arange(lsn0, lsn0 + n, dtype=np.int64)
    return pa.table(
        {
            "order_id": pa.array(keys.astype(np.int64)),
            "amount": pa.array(amounts.astype(np.int64)),
            "status": pa.array(np.full(n, "placed")),
            "_op": pa.array(ops),
            "_commit_ts": pa.array(START_US + lsn, pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array(lsn),
            "_seq": pa.array(np.zeros(n, dtype=np.int64)),
            "_toast_unchanged": pa.nulls(n, pa.string()),
        }
    )


def history(n_rows: int, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """The fact's changes, and each order's amount at the end (-1: deleted)."""
    n_keys = n_rows // 2
    keys = np.arange(n_keys)
    amounts = rng.integers(1, 10_000, n_keys)
    deleted = rng.choice(n_keys, n_keys // 20, replace=False)
    updated = rng.integers(0, n_keys, n_rows - n_keys - len(deleted))
    new_amounts = rng.integers(1, 10_000, len(updated))
    final = amounts.copy()
    final[updated] = new_amounts  # numpy: the last assignment of a repeated key wins
    final[deleted] = -1
    rows = changes(
        np.concatenate([keys, updated, deleted]),
        np.array(["I"] * n_keys + ["U"] * len(updated) + ["D"] * len(deleted)),
        np.concatenate([amounts, new_amounts, np.zeros(len(deleted), dtype=np.int64)]),
        1,
    )
    return rows, final


def as_fact(rows: pa.Table) -> pa.Table:
    """Staged changes as the fact table stores them (no dimension)."""
    days = pa.array(np.full(rows.num_rows, 20231114, dtype=np.int32))
    out = rows.drop_columns(["_toast_unchanged", "_commit_ts"])
    out = out.append_column("date_key", days)
    out = out.append_column("event_ts", rows.column("_commit_ts"))
    return out.append_column("batch_id", pa.array(np.full(rows.num_rows, "history")))


def best(work: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def stage(wh: Warehouse, rows: pa.Table, batch_id: str) -> None:
    with wh.transaction():
        wh.execute(exp.delete(FACT.staging))
        wh.load_arrow(
            FACT.staging, rows.append_column("_batch_id", pa.array([batch_id] * len(rows)))
        )
    wh.analyze(FACT.staging)


def bench_engine(wh: Warehouse, n_rows: int) -> dict[str, float]:
    rng = np.random.default_rng(17)
    rows, final = history(n_rows, rng)
    columns = {
        f.name: sql_type(f.type)
        for f in rows.schema
        if f.name not in ("_op", "_commit_ts", "_lsn", "_seq", "_toast_unchanged")
    }
    wh.execute(staging_ddl(FACT.source, columns, wh.dialect))
    wh.execute(fact_ddl(FACT, columns))
    for index in fact_indexes(FACT, ["order_id"], None) if wh.has_indexes else []:
        wh.execute(index)
    started = time.perf_counter()
    wh.load_arrow(FACT.name, as_fact(rows))
    load = time.perf_counter() - started
    wh.analyze(FACT.name)
    wh.execute(current_view_ddl(FACT, list(wh.columns(FACT.name) or {})))
    got = wh.query(f"SELECT SUM(amount) AS s, COUNT(*) AS n FROM {FACT.view}").to_pylist()[0]
    live = final[final >= 0]
    assert (int(got["s"]), got["n"]) == (int(live.sum()), len(live)), got
    f = {"load": load}
    f["view"] = best(lambda: wh.query(f"SELECT SUM(amount), COUNT(*) FROM {FACT.view}"))
    f["table"] = best(lambda: wh.query(f"SELECT SUM(amount), COUNT(*) FROM {FACT.name}"))
    if wh.has_indexes:
        wh.execute(f"DROP INDEX {FACT.name}_current_idx")
        f["view_no_index"] = best(
            lambda: wh.query(f"SELECT SUM(amount), COUNT(*) FROM {FACT.view}")
        )
        for index in fact_indexes(FACT, ["order_id"], None):
            wh.execute(index)
        wh.analyze(FACT.name)
    n_keys = n_rows // 2
    lsn0 = n_rows + 10
    live_keys = np.flatnonzero(final >= 0)

    def batch_of(kind: str, i: int) -> pa.Table:
        base = lsn0 + 10_000 * i
        if kind == "inserts":
            keys = np.arange(n_keys + 1_000 * i, n_keys + 1_000 * (i + 1))
            return changes(keys, np.array(["I"] * 1_000), rng.integers(1, 10_000, 1_000), base)
        keys = rng.choice(live_keys, 1_000, replace=False)
        same = final[keys].copy()
        amounts = np.where(np.arange(1_000) % 3 == 0, same, rng.integers(1, 10_000, 1_000))
        ops = np.array(["U"] * 900 + ["D"] * 100)
        keys[900:] = np.arange(10 * n_rows, 10 * n_rows + 100) + 1_000 * i  # never loaded
        return changes(keys, ops, amounts, base)

    for kind in ("inserts", "changes"):
        times = []
        for i in range(REPEATS):
            batch = batch_of(kind, i + (0 if kind == "inserts" else REPEATS))
            batch_id = f"{kind}-{i}"
            stage(wh, batch, batch_id)
            started = time.perf_counter()
            left = append(wh, FACT, list(columns), [batch_id], load_plan(batch, ["order_id"]))
            times.append(time.perf_counter() - started)
            if kind == "changes":  # what the append left out is what changed nothing
                keys = batch.column("order_id").to_numpy()[:900]
                amounts = batch.column("amount").to_numpy()[:900]
                assert left.unchanged_updates == int((final[keys] == amounts).sum()), left
                assert left.deletes_without_key == 100, left
                final[keys] = amounts
        f[kind] = min(times)
    return f


def report(engine: str, f: dict[str, float], n_rows: int) -> list[str]:
    lines = [
        f"{engine:<9} {n_rows:,} fact rows: SUM over {FACT.view} {f['view'] * 1000:.0f} ms, "
        f"over the table {f['table'] * 1000:.0f} ms (loaded in {f['load']:.1f} s)"
    ]
    if "view_no_index" in f:
        lines.append(
            f"{engine:<9} the view without {FACT.name}_current_idx: {f['view_no_index'] * 1000:.0f} ms"
        )
    lines.append(
        f"{engine:<9} append of 1,000 rows: inserts {f['inserts'] * 1000:.0f} ms, "
        f"updates and deletes (compared with the view) {f['changes'] * 1000:.0f} ms"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    print(f"machine   {machine()}")
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="riverbed-bench-") as folder:
        duck = DuckDBWarehouse(Path(folder) / "warehouse.duckdb")
        try:
            lines += report("duckdb", bench_engine(duck, args.rows), args.rows)
        finally:
            duck.close()
    if not args.skip_postgres:
        with throwaway_server() as (server, _):
            pg = PostgresWarehouse(server.dsn("postgres"))
            try:
                lines += report("postgres", bench_engine(pg, args.rows), args.rows)
            finally:
                pg.close()
    print()
    print("\n".join(lines))
    print(f"\nreproduce: {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
