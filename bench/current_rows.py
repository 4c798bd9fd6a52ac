#!/usr/bin/env python3
"""Reading a table's current rows for the keys one batch names, as the transform's reference
and self-reference rules do (``riverbed.lake.reader.RowGroupFilter``), against reading every
staged file in full and filtering (what it did before).

The lake: ``--files`` staged Parquet files of ``--rows`` rows each, keys in source order (as
the transform writes them), with the columns a refund rule reads of order items. The batch: a
steady one, ``--keys`` keys among the most recent ``--recent`` (returns of recent orders). No
target: the figure is how much of the history a steady batch no longer reads. Run:

    python bench/current_rows.py
    python bench/current_rows.py --files 40 --recent 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _server import command_line, machine

from riverbed.lake.local import LocalStorage
from riverbed.lake.parquet import open_file, write_table
from riverbed.lake.reader import RowGroupFilter

COLUMNS = ["order_item_id", "quantity", "unit_price", "_op", "_lsn", "_seq"]


def lake(folder: Path, files: int, rows: int) -> tuple[LocalStorage, list[str]]:
    storage = LocalStorage(folder)
    paths = []
    for f in range(files):
        ids = np.arange(f * rows, (f + 1) * rows, dtype=np.int64)
        table = pa.table(
            {
                "order_item_id": ids,
                "quantity": pa.array(ids % 5 + 1, pa.int32()),
                "unit_price": pa.array((ids % 10_000) / 100).cast(pa.decimal128(10, 2)),
                "_op": pa.array(np.full(rows, "I")),
                "_lsn": ids * 16,
                "_seq": np.zeros(rows, dtype=np.int64),
            }
        )
        path = f"staged/order_items/part-{f:05d}.parquet"
        write_table(storage, path, table)  # as the transform writes staged files
        paths.append(path)
    return storage, paths


def read(storage: LocalStorage, paths: list[str], values: pa.Array, prune: bool) -> int:
    pruning = RowGroupFilter([("order_item_id", values)]) if prune else None
    found = 0
    for path in paths:
        parquet = open_file(storage, path)
        if pruning is None:
            part = parquet.read(columns=COLUMNS)
        else:
            part = parquet.read_row_groups(pruning.groups(parquet), columns=COLUMNS)
        found += part.filter(pc.is_in(part.column("order_item_id"), value_set=values)).num_rows
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=14, help="staged files")
    parser.add_argument("--rows", type=int, default=470_000, help="rows per file")
    parser.add_argument("--keys", type=int, default=700, help="keys the batch names")
    parser.add_argument("--recent", type=int, default=5_000, help="...among the newest N")
    args = parser.parse_args()
    print(f"command   {command_line()}")
    print(f"machine   {machine()}")
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="riverbed-bench-") as folder:
        storage, paths = lake(Path(folder), args.files, args.rows)
        total = args.files * args.rows
        values = pa.array(rng.choice(np.arange(total - args.recent, total), args.keys, False))
        timings = {}
        for prune in (False, True, False, True):
            started = time.perf_counter()
            found = read(storage, paths, values, prune)
            seconds = time.perf_counter() - started
            timings[prune] = min(timings.get(prune, seconds), seconds)
            assert found == args.keys, found
    print()
    print(
        f"{args.keys:,} recent keys of {total:,} staged rows in {args.files} files: "
        f"row groups by their statistics {timings[True]:.3f} s, every file in full "
        f"{timings[False]:.3f} s ({timings[False] / timings[True]:.0f}x); best of two each"
    )
    print(f"\nreproduce: {command_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
