#!/usr/bin/env python3
"""Speed and memory of `riverbed run` (quality rules + transforms) on DuckDB and on Spark local,
next to the limit measured in the same run on the same raw files.

What is measured, on a fresh embedded PostgreSQL in a throwaway folder under /tmp, with a project
folder beside it whose riverbed.yaml is the demo config (six shop tables, their quality rules,
transforms and PII hook; ``transform.batch_rows`` 1,000,000; lake encryption off, since the
limit below is DuckDB reading the raw files: bench/encryption.py measures encryption's cost)
pointed at that server (``source.dsn``), lake and state inside the folder:

1. raw files: the shop seeded so that its six tables hold about N rows (default 10,000,000;
   ``riverbed.shop.seed.seed``, orders = N / 3.6), landed by ``riverbed capture --once`` (the
   snapshot). Then --dirty-changes M (default 50,000) row changes of the shop workload
   (``riverbed.shop.workload.Workload``: its mix of 1-100 row business transactions, no bulk
   import, dirty_ratio 0.02, as fast as it goes), landed by a second ``capture --once``: the
   stream's inserts, updates (some with unchanged-TOAST marks to resolve) and deletes, and some
   rows the demo rules quarantine. The project folder (lake, state.db with the manifest and no
   bookmarks, .riverbed) is then copied once per measured run, so each starts from the same
   untouched raw files.
2. the limit: DuckDB (the ``duckdb`` module, default threads, in a process of its own) reads
   every raw Parquet file of each table (the manifest: state.db ``lake_files`` with stage 'raw')
   and writes it back as one ZSTD Parquet file, no rules, no ordering:
   ``COPY (SELECT * FROM read_parquet([...], union_by_name = true)) TO '...' (FORMAT parquet,
   COMPRESSION zstd)``, table after table. It runs twice, each time before one of the two
   DuckDB transforms: the two show the run-to-run noise, the faster one is the limit.
3. DuckDB: ``riverbed run --once --stage transform --json`` (engine duckdb, the config's
   default), twice, each on its own copy, each after a limit run: per batch of about 1,000,000
   raw rows, read + order, TOAST resolution, transforms, every quality rule, quarantine split,
   PII hash, staged + quarantine Parquet, bookmarks. rows/s = raw rows in / seconds, of the
   faster of the two (the same rule as the limit's: on a shared machine a single run moves by a
   fifth). Target: >= 50% of the limit's rate. (``--stage transform`` leaves the warehouse load
   out: bench/load.py measures that.)
4. Spark: the same with ``--engine spark`` (``local[*]``) on a copy of its own; no target. Its
   time includes starting Spark (a JVM), shown separately by a second ``run --once`` with
   nothing left to do (the engine is opened, and Spark started, before the bookmarks are read).
   Skipped with --skip-spark or when pyspark is not importable; a failure is reported, and the
   rest of the report still printed.

Every measured run is its own process (``python -m riverbed run ... --json``, the limit a
``python -c`` script); its wall time includes interpreter start (the fixed cost is shown: a
``run --once`` with nothing to do). Peak RSS and CPU come from ``os.wait4``'s rusage, taken by a
small launcher process (bench/capture.py). That rusage misses a grandchild its child never
reaps, i.e. Spark's JVM, so the whole process tree is also sampled every 0.2 s: "tree RSS" is
the highest sum of RSS over every process of the run; "CPU s" is the larger of the rusage CPU
and the tree's sampled CPU. "other CPU" is what the rest of the machine used meanwhile (other
jobs, and ~2% of a core for the sampling: figures taken on a busy machine are low). Output the
command prints besides its JSON (a DuckDB progress bar) is reported. A run past --timeout or
--rss-limit is killed and the bench stops, saying so; a Spark run that fails or is killed is
reported and skipped.

Run:   python bench/transform.py                (10M rows: about 7 minutes on 2 cores)
       python bench/transform.py --rows 1000000 --skip-spark --keep
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
from _server import command_line, machine, throwaway_server
from capture import (
    GUARD,
    MB,
    ROWS_PER_ORDER,
    Measured,
    Postmaster,
    capture_command,
    measured,
    write_config,
)

from riverbed.shop import schema
from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed
from riverbed.shop.workload import Workload, WorkloadSpec

TARGET = 0.50  # DuckDB transform rate / limit rate
DIRTY_RATIO = 0.02
SAMPLE_SECONDS = 0.2
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")

# The limit: every table's raw files read and written back as one ZSTD Parquet file by DuckDB.
# argv: a JSON file {table: [[raw file, ...], target file]}; prints {table: seconds}.
LIMIT = r"""
import json, sys, time
import duckdb
plan = json.load(open(sys.argv[1]))
db = duckdb.connect()
db.execute("set enable_progress_bar = false")  # it writes to stdout
seconds = {}
for table, (files, target) in plan.items():
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    started = time.perf_counter()
    db.execute(
        f"copy (select * from read_parquet([{listed}], union_by_name = true)) "
        f"to '{target}' (format parquet, compression zstd)"
    )
    seconds[table] = time.perf_counter() - started
print(json.dumps(seconds))
"""


class TreeSampler:
    """Peak summed RSS and CPU of every process below this one, sampled every 0.2 s.

    The launcher's rusage holds the measured process and the children it reaped; Spark's JVM is
    a grandchild that outlives the Python driver's wait, so only sampling sees it.
    """

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds when last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values())

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.wait(SAMPLE_SECONDS):
            parents: dict[int, int] = {}
            stats: dict[int, tuple[float, float]] = {}  # pid -> (RSS MB, CPU s)
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # ended meanwhile
                pid = int(entry.name)
                parents[pid] = int(fields[1])
                cpu = (int(fields[11]) + int(fields[12])) / TICK
                stats[pid] = (int(fields[21]) * PAGE / MB, cpu)
            below = {me}
            grew = True
            while grew:  # the tree under this process
                grown = {p for p, parent in parents.items() if parent in below} | below
                grew = len(grown) > len(below)
                below = grown
            below.discard(me)
            self.peak_mb = max(self.peak_mb, sum(stats[p][0] for p in below))
            for pid in below:
                self._cpu[pid] = stats[pid][1]


@dataclass
class Run:
    label: str
    rows: int
    m: Measured
    tree_mb: float
    tree_cpu: float
    payload: Any  # the command's JSON output
    noise: int  # bytes the command printed to stdout besides its JSON

    @property
    def load_seconds(self) -> float:
        """The warehouse load that `riverbed run` may do after the transform, as it reports it."""
        load = self.payload.get("load") if isinstance(self.payload, dict) else None
        return float(load.get("seconds") or 0.0) if isinstance(load, dict) else 0.0

    @property
    def seconds(self) -> float:
        """Wall time of the process, less its warehouse load: the transform's share."""
        return self.m.seconds - self.load_seconds

    @property
    def cpu(self) -> float:
        return max(self.m.cpu, self.tree_cpu)

    @property
    def other_cpu(self) -> float:
        # measured() subtracts the launcher's rusage CPU; the JVM's is only in the tree's
        return max(0.0, self.m.other_cpu + self.m.cpu - self.cpu)


def measure(label: str, rows: int, command: list[str], postmaster: Postmaster, work: Path) -> Run:
    with TreeSampler() as tree:
        m = measured(command, postmaster, work)
    # the JSON is the last line; anything before it (DuckDB's progress bar) is noise, reported
    lines = [line for line in m.stdout.replace("\r", "\n").splitlines() if line.strip()]
    noise = len(m.stdout.encode()) - len(lines[-1].encode()) - 1 if lines else 0
    return Run(label, rows, m, tree.peak_mb, tree.cpu, json.loads(lines[-1]), max(0, noise))


def run_command(config: Path, engine: str) -> list[str]:
    return [
        sys.executable, "-m", "riverbed", "run", "--once", "--stage", "transform",
        "--engine", engine, "--json",
        "-c", str(config),
    ]  # fmt: skip


def raw_files(project: Path) -> dict[str, tuple[list[str], int]]:
    """Per table: its raw files (absolute paths, manifest order) and their rows."""
    with sqlite3.connect(project / "state.db") as db:
        rows = db.execute(
            "select table_name, path, rows from lake_files where stage = 'raw'"
            " order by table_name, max_lsn, path"
        ).fetchall()
    found: dict[str, tuple[list[str], int]] = {}
    for table, path, n in rows:
        files, total = found.get(table, ([], 0))
        files.append(str(project / "lake" / path))
        found[table] = (files, total + int(n))
    return found


def measure_limit(
    label: str,
    raw: dict[str, tuple[list[str], int]],
    postmaster: Postmaster,
    work: Path,
) -> Run:
    out = work / "limit"
    out.mkdir()
    plan = {table: [files, str(out / f"{table}.parquet")] for table, (files, _) in raw.items()}
    plan_file = work / "limit-plan.json"
    plan_file.write_text(json.dumps(plan))
    rows = sum(n for _, n in raw.values())
    run = measure(label, rows, [sys.executable, "-c", LIMIT, str(plan_file)], postmaster, work)
    written = sum(pq.read_metadata(out / f"{table}.parquet").num_rows for table in raw)
    if written != rows:
        raise SystemExit(f"the limit wrote {written:,} rows, the raw files hold {rows:,}")
    shutil.rmtree(out)
    plan_file.unlink()
    return run


def loaded(run: Run) -> str:
    if not run.load_seconds:
        return ""
    return f" (transform {run.seconds:.2f} s, then warehouse load {run.load_seconds:.2f} s)"


def transformed(run: Run, key: str) -> int:
    return sum(int(t[key]) for t in run.payload["tables"].values())


def check_rows(run: Run, raw: dict[str, tuple[list[str], int]]) -> None:
    got = {t: int(v["rows_in"]) for t, v in run.payload["tables"].items()}
    want = {t: n for t, (_, n) in raw.items()}
    if got != want:
        raise SystemExit(f"{run.label}: rows in {got} differ from the raw files' {want}")


def try_spark(
    config: Path, rows: int, postmaster: Postmaster, work: Path
) -> tuple[Run | None, Run | None, str | None]:
    """The Spark run and its nothing-to-do rerun; or the reason there are none."""
    if importlib.util.find_spec("pyspark") is None:
        return None, None, "pyspark is not importable here (pip install 'riverbed[spark]')"
    try:
        spark = measure(
            "transform  riverbed run --once, spark",
            rows,
            run_command(config, "spark"),
            postmaster,
            work,
        )
        idle = measure(
            "(fixed cost: run --once, nothing to do, spark)",
            0,
            run_command(config, "spark"),
            postmaster,
            work,
        )
    except SystemExit as exc:  # measured() stops on failure, timeout or RSS limit
        lines = str(exc.code).strip().splitlines()
        # the exceptions raised (unindented "SomeError: ..." lines), then the end of the output
        errors = [line for line in lines if ERROR_LINE.match(line)]
        shown = [*lines[:1], *errors[:8], "...", *lines[-6:]]
        tail = "\n".join(f"          {line[:300]}" for line in shown)
        return None, None, f"riverbed run --engine spark did not complete:\n{tail}"
    return spark, idle, None


def shop_spec(rows: int) -> HistorySpec:
    """The seeded shop whose six tables hold about ``rows`` rows (sized as bench/capture.py)."""
    orders = max(1_000, round(rows / ROWS_PER_ORDER))
    return HistorySpec(
        orders=orders,
        months=12,
        seed=42,
        customers=max(100, orders // 20),
        sellers=max(10, orders // 1_000),
        products=max(50, orders // 100),
    )


def land_raw_files(
    dsn: str, postmaster: Postmaster, work: Path, rows: int, dirty_changes: int
) -> Path:
    """Step 1: seed, snapshot, dirty changes, stream; returns the project folder."""
    project = work / "project"
    project.mkdir()
    # lake encryption off: the limit is DuckDB reading the raw files, which it cannot decrypt
    # (bench/encryption.py measures what encryption costs)
    config = write_config(project, dsn, encrypted=False)
    print(
        f"project   {config}: the demo config, lake encryption off, source.dsn = this server, "
        "lake + state.db here"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        seeded = seed(conn, shop_spec(rows))
        print(
            f"shop      seeded {seeded.total_rows:,} rows in {seeded.seconds:.1f} s: "
            + ", ".join(f"{t} {n:,}" for t, n in seeded.rows.items())
        )
        conn.execute("checkpoint")
        snap = measured(capture_command(config), postmaster, work)
        print(f"snapshot  capture --once: {snap.seconds:.1f} s")
        if dirty_changes <= 0:
            return project
        workload = Workload(
            conn,
            WorkloadSpec(rate=0, duration=None, dirty_ratio=DIRTY_RATIO, seed=7, large_every=1e12),
            schema.SCHEMA,
        )
        stats = workload.run(should_stop=lambda: workload.stats.total >= dirty_changes)
        print(
            f"changes   {stats.total:,} rows changed by the shop workload in "
            f"{stats.transactions:,} transactions ({stats.elapsed:.1f} s); dirty "
            f"{sum(stats.dirty.values()):,} of {stats.eligible:,} eligible rows "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(stats.dirty.items()))})"
        )
        stream = measured(capture_command(config), postmaster, work)
        print(f"stream    capture --once: {json.loads(stream.stdout)['rows']:,} rows")
    return project


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="N: rows of the seeded shop (six tables)"
    )
    parser.add_argument(
        "--dirty-changes",
        type=int,
        default=50_000,
        help="row changes of the shop workload (dirty ratio 0.02) captured after the snapshot",
    )
    parser.add_argument("--skip-spark", action="store_true", help="do not run the Spark engine")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="kill a measured run after this many seconds"
    )
    parser.add_argument(
        "--rss-limit", type=float, default=12288.0, help="kill a measured run above this RSS (MB)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the server running and its folder (project copies, lake) in place",
    )
    args = parser.parse_args()
    GUARD.seconds, GUARD.rss_mb = args.timeout, args.rss_limit
    command = command_line()
    print(f"command   {command}")
    print(f"machine   {machine()}, load average {os.getloadavg()[0]:.2f}")

    with throwaway_server(keep=args.keep) as (server, work):
        postmaster = Postmaster(server.data_dir)
        project = land_raw_files(
            server.dsn("postgres"), postmaster, work, args.rows, args.dirty_changes
        )
        raw = raw_files(project)
        raw_rows = sum(n for _, n in raw.values())
        files = sum(len(f) for f, _ in raw.values())
        raw_bytes = sum(Path(p).stat().st_size for f, _ in raw.values() for p in f)
        print(
            f"raw       {raw_rows:,} rows in {files:,} files, {raw_bytes / MB:,.0f} MiB Parquet: "
            + ", ".join(f"{t} {n:,}" for t, (_, n) in sorted(raw.items(), key=lambda x: -x[1][1]))
        )
        copies = {}
        for engine in (
            ("duckdb", "duckdb-2") if args.skip_spark else ("duckdb", "duckdb-2", "spark")
        ):
            copies[engine] = work / f"project-{engine}"
            shutil.copytree(project, copies[engine])

        # 2. + 3. the limit and the DuckDB transform, in turn, twice
        limits, ducks = [], []
        for turn, copy in enumerate(("duckdb", "duckdb-2")):
            again = ", again" if turn else ""
            limits.append(
                measure_limit(f"  limit    DuckDB Parquet -> Parquet{again}", raw, postmaster, work)
            )
            print(f"limit     {limits[-1].seconds:.2f} s")
            ducks.append(
                measure(
                    f"transform  riverbed run --once, duckdb{again}",
                    raw_rows,
                    run_command(copies[copy] / "riverbed.yaml", "duckdb"),
                    postmaster,
                    work,
                )
            )
            check_rows(ducks[-1], raw)
            print(f"duckdb    run --once: {ducks[-1].m.seconds:.2f} s" + loaded(ducks[-1]))
        limit, limit_2 = limits
        duck_1, duck_2 = ducks
        duck = min(duck_1, duck_2, key=lambda r: r.seconds)  # as for the limit: the faster
        duck_idle = measure(
            "(fixed cost: run --once, nothing to do, duckdb)",
            0,
            run_command(copies["duckdb"] / "riverbed.yaml", "duckdb"),
            postmaster,
            work,
        )

        # 4. Spark
        spark = spark_idle = None
        skipped = "--skip-spark" if args.skip_spark else None
        if not args.skip_spark:
            spark, spark_idle, skipped = try_spark(
                copies["spark"] / "riverbed.yaml", raw_rows, postmaster, work
            )
            if spark is not None:
                print(f"spark     run --once: {spark.m.seconds:.2f} s" + loaded(spark))
                try:
                    check_rows(spark, raw)
                except SystemExit as exc:  # reported; the DuckDB figures still stand
                    print(f"spark     {exc}")

    # --- report ---------------------------------------------------------------------------
    print()
    print(
        f"{'':<48} {'rows':>11} {'seconds':>8} {'rows/s':>10} {'peak RSS':>9} "
        f"{'tree RSS':>9} {'CPU s':>6} {'other CPU s':>11}"
    )

    def line(run: Run) -> str:
        rate = f"{run.rows / run.seconds:>10,.0f}" if run.rows else f"{'':>10}"
        rows = f"{run.rows:>11,}" if run.rows else f"{'':>11}"
        return (
            f"{run.label:<48} {rows} {run.seconds:>8.2f} {rate} {run.m.rss_mb:>6,.0f} MB "
            f"{run.tree_mb:>6,.0f} MB {run.cpu:>6.1f} {run.other_cpu:>11.1f}"
        )

    for run in (duck_1, duck_2, limit, limit_2, spark, duck_idle, spark_idle):
        if run is not None:
            print(line(run))
    best = min(limit.seconds, limit_2.seconds)
    inner = [sum(r.payload.values()) for r in (limit, limit_2)]
    print(
        "  limit per table (faster run, seconds): "
        + ", ".join(
            f"{t} {min(limit.payload[t], limit_2.payload[t]):.2f}"
            for t in sorted(raw, key=lambda t: -raw[t][1])
        )
    )
    print(
        f"  transform phase as `run` reports it (no interpreter start): duckdb "
        f"{duck.payload['seconds']:.2f} s = {raw_rows / duck.payload['seconds']:,.0f} rows/s"
        + (
            f", spark {spark.payload['seconds']:.2f} s = "
            f"{raw_rows / spark.payload['seconds']:,.0f} rows/s"
            if spark
            else ""
        )
        + f"; limit's COPY statements {min(inner):.2f} s = {raw_rows / min(inner):,.0f} rows/s"
    )
    print(
        "  peak RSS: the launcher's rusage (the measured process and what it reaped); "
        "tree RSS: sampled sum over every process of the run (Spark's JVM included)"
    )
    loads = [r for r in (duck, spark, duck_idle, spark_idle) if r is not None and r.load_seconds]
    if loads:
        print(
            "  `riverbed run` also loaded the warehouse ("
            + ", ".join(
                f"{r.payload.get('engine')}{'' if r.rows else ' nothing to do'} "
                f"{r.load_seconds:.2f} s"
                for r in loads
            )
            + "): left out of seconds and rows/s above; peak RSS and CPU include it"
        )
    for run in (duck_1, duck_2, limit, limit_2, spark, duck_idle, spark_idle):
        if run is not None and run.noise:
            print(
                f"  note: {run.label.strip()} printed {run.noise:,} bytes to stdout besides its "
                "JSON (a DuckDB progress bar?): `--json` output is then not parseable as is"
            )
    print()

    ratio = best / duck.seconds
    ok = ratio >= TARGET
    print(
        f"transform rate / limit (DuckDB)   {ratio:6.1%}   target >= {TARGET:.0%}: "
        f"{'PASS' if ok else 'FAIL'}   (duckdb {raw_rows / duck.seconds:,.0f} rows/s, the faster "
        f"of {duck_1.seconds:.2f} / {duck_2.seconds:.2f} s; limit {raw_rows / best:,.0f} rows/s, "
        f"the faster of {limit.seconds:.2f} / {limit_2.seconds:.2f} s)"
    )
    print(
        f"peak RSS, DuckDB transform        {duck.m.rss_mb:>6,.0f} MB   (tree {duck.tree_mb:,.0f} "
        f"MB; limit {max(limit.m.rss_mb, limit_2.m.rss_mb):,.0f} MB)"
    )
    if spark is not None and spark_idle is not None:
        print(
            f"transform rate, Spark local       {raw_rows / spark.seconds:>9,.0f} rows/s   "
            f"({best / spark.seconds:.1%} of the limit; no target); peak RSS {spark.m.rss_mb:,.0f}"
            f" MB, tree {spark.tree_mb:,.0f} MB; Spark start-up + fixed cost "
            f"{spark_idle.seconds:.1f} s, without it "
            f"{raw_rows / max(1e-9, spark.seconds - spark_idle.seconds):,.0f} rows/s"
        )
        for key in ("rows_out", "rows_quarantined"):
            if transformed(spark, key) != transformed(duck, key):
                print(
                    f"  spark {key} {transformed(spark, key):,} differ from duckdb's "
                    f"{transformed(duck, key):,}"
                )
    else:
        print(f"Spark             skipped: {skipped}")
    quarantined = {
        t: int(v["rows_quarantined"])
        for t, v in duck.payload["tables"].items()
        if v["rows_quarantined"]
    }
    print(
        f"quarantined rows  {transformed(duck, 'rows_quarantined'):,} (duckdb"
        + (f": {', '.join(f'{t} {n:,}' for t, n in quarantined.items())}" if quarantined else "")
        + f"); staged {transformed(duck, 'rows_out'):,}"
    )
    print(
        f"load      average over the last 5 min {os.getloadavg()[1]:.2f}; 'other CPU s' is what the "
        "machine spent outside the measured\n          process tree during that run: if it is "
        "large, other jobs competed and the figures are low"
    )
    print()
    print(f"reproduce: {command}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
