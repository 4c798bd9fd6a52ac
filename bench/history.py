#!/usr/bin/env python3
"""Does a dimension's merge cost follow the batch or the history? The SCD2 merge of one batch
on DuckDB, with a wide type1 column, on top of a short and a long history.

What is measured: a product-like dimension (natural key, a tracked ``price``, a type1
``description`` of 11 KB per value, as a long product description PostgreSQL TOASTs) of --keys
keys (default 2,000), built directly with --versions versions per key (default 10) and with
six times as many, each version carrying its description. On each, the same batch: 200 keys
repriced (a new version each) and 5 descriptions rewritten (type1: the current version takes
the new value). Timed: Riverbed's merge statements (``riverbed.load.scd2.scd2_sql``, as the
dimension state runs them, one transaction) and the CHECKPOINT after them, where DuckDB
writes what the merge changed into the file (a run's warehouse close does the same). Each
history is merged --repeat times (default 5), each time on a fresh copy of the built file,
opened anew as a run opens its warehouse (the copy flushed to disk first, so that no merge's
checkpoint pays for writing the copy back), and the median is given: one merge takes about
0.13 s, and one sample of it varied 0.12-0.20 s between runs of this bench.

Beside it, on the same long history, the way the merge overwrote type1 values before: an
UPDATE of the same 5 descriptions in place, then the CHECKPOINT. DuckDB rewrites the updated
column of each touched row group whole at the checkpoint (a row group holds 122,880 rows:
gigabytes of descriptions), so that cost grew with the history.

Target: the merge + checkpoint on the long history at most 1.5x the short one's (issue 20
§1: cost follows the changes). Run:

    python bench/history.py                  (about 1 minute; 1.6 GB of scratch under /tmp)
    python bench/history.py --keys 500 --versions 4
    python bench/history.py --marked         (the repriced rows leave the description unsent:
                                              the merge's full path, windows, every key)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _server import command_line, machine
from sqlglot import exp

from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.model import DimensionModel
from riverbed.load.scd2 import dimension_ddl, scd2_sql, staging_ddl

DIM = DimensionModel("products", "dim_product", ("product_id",), ("price",), ("description",))
COLUMNS = {
    "product_id": exp.DataType.build("BIGINT"),
    "price": exp.DataType.build("BIGINT"),
    "description": exp.DataType.build("VARCHAR"),
}
REPRICED = 200  # keys of the batch
REWRITTEN = 5  # of them, the ones whose description the batch rewrites instead
LONGER = 6  # the long history: this many times the short one's versions
TARGET = 1.5  # merge + checkpoint, long history / short history
WIDTH = 350  # md5s per description: 11,200 bytes


def build(folder: Path, keys: int, versions: int, marked: bool = False) -> DuckDBWarehouse:
    """A dimension of ``versions`` versions per key (the last one current), staged batch
    loaded, all checkpointed."""
    wh = DuckDBWarehouse(folder / f"history-{versions}.duckdb")
    wh.execute(staging_ddl(DIM, COLUMNS, wh.dialect))
    for statement in dimension_ddl(DIM, COLUMNS, wh.dialect):
        wh.execute(statement)
    n = keys * versions
    last = versions - 1
    wh.execute(
        f"""insert into dim_product select i + 1, i % {keys}, i // {keys},
        repeat(md5(i::varchar), {WIDTH}), timestamptz '2024-01-01' + to_microseconds(i),
        case when i // {keys} = {last} then timestamptz '9999-12-31'
             else timestamptz '2024-01-01' + to_microseconds(i + {keys}) end,
        i // {keys} = {last}, false, false, i + 1, 0 from range({n}) r(i)"""
    )
    wh.execute(f"insert into _riverbed_scd2_positions values ('dim_product', {n}, 0)")
    # REPRICED keys: the first REWRITTEN get a new description (type1), the others a new price
    wh.execute(
        f"""insert into stg_products select i,
        case when i < {REWRITTEN} then {last} else {versions} end,
        case when i < {REWRITTEN} then repeat(md5((i + 7)::varchar), {WIDTH})
             when {marked} then null
             else repeat(md5((i + {last * keys})::varchar), {WIDTH}) end,
        'U', timestamptz '2025-01-01' + to_microseconds(i), {n} + 1 + i, 0,
        case when i >= {REWRITTEN} and {marked} then 'description' end, 'bench'
        from range({REPRICED}) r(i)"""
    )
    wh.execute("checkpoint")
    return wh


def merged_copies(built: Path, repeat: int) -> tuple[float, float]:
    """The median (merge s, checkpoint s) of ``repeat`` merges of the staged batch, each on a
    fresh copy of the ``built`` warehouse file."""
    samples = []
    for i in range(repeat):
        copy = built.with_name(f"{built.stem}-merge-{i}.duckdb")
        shutil.copyfile(built, copy)
        os.sync()  # the copy's dirty pages: written now, not by the checkpoint's fsync
        wh = DuckDBWarehouse(copy)
        try:
            samples.append(merged(wh))
        finally:
            wh.close()
            copy.unlink()
    return (
        statistics.median(merge for merge, _ in samples),
        statistics.median(checkpoint for _, checkpoint in samples),
    )


def merged(wh: DuckDBWarehouse) -> tuple[float, float]:
    """Riverbed's merge of the staged batch, then the checkpoint: (merge s, checkpoint s).
    The SQL is made before the clock starts (scd2_sql builds it once a process, as a run
    loop does: the first history's merge would otherwise pay for it)."""
    statements = scd2_sql(DIM, COLUMNS, wh.dialect)
    started = time.perf_counter()
    with wh.transaction():
        for statement in statements:
            wh.execute(statement)
    merge = time.perf_counter() - started
    started = time.perf_counter()
    wh.execute("checkpoint")
    return merge, time.perf_counter() - started


def updated_in_place(wh: DuckDBWarehouse) -> float:
    """As many descriptions overwritten by an UPDATE of current rows the batch does not touch,
    then the checkpoint: the merge's type1 overwrite as it was."""
    started = time.perf_counter()
    with wh.transaction():
        wh.execute(
            "update dim_product set description = description || 'x' where is_current_record "
            f"and product_id >= {REPRICED} and product_id < {REPRICED + REWRITTEN}"
        )
    wh.execute("checkpoint")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--versions", type=int, default=10, help="per key, the short history")
    parser.add_argument("--repeat", type=int, default=5, help="merges per history (median)")
    parser.add_argument(
        "--marked",
        action="store_true",
        help="repriced rows leave the description unsent (a TOAST mark), as PostgreSQL sends them",
    )
    args = parser.parse_args()
    print(f"command   {command_line()}")
    print(f"machine   {machine()}")
    figures: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="riverbed-bench-history-") as scratch:
        folder = Path(scratch)
        for versions in (args.versions, args.versions * LONGER):
            built = build(folder, args.keys, versions, args.marked)
            built.close()
            figures[versions] = merged_copies(built.path, args.repeat)
            wh = DuckDBWarehouse(built.path)
            try:
                current = wh.query(
                    "select count(*) as n from dim_product where is_current_record"
                ).column("n")[0]
                size = os.path.getsize(wh.path) / 2**20
                merge, checkpoint = figures[versions]
                print(
                    f"history   {args.keys * versions:>9,} versions ({versions} a key, "
                    f"{size:,.0f} MB): merge {merge:.3f} s + checkpoint {checkpoint:.3f} s "
                    f"(medians of {args.repeat}; {current.as_py():,} current rows)"
                )
                if versions != args.versions:
                    before = updated_in_place(wh)
                    print(
                        f"  before  {REWRITTEN} descriptions overwritten by an UPDATE in place + "
                        f"checkpoint: {before:.3f} s (the row groups they are in, rewritten)"
                    )
            finally:
                wh.close()
    short, long_ = (sum(figures[v]) for v in (args.versions, args.versions * LONGER))
    ratio = long_ / short
    ok = ratio <= TARGET
    print(
        f"merge + checkpoint, {LONGER}x the history / 1x   {ratio:.2f}x   "
        f"target <= {TARGET}x: {'PASS' if ok else 'FAIL'}   ({long_:.3f} s / {short:.3f} s)"
    )
    print(f"\nreproduce: {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
