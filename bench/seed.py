#!/usr/bin/env python3
"""Seeding speed of `riverbed shop seed`, next to the physical limit measured in the same run.

What is measured, on a fresh embedded PostgreSQL in a throwaway folder under /tmp:

1. seeding: ``riverbed.shop.seed.seed`` writes the history of N orders (default 1,000,000, with
   their items and returns, plus 50,000 customers, 1,000 sellers, 10,000 products) into schema
   ``shop``: create tables (primary keys only), generate + COPY everything, add constraints
   (foreign keys, indexes, triggers, setval, analyze), one transaction.
2. the limit: the same rows, exported beforehand to CSV files (``COPY ... TO STDOUT``), loaded
   into schema ``shop_copy`` doing exactly the seeder's work minus generating the data:
   create tables + COPY FROM the files (streamed through psycopg in 1 MiB blocks) +
   add constraints, one transaction.

Both timings cover the same rows. Also shown: each run split into its load phase and its
constraints phase (the pure COPY time without constraints comes from the same run).
A CHECKPOINT precedes each timed run so neither pays for the other's dirty buffers.

Target: seeding sustains >= 50% of the COPY rate.

Run:   python bench/seed.py                 (about 2 minutes on 2 cores)
       python bench/seed.py --orders 200000 --seed 7 --keep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import psycopg
from _server import command_line, machine, throwaway_server
from psycopg import sql

from riverbed.shop import schema
from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed

BLOCK = 1 << 20
COPY_SCHEMA = "shop_copy"
TARGET = 0.50


def export(conn: psycopg.Connection[Any], folder: Path) -> dict[str, tuple[Path, int]]:
    """COPY every shop table TO STDOUT as CSV into ``folder``; returns table -> (file, bytes)."""
    folder.mkdir()
    files = {}
    for table in schema.TABLES:
        columns = schema.COLUMNS[table][0]
        statement = sql.SQL("copy {} ({}) to stdout (format csv)").format(
            sql.Identifier(schema.SCHEMA, table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        path = folder / f"{table}.csv"
        with path.open("wb") as out, conn.cursor().copy(statement) as copy:
            for block in copy:
                out.write(block)
        files[table] = (path, path.stat().st_size)
    return files


def copy_from_files(
    conn: psycopg.Connection[Any], files: dict[str, tuple[Path, int]]
) -> dict[str, float]:
    """create_tables + COPY FROM files + add_constraints in one transaction; phase timings."""
    started = time.perf_counter()
    with conn.transaction():
        schema.create_tables(conn, COPY_SCHEMA)
        tables_done = time.perf_counter()
        for table in schema.TABLES:
            columns = schema.COLUMNS[table][0]
            statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(
                sql.Identifier(COPY_SCHEMA, table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with files[table][0].open("rb") as source, conn.cursor().copy(statement) as copy:
                while block := source.read(BLOCK):
                    copy.write(block)
        copy_done = time.perf_counter()
        schema.add_constraints(conn, COPY_SCHEMA)
        constraints_done = time.perf_counter()
    finished = time.perf_counter()
    return {
        "total": finished - started,
        "create": tables_done - started,
        "copy": copy_done - tables_done,
        "constraints": constraints_done - copy_done,
        "commit": finished - constraints_done,
    }


def counts(conn: psycopg.Connection[Any], schema_name: str) -> dict[str, int]:
    found = schema.seeded_counts(conn, schema_name)
    assert found is not None, f"schema {schema_name} is missing"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--sellers", type=int, default=1_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--keep", action="store_true", help="leave the server (and its folder) running"
    )
    args = parser.parse_args()
    command = command_line()

    spec = HistorySpec(
        args.customers, args.sellers, args.products, args.orders, args.months, args.seed
    )
    print(f"command   {command}")
    print(f"machine   {machine()}")
    print(
        f"spec      {spec.orders:,} orders, {spec.customers:,} customers, {spec.sellers:,} sellers, "
        f"{spec.products:,} products, {spec.months} months, seed {spec.seed}"
    )

    with throwaway_server(keep=args.keep) as (server, work):
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            version = conn.execute("show server_version").fetchone()
            print(
                f"postgres  {version[0] if version else '?'}, wal_level=logical, same machine, TCP 127.0.0.1"
            )

            # 1. seeding
            conn.execute("checkpoint")
            marks: dict[str, float] = {}

            def progress(table: str, _rows: int, _orders: int) -> None:
                if table == "constraints":
                    marks["constraints"] = time.perf_counter()

            started = time.perf_counter()
            result = seed(conn, spec, schema_name=schema.SCHEMA, on_progress=progress)
            seed_total = result.seconds
            seed_load = marks.get("constraints", started + seed_total) - started
            seed_constraints = seed_total - seed_load
            rows = result.total_rows
            assert counts(conn, schema.SCHEMA) == result.rows, (
                "seeded counts differ from SeedResult.rows"
            )

            # 2. the limit: export, then COPY the same rows from files
            exported = time.perf_counter()
            files = export(conn, work / "csv")
            export_seconds = time.perf_counter() - exported
            conn.execute("checkpoint")
            limit = copy_from_files(conn, files)
            loaded = counts(conn, COPY_SCHEMA)
            if loaded != result.rows:
                raise SystemExit(
                    f"COPY loaded different rows than the seeder: {loaded} vs {result.rows}"
                )

        total_bytes = sum(size for _, size in files.values())
        print(
            f"exported  {total_bytes / 2**20:,.0f} MiB of CSV in {export_seconds:.1f} s (not timed below)"
        )
        print()
        print(f"{'table':<12} {'rows':>12} {'CSV MiB':>9}")
        for table in schema.TABLES:
            print(f"{table:<12} {result.rows[table]:>12,} {files[table][1] / 2**20:>9.1f}")
        print(f"{'total':<12} {rows:>12,} {total_bytes / 2**20:>9.1f}")
        print()

        def line(label: str, seconds: float) -> str:
            return f"{label:<44} {rows:>12,} {seconds:>9.2f} {rows / seconds:>12,.0f}"

        print(f"{'':<44} {'rows':>12} {'seconds':>9} {'rows/s':>12}")
        print(line("seeding  (riverbed.shop.seed.seed)", seed_total))
        print(line("  load phase: generate + COPY", seed_load))
        print(line("  constraints phase: FKs, indexes, analyze", seed_constraints))
        print(line("limit    (create + COPY files + constraints)", limit["total"]))
        print(line("  COPY from files only, no constraints", limit["copy"]))
        print(
            line(
                "  constraints phase: FKs, indexes, analyze", limit["constraints"] + limit["commit"]
            )
        )
        print()
        ratio = limit["total"] / seed_total  # rates over the same rows: inverse ratio of times
        load_ratio = limit["copy"] / seed_load
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(
            f"seeding rate / COPY rate      {ratio:6.1%}   target >= {TARGET:.0%} of COPY rate: {verdict}"
        )
        print(
            f"  load phases only            {load_ratio:6.1%}   (generate + COPY vs COPY from files)"
        )
        print()
        print(f"reproduce: {command}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
