#!/usr/bin/env python3
"""What lake encryption costs: capture and transform throughput with ``lake.encryption`` on
and off, in the same run on the same source (issue 18: within 15% of off).

What is measured, on a fresh embedded PostgreSQL in a throwaway folder under /tmp:

1. the shop seeded so that its six tables hold about N rows (default 1,000,000).
2. four project folders, each the demo config (bench/capture.py's write_config) with a slot of
   its own: two with lake encryption off, two on (the demo's keyring, made on first use), in
   the order off, on, on, off so that a drift of the machine's speed during the run weighs on
   both sides alike. Each project:
   - snapshot: ``riverbed capture --once`` copies the seeded tables (Parquet written through
     the encrypting writer, one process per project, one after the other);
   - stream: after the shop workload's M row changes (default 200,000; dirty ratio 0.02), a
     second ``capture --once`` per project drains the same changes from its own slot;
   - transform: ``riverbed run --once --stage transform --json`` (DuckDB) over every raw
     file: reads (decrypting), rules, staged and quarantine files (encrypting).
3. per measure and side, the lower of the two runs (as bench/transform.py: a single run moves
   by a fifth on a shared machine); the overhead is encrypted / plain - 1, against the target of
   15%, in wall seconds and in CPU seconds (user + system of the riverbed process). The verdict
   is on CPU: encryption's cost is CPU in that process, and on a shared machine the wall time of
   one run moves by more than the target (the "other CPU" column shows how busy it was).

Every measured run is its own process (``python -m riverbed ...``), timed with its rusage by
bench/capture.py's launcher; the times include the interpreter's start (the same on both sides).

Run:   python bench/encryption.py              (1M rows: about 4 minutes on 2 cores)
       python bench/encryption.py --rows 200000 --changes 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from _server import command_line, machine, throwaway_server
from capture import GUARD, Postmaster, capture_command, measured, write_config
from transform import DIRTY_RATIO, shop_spec

from riverbed.shop import schema
from riverbed.shop.seed import seed
from riverbed.shop.workload import Workload, WorkloadSpec

TARGET = 0.15  # encrypted seconds / plain seconds - 1, at most
MEASURES = ("snapshot", "stream", "transform")
ORDER = (("plain", False), ("encrypted", True), ("encrypted-2", True), ("plain-2", False))


@dataclass
class Side:
    """One project's runs: seconds and rows per measure."""

    name: str
    encrypted: bool
    config: Path
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # user + system of the process
    rows: dict[str, int] = field(default_factory=dict)


def transform_command(config: Path) -> list[str]:
    return [
        sys.executable, "-m", "riverbed", "run", "--once", "--stage", "transform",
        "--engine", "duckdb", "--json", "-c", str(config),
    ]  # fmt: skip


def run_all(sides: list[Side], measure: str, postmaster: Postmaster, work: Path) -> None:
    for side in sides:
        command = (
            transform_command(side.config)
            if measure == "transform"
            else capture_command(side.config)
        )
        m = measured(command, postmaster, work)
        payload = json.loads(m.stdout.strip().splitlines()[-1])
        if measure == "snapshot":
            rows = sum(payload["snapshot_rows"].values())
        elif measure == "stream":
            rows = int(payload["rows"])
        else:
            rows = sum(int(t["rows_in"]) for t in payload["tables"].values())
        side.seconds[measure], side.cpu[measure], side.rows[measure] = m.seconds, m.cpu, rows
        print(
            f"{measure:<9} {side.name:<12} {rows:>10,} rows {m.seconds:>8.2f} s, "
            f"CPU {m.cpu:>6.2f} s, other CPU {m.other_cpu:>6.1f} s"
        )


def best(sides: list[Side], encrypted: bool, measure: str, figure: str) -> float:
    """The lower of the two runs' ``figure`` (seconds or cpu) on one side."""
    return min(getattr(s, figure)[measure] for s in sides if s.encrypted == encrypted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the seeded shop")
    parser.add_argument(
        "--changes", type=int, default=200_000, help="row changes captured after the snapshot"
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="leave the server and its folder")
    args = parser.parse_args()
    GUARD.seconds = args.timeout
    print(f"command   {command_line()}")
    print(f"machine   {machine()}, load average {os.getloadavg()[0]:.2f}")

    with throwaway_server(keep=args.keep) as (server, work):
        dsn = server.dsn("postgres")
        postmaster = Postmaster(server.data_dir)
        sides = []
        for name, encrypted in ORDER:
            folder = work / name
            folder.mkdir()
            slot = f"riverbed_{name.replace('-', '_')}"
            sides.append(Side(name, encrypted, write_config(folder, dsn, None, encrypted, slot)))
        print(
            "projects  the demo config, lake encryption off / on: " + ", ".join(n for n, _ in ORDER)
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            seeded = seed(conn, shop_spec(args.rows))
            print(f"shop      seeded {seeded.total_rows:,} rows in {seeded.seconds:.1f} s")
            conn.execute("checkpoint")
            run_all(sides, "snapshot", postmaster, work)
            workload = Workload(
                conn,
                WorkloadSpec(
                    rate=0, duration=None, dirty_ratio=DIRTY_RATIO, seed=7, large_every=1e12
                ),
                schema.SCHEMA,
            )
            stats = workload.run(should_stop=lambda: workload.stats.total >= args.changes)
            print(f"changes   {stats.total:,} rows changed in {stats.transactions:,} transactions")
        run_all(sides, "stream", postmaster, work)
        run_all(sides, "transform", postmaster, work)

    print()
    print(f"{'':<10} {'rows':>10} {'':>5} {'off s':>8} {'on s':>8} {'off rows/s':>11} "
          f"{'on rows/s':>10} {'overhead':>9}  target <= {TARGET:.0%}")  # fmt: skip
    verdicts = []
    for measure in MEASURES:
        rows = sides[0].rows[measure]
        for figure, label in (("seconds", "wall"), ("cpu", "CPU")):
            off, on = best(sides, False, measure, figure), best(sides, True, measure, figure)
            overhead = on / off - 1
            met = overhead <= TARGET
            if figure == "cpu":
                verdicts.append(met)
            print(
                f"{measure:<10} {rows:>10,} {label:>5} {off:>8.2f} {on:>8.2f} {rows / off:>11,.0f} "
                f"{rows / on:>10,.0f} {overhead:>+9.1%}  {'met' if met else 'MISSED'}"
            )
    print(
        "(the lower of two runs per side. wall: seconds, the interpreter's start included, moved "
        "by whatever else the machine runs; CPU: the process's user + system seconds, what "
        "encryption adds, the verdict)"
    )
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
