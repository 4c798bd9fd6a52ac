#!/usr/bin/env python3
"""Cost follows the changes: the same 10,000-change run on top of 1x, 10x and 30x history, and
the memory of a long `run --every`.

What is measured, per history factor F in 1, 10, 30 (each on a fresh embedded PostgreSQL in a
throwaway folder under /tmp, with the demo config pointed at it, as bench/e2e.py sets it up):

1. set-up, not measured: history is time. The shop seeded with F x --orders orders (default
   100,000: 100k, 1M, 3M) over F x --months months (default 1) by F x --customers customers
   (default 20,000), so a day holds as many orders and a customer as many orders at every
   factor, as a shop that has simply run F times as long (``riverbed.shop.seed.seed``, COPY,
   the fastest way there is); a catalogue of --products products (default 5,000) whose keys do
   not grow but whose versions do: --long of them get a TOAST-sized description (so a price
   change leaves an unchanged-TOAST mark, as the live workload's repricing does); then
   ``capture`` (the snapshot) and ``run`` (the initial load), in process; then F - 1 rounds of
   one UPDATE of every product's price and --round-changes (default 1,000) changes of the live
   workload, each round captured and run: dim_product holds F versions per key, the lake F
   staged batches of every table, as change capture grows it.
2. the run: --changes (default 10,000) changes of the shop's live workload
   (``riverbed.shop.workload.Workload``, as fast as it goes, no bulk import, no dirty rows,
   the same seed at every factor), ``capture --once`` in process, then ``python -m riverbed
   run --once --json`` as a process of its own: its wall time, its per-state durations from the
   run history (``run_events``' succeeded ``seconds``, riverbed/orchestrate/history.py), its
   peak RSS (``os.wait4``'s rusage, bench/capture.py's launcher).

Target: at 30x the run takes at most 1.5x its time at 1x (the states are printed side by side,
so the one that grows shows). The run is repeated --repeat times per factor (default 3) on
fresh changes each time; the median is compared.

With --rss-minutes M (the RSS target; M = 30 for the real one, on a quiet machine): on the 1x
history, ``capture --follow``, ``run --every 5`` and ``shop run --rate 1000`` for M minutes;
the RSS of ``run --every`` sampled every second. Target: its median over the last third
(minutes 20-30) within 10% of its median over minutes M/6 to M/2 (5-15). A short M (3) is for
development: the windows scale with it.

Other work on the machine slows every factor alike only if it is steady: the load average is
printed beside each figure, and ratios measured in one run are what count.

Run:   python bench/scale.py                      (about 15 minutes on 2 cores)
       python bench/scale.py --quick              (10k / 100k / 300k orders, a few minutes)
       python bench/scale.py --factors 1,30 --orders 20000 --repeat 1
       python bench/scale.py --rss-minutes 30     (30 minutes; --rss-minutes 3 to try it)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from _server import command_line, machine, throwaway_server
from capture import group_rss_mb, launch, write_config
from e2e import riverbed, state_rows, stop, usage_of

from riverbed.capture.runner import run_capture
from riverbed.config import Project
from riverbed.config.loader import load_project
from riverbed.orchestrate.runner import run_pipeline
from riverbed.serve.extracts import store
from riverbed.shop import schema
from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed
from riverbed.shop.workload import Workload, WorkloadSpec

RATIO_TARGET = 1.5  # the run at the largest factor over the run at 1x
RSS_TARGET = 0.10  # the last third's median RSS within 10% of minutes M/6..M/2
S = schema.SCHEMA


RELABEL = "  publish: relabel"  # a pseudo-state: the part of publish relabelling cells
RELABEL_SECONDS, RELABEL_CELLS = "extract_relabel_seconds", "extract_cells_relabelled"


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


@dataclass
class Figures:
    factor: int
    orders: int
    set_up: float
    runs: list[float] = field(default_factory=list)  # wall seconds of each measured run
    rss_mb: list[float] = field(default_factory=list)
    states: dict[str, list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    extract_mb: float = 0.0  # the extract's file after the measured runs
    copy_seconds: float = 0.0  # store.clone of it, as publish's refresh starts with
    reflink: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


# --- history ------------------------------------------------------------------------------


def in_process(config: Path) -> float:
    """capture --once then run --once, in this process; seconds."""
    started = time.perf_counter()
    project = load_project(config)
    run_capture(project, follow=False)
    report = run_pipeline(project)
    if report.status != "succeeded":
        raise SystemExit(f"a set-up run failed: {report.failed_state}: {report.error}")
    return time.perf_counter() - started


def build(dsn: str, project: Path, factor: int, args: argparse.Namespace) -> Path:
    """The shop with ``factor`` x history, captured and loaded; returns the config path."""
    config = write_config(project, dsn)
    spec = HistorySpec(
        customers=args.customers * factor,
        sellers=max(10, args.products // 20),
        products=args.products,
        orders=args.orders * factor,
        months=args.months * factor,
        seed=42,
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        seeded = seed(conn, spec)
        # out-of-line (TOASTed) descriptions: a price change then leaves an unchanged mark
        conn.execute(
            f"update {S}.products set description = (select string_agg(md5(random()::text"
            " || g), ' ') from generate_series(1, 400) g) where product_id <= %s",
            (args.long,),
        )
    print(f"  seeded   {seeded.total_rows:,} rows in {seeded.seconds:.1f} s ({load()})")
    first = in_process(config)
    print(f"  initial  snapshot + first run {first:.1f} s ({load()})")
    started = time.perf_counter()
    for round_ in range(1, factor):
        with psycopg.connect(dsn, autocommit=True) as conn:
            delta = 0.01 if round_ % 2 else -0.01  # alternating: prices stay where they were
            conn.execute(f"update {S}.products set price = price + %s", (delta,))
        # and some live changes: every table's lake grows by a batch a round, as CDC grows it
        changes(dsn, args.round_changes, 1000 + round_)
        in_process(config)
    if factor > 1:
        print(
            f"  versions {factor - 1} rounds of every product's price changed and "
            f"{args.round_changes:,} live changes, each captured and run: "
            f"{time.perf_counter() - started:.1f} s ({load()})"
        )
    return config


# --- the measured run ---------------------------------------------------------------------


def changes(dsn: str, count: int, seed_: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        spec = WorkloadSpec(rate=0, duration=None, dirty_ratio=0, seed=seed_, large_every=1e9)
        workload = Workload(conn, spec, S)
        stats = workload.run(lambda: workload.stats.total >= count)
    return stats.total


def measured_run(config: Path, project: Path) -> tuple[float, float, dict[str, float]]:
    """`riverbed run --once --json` as its own process: (seconds, peak RSS MB, state seconds)."""
    started = time.time()
    with tempfile.TemporaryDirectory(dir=project) as work:
        result = Path(work) / "rusage.json"
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = launch(riverbed(config, "run", "--once", "--json"), result, out, err)
            process.wait()
            usage = usage_of(process, result, "run --once", err)
            out.seek(0)
            report = json.loads(out.read().decode().strip().splitlines()[-1])
    if report["status"] != "succeeded":
        raise SystemExit(
            f"the measured run failed: {report.get('failed_state')}: {report.get('error')}"
        )
    states: dict[str, float] = {}
    for state, seconds in state_rows(
        project,
        "select state, json_extract(detail, '$.seconds') from run_events"
        " where run_id = ? and event = 'succeeded' order by seq",
        (report["run_id"],),
    ):
        if seconds is not None:
            states[state] = states.get(state, 0.0) + float(seconds)
    # of publish: relabelling renamed members' cells (relabel.py), which follows their history
    for name, value in state_rows(
        project,
        "select name, value from metrics where name in (?, ?) and labels = '{}' and ts >= ?"
        " order by ts",
        (RELABEL_SECONDS, RELABEL_CELLS, started),
    ):
        states[RELABEL if name == RELABEL_SECONDS else RELABEL_CELLS] = float(value)
    return usage.seconds, usage.rss_mb, states


def measure(factor: int, args: argparse.Namespace) -> Figures:
    print(
        f"\n{factor}x history: {args.orders * factor:,} orders over {args.months * factor} "
        f"month(s), {args.customers * factor:,} customers, {factor} version(s) per product"
    )
    with throwaway_server() as (server, work):
        dsn = server.dsn("postgres")
        project = work / "project"
        project.mkdir()
        started = time.perf_counter()
        config = build(dsn, project, factor, args)
        figures = Figures(factor, args.orders * factor, time.perf_counter() - started)
        for i in range(args.repeat):
            made = changes(dsn, args.changes, 7 + i)
            run_capture(load_project(config), follow=False)
            before = os.getloadavg()[0]
            seconds, rss, states = measured_run(config, project)
            figures.runs.append(seconds)
            figures.rss_mb.append(rss)
            figures.loads.append(max(before, os.getloadavg()[0]))
            for state, s in states.items():
                figures.states.setdefault(state, []).append(s)
            print(
                f"  run {i + 1}    {made:,} changes: run --once {seconds:.2f} s, peak RSS "
                f"{rss:,.0f} MB ({load()}); "
                + ", ".join(
                    f"{k.strip()} {v:,.0f}" if k == RELABEL_CELLS else f"{k.strip()} {v:.2f}"
                    for k, v in states.items()
                )
            )
        copy_extract(load_project(config), figures)
    return figures


def copy_extract(project: Project, figures: Figures) -> None:
    """Time the copy a refresh starts from (store.clone of the published generation, into a
    scratch file beside it): a reflink where the filesystem has one, else every byte of the
    extract, which grows with the history."""
    generation = store.current(project)
    if generation is None:
        return
    source = store.path_of(project, generation.name)
    scratch = source.with_name("bench-copy.duckdb")
    started = time.perf_counter()
    figures.reflink = store.clone(source, scratch)
    figures.copy_seconds = time.perf_counter() - started
    figures.extract_mb = source.stat().st_size / 2**20
    scratch.unlink()
    print(
        f"  extract  {figures.extract_mb:,.0f} MB; the copy each refresh starts with "
        f"{figures.copy_seconds:.2f} s ({'a reflink' if figures.reflink else 'no reflink here: every byte'})"
    )


def report(all_figures: list[Figures]) -> bool:
    print()
    states = list(dict.fromkeys(s for f in all_figures for s in f.states))
    header = f"{'state (median s)':<24}" + "".join(f"{f'{f.factor}x':>10}" for f in all_figures)
    print(header)
    for state in states:
        form = "{:>10,.0f}" if state == RELABEL_CELLS else "{:>10.2f}"
        cells = "".join(
            form.format(statistics.median(f.states[state])) if state in f.states else f"{'-':>10}"
            for f in all_figures
        )
        label = "    cells relabelled" if state == RELABEL_CELLS else state
        print(f"{label:<24}{cells}")
    print(f"{'run --once (wall)':<24}" + "".join(f"{f.median:>10.2f}" for f in all_figures))
    print(f"{'peak RSS MB (max)':<24}" + "".join(f"{max(f.rss_mb):>10,.0f}" for f in all_figures))
    print(f"{'load average (max)':<24}" + "".join(f"{max(f.loads):>10.2f}" for f in all_figures))
    print(f"{'orders of history':<24}" + "".join(f"{f.orders:>10,}" for f in all_figures))
    print(f"{'extract MB':<24}" + "".join(f"{f.extract_mb:>10,.0f}" for f in all_figures))
    print(f"{'  its copy (s)':<24}" + "".join(f"{f.copy_seconds:>10.2f}" for f in all_figures))
    base, top = all_figures[0], all_figures[-1]
    ratio = top.median / base.median
    ok = ratio <= RATIO_TARGET
    print()
    print(
        f"run at {top.factor}x / run at {base.factor}x history   {ratio:.2f}   ({top.median:.2f} s "
        f"vs {base.median:.2f} s, medians of {len(top.runs)})   target <= {RATIO_TARGET:g}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    if top.extract_mb and not top.reflink:
        print(
            f"  of it, the extract's copy (no reflink on this filesystem): {top.copy_seconds:.2f} s "
            f"at {top.factor}x ({top.extract_mb:,.0f} MB), {base.copy_seconds:.2f} s at "
            f"{base.factor}x: a refresh copies the whole previous generation"
        )
    rss_ratio = max(top.rss_mb) / max(base.rss_mb)
    print(f"  peak RSS at {top.factor}x / at {base.factor}x   {rss_ratio:.2f} (shown, no target)")
    for state in states:
        if state in base.states and state in top.states and state != RELABEL_CELLS:
            low, high = statistics.median(base.states[state]), statistics.median(top.states[state])
            if low > 0.05:
                print(f"  {state:<22} {high / low:5.2f}x ({low:.2f} s -> {high:.2f} s)")
    return ok


# --- the RSS of a long run --every --------------------------------------------------------


def rss_mode(args: argparse.Namespace) -> bool:
    minutes = args.rss_minutes
    with throwaway_server() as (server, work):
        dsn = server.dsn("postgres")
        project = work / "project"
        project.mkdir()
        print(
            f"\nrss: 1x history ({args.orders:,} orders), then {minutes:g} minutes of run --every 5"
        )
        config = build(dsn, project, 1, args)
        since = time.time()
        rss = follow(config, project, minutes * 60)
        states = states_by_minute(project, since)
    first = [mb for t, mb in rss if minutes * 60 / 6 <= t <= minutes * 60 / 2]
    last = [mb for t, mb in rss if t >= minutes * 60 * 2 / 3]
    for minute in range(int(minutes) + 1):
        inside = [mb for t, mb in rss if minute * 60 <= t < (minute + 1) * 60]
        if inside:
            print(
                f"  minute {minute:>3}: RSS median {statistics.median(inside):,.0f} MB, max "
                f"{max(inside):,.0f} MB; state medians (s) "
                + ", ".join(
                    f"{k} {statistics.median(v):.2f}" for k, v in states.get(minute, {}).items()
                )
            )
    if not first or not last:
        print("rss target: too few samples: FAIL")
        return False
    reference, tail = statistics.median(first), statistics.median(last)
    change = tail / reference - 1
    ok = abs(change) <= RSS_TARGET
    print(
        f"run --every RSS, last third / minutes {minutes / 6:g}-{minutes / 2:g}   {change:+.1%}   "
        f"({tail:,.0f} MB vs {reference:,.0f} MB, medians; highest {max(mb for _, mb in rss):,.0f} "
        f"MB; {load()})   target within {RSS_TARGET:.0%}: {'PASS' if ok else 'FAIL'}"
    )
    return ok


def states_by_minute(project: Path, since: float) -> dict[int, dict[str, list[float]]]:
    """Minute of the run's start -> state -> seconds, over the runs that brought new data."""
    found: dict[int, dict[str, list[float]]] = {}
    for started, state, seconds in state_rows(
        project,
        "select r.started_at, e.state, json_extract(e.detail, '$.seconds') from runs r"
        " join run_events e using (run_id) where r.started_at >= ? and e.event = 'succeeded'"
        " and exists (select 1 from run_events t where t.run_id = r.run_id and"
        " t.state = 'transform' and t.event = 'succeeded') order by r.started_at, e.seq",
        (since,),
    ):
        if seconds is not None:
            minute = int((started - since) // 60)
            found.setdefault(minute, {}).setdefault(state, []).append(float(seconds))
    return found


def follow(config: Path, project: Path, seconds: float) -> list[tuple[float, float]]:
    """capture --follow, run --every 5 and shop run --rate 1000 side by side for ``seconds``;
    run --every's RSS sampled every second: [(seconds in, MB)]."""
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=project))
    errs = {name: (work / f"{name}.err").open("w+b") for name in ("capture", "run", "shop")}
    results = {name: work / f"rusage-{name}.json" for name in errs}
    started = [
        launch(riverbed(config, "capture", "--follow", "--json"), results["capture"],
               subprocess.DEVNULL, errs["capture"]),
        launch(riverbed(config, "run", "--every", "5", "--json"), results["run"],
               subprocess.DEVNULL, errs["run"]),
        launch(riverbed(config, "shop", "run", "--rate", "1000", "--duration", f"{seconds:g}",
                        "--dirty-ratio", "0", "--large-every", "1e9", "--seed", "7", "--json"),
               results["shop"], subprocess.DEVNULL, errs["shop"]),
    ]  # fmt: skip
    follower, runner, shop = started
    rss: list[tuple[float, float]] = []
    begin = time.monotonic()
    try:
        while shop.poll() is None:
            rss.append((time.monotonic() - begin, group_rss_mb(runner.pid)))
            for name, process, err in (
                ("capture --follow", follower, errs["capture"]),
                ("run --every", runner, errs["run"]),
            ):
                if process.poll() is not None:
                    err.seek(0)
                    raise SystemExit(f"{name} ended early:\n{err.read().decode()[-3000:]}")
            time.sleep(1.0)
        stop(runner, signal.SIGINT)
        stop(follower, signal.SIGTERM)
        usage = usage_of(runner, results["run"], "run --every", errs["run"])
        print(
            f"  run --every: {usage.cpu:.0f} s CPU over {usage.seconds:.0f} s, peak RSS {usage.rss_mb:,.0f} MB"
        )
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the launcher's own group: only ours
                process.wait()
        for handle in errs.values():
            handle.close()
    return rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k orders at 1x, 1,000 products")
    parser.add_argument("--factors", default="1,10,30", help="history factors, first is the base")
    parser.add_argument("--orders", type=int, default=None, help="orders at 1x (100,000)")
    parser.add_argument("--months", type=int, default=1, help="months of history at 1x")
    parser.add_argument("--customers", type=int, default=None, help="customers at 1x (20,000)")
    parser.add_argument("--products", type=int, default=None, help="products (5,000)")
    parser.add_argument("--long", type=int, default=200, help="products with TOASTed descriptions")
    parser.add_argument("--changes", type=int, default=10_000, help="changes of the measured run")
    parser.add_argument(
        "--round-changes", type=int, default=1_000, help="live changes in each history round"
    )
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per factor")
    parser.add_argument("--rss-minutes", type=float, default=None, help="the RSS mode instead")
    args = parser.parse_args()
    small = args.quick
    args.orders = args.orders or (10_000 if small else 100_000)
    args.customers = args.customers or (2_000 if small else 20_000)
    args.products = args.products or (1_000 if small else 5_000)
    command = command_line()
    print(f"command   {command}")
    print(f"machine   {machine()}, {load()}")
    if args.rss_minutes:
        ok = rss_mode(args)
    else:
        factors = [int(f) for f in args.factors.split(",")]
        ok = report([measure(f, args) for f in factors])
    print()
    print(f"reproduce: {command}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
