"""Issue 6's acceptance test, end to end through the command line: after a demo-sized run with
live workload, one kill -9 of capture and one of a run in the middle, the warehouse agrees with
the source.

Everything is driven as a user would: `riverbed init`, `shop seed`, `capture --once`, then
`capture --follow`, `shop run` and `run --every 2` side by side; in the middle capture is
killed with SIGKILL and restarted, and so is `run --every` while one of its runs is appending
facts to the warehouse. After the workload the long-running commands are stopped with Ctrl-C,
`capture --once` and `run --once` drain what is left, and the warehouse is compared with the
source: every dimension's live current rows with the source table, every source order item,
return and order in the facts exactly once, and the run history tells what happened.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC
from decimal import Decimal
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.rows import dict_row

from conftest import CliResult, Database, run_cli

WORKLOAD_SECONDS = 25
SEED = ("--customers", "300", "--sellers", "30", "--products", "150", "--orders", "3000")
# a run is killed inside the state that appends the facts (one warehouse transaction per fact
# table, after the dimensions' merges), a moment after it began: a small part of the state's
# usual 0.1 s, or the wait may see every run of the workload leave it first
KILL_STATE = "facts"
KILL_AFTER_SECONDS = 0.03
CHILD_ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """One long-running `riverbed ...` process, its output in files (a pipe nobody reads
    would fill and block it), in a process group of its own so nothing it starts outlives it."""

    def __init__(self, name: str, args: list[str], logs: Path, cwd: Path):
        self.name = name
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "riverbed", *args],
                cwd=cwd,
                env=CHILD_ENV,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                # Ctrl-C must reach it as a terminal's would, even when this test itself runs in
                # a background job, which starts with SIGINT ignored: `run --every` relies on
                # Python's default handler and would inherit the ignore
                preexec_fn=default_sigint,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """kill -9, as a crash would: no handler runs, no file is closed cleanly."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, then wait for it to finish on its own."""
        if self.alive():
            os.killpg(self.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        text = f"--- {self.name} (pid {self.pid}, exit {self.proc.poll()}) stderr:\n"
        text += self.err.read_text()[-4000:]
        text += f"\n--- {self.name} stdout:\n" + self.out.read_text()[-2000:]
        return text


def wait_for(what: str, condition: Callable[[], Any], timeout: float, children: list[Child]) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with the children's
    output if it does not within ``timeout`` seconds, or if a child died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        dead = [c for c in children if not c.alive()]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(c.name for c in dead)} exited" if dead else "timed out"
            pytest.fail(f"waiting for {what}: {reason}\n" + "\n".join(c.output() for c in dead))
        time.sleep(0.02)


class StateStore:
    """Read-only look into the project's SQLite state store (runs, run_events, lake_files) for
    the conditions the test waits on, polled faster than the CLI starts; the assertions go
    through the CLI, but for quarantined rows over all batches, which no command prints."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        try:
            uri = f"file:{self.path}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # a table not created yet, or a busy moment
            return []

    def stream_files(self) -> int:
        found = self.rows("select count(*) from lake_files where stage = 'raw' and full_load = 0")
        return int(found[0][0]) if found else 0

    def running_run(self, pid: int) -> str | None:
        running = self.rows("select run_id from runs where status = 'running' and pid = ?", (pid,))
        return running[0][0] if running else None

    def open_states(self, run_id: str) -> set[str]:
        """The states ``run_id`` has entered and not left (per its history)."""
        inside: set[str] = set()
        for state, event in self.rows(
            "select state, event from run_events where run_id = ? order by seq", (run_id,)
        ):
            if event == "entered":
                inside.add(state)
            elif event in ("succeeded", "failed", "caught"):
                inside.discard(state)
        return inside

    def runs_of(self, pid: int, status: str) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "select run_id from runs where pid = ? and status = ?", (pid, status)
            )
        ]

    def idle(self) -> bool:
        """No run is active, and the last one ended less than a second ago: a `run --every 2`
        is in the first half of its pause, the safe moment for Ctrl-C."""
        if self.rows("select 1 from runs where status = 'running'"):
            return False
        last = self.rows("select max(ended_at) from runs")
        return bool(last and last[0][0] and time.time() - last[0][0] < 1.0)


def cli(config: Path, *args: str, timeout: float = 300) -> CliResult:
    result = run_cli(*args, "-c", str(config), timeout=timeout)
    assert result.code == 0, f"riverbed {' '.join(args)} exited {result.code}:\n{result.text}"
    return result


def query(config: Path, sql: str) -> list[dict[str, Any]]:
    result = cli(config, "query", "--as", "admin", "--format", "json", sql)
    return json.loads(result.out)  # type: ignore[no-any-return]


def text(value: Any) -> str | None:
    """One comparable form for source values (psycopg) and warehouse values (JSON):
    Decimal('70.88') and "70.88", True and true, 6 and 6."""
    return None if value is None else str(value)


@pytest.fixture(params=["duckdb", "postgres"])
def project(database: Database, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """demo_project on the test database: the DuckDB default warehouse, or a PostgreSQL
    database of its own on the same server."""
    warehouse: Database | None = None
    if request.param == "postgres":
        warehouse = request.getfixturevalue("warehouse_database")
    return demo_project(tmp_path / "proj", database, warehouse)


def demo_project(folder: Path, database: Database, warehouse: Database | None = None) -> Path:
    """The demo config from `riverbed init` in ``folder``, pointed at ``database``, with its
    own slot and publication, the lake and state under folder/.riverbed (the defaults), the
    warehouse the DuckDB default or ``warehouse`` (PostgreSQL), and raw files closed every 2 s
    instead of 60 so that runs find work while traffic flows."""
    assert run_cli("init", str(folder)).code == 0
    path = folder / "riverbed.yaml"
    config = yaml.safe_load(path.read_text())
    suffix = uuid.uuid4().hex[:8]
    config["source"]["dsn"] = database.dsn
    config["source"]["slot"] = f"e2e_{suffix}"
    config["source"]["publication"] = f"e2e_{suffix}"
    config["lake"]["max_seconds"] = 2
    if warehouse is not None:
        config["warehouse"] = {"engine": "postgres", "dsn": warehouse.dsn}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Every long-running process the test starts; whatever is still alive at the end is
    killed, and their output is printed (pytest shows it when the test fails)."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            if child.alive():
                child.kill9()
        for child in started:
            print(child.output())


def test_warehouse_agrees_with_source_after_kills_mid_flight(
    database: Database, project: Path, tmp_path: Path, children: list[Child]
) -> None:
    config = str(project)
    home = project.parent / ".riverbed"
    state = StateStore(home / "state.db")
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, *args: str) -> Child:
        child = Child(name, [*args, "-c", config], logs, project.parent)
        children.append(child)
        return child

    # 1. history and the snapshot
    cli(project, "shop", "seed", *SEED, "--months", "2", "--seed", "7", "-q")
    cli(project, "capture", "--once", "-q")

    # 2. live traffic, captured and run as it happens
    capture = start("capture-1", "capture", "--follow")
    runner = start("run-every-1", "run", "--every", "2")
    workload = start(
        "shop-run",
        "shop",
        "run",
        "--rate",
        "300",
        "--duration",
        str(WORKLOAD_SECONDS),
        "--dirty-ratio",
        "0",
        "--large-every",
        "1000",
        "--seed",
        "3",
        "--json",
        "-q",
    )

    # 3a. kill -9 capture once changes have streamed into the lake, and start it again
    wait_for("a streamed raw file", lambda: state.stream_files() >= 2, 60, [capture, workload])
    capture.kill9()
    capture = start("capture-2", "capture", "--follow")

    # 3b. kill -9 `run --every` while one of its runs is appending facts; start it again: its
    # first run takes the dead run's lock over
    def inside_the_kill_state() -> str | None:
        run_id = state.running_run(runner.pid)
        if run_id is None or KILL_STATE not in state.open_states(run_id):
            return None
        time.sleep(KILL_AFTER_SECONDS)  # into the state's work, not at its first statement
        return run_id if KILL_STATE in state.open_states(run_id) else None

    killed_run = wait_for(
        f"a run inside its {KILL_STATE} state",
        inside_the_kill_state,
        90,
        [runner, capture, workload],
    )
    runner.kill9()
    killed_pid = runner.pid
    killed_in = state.open_states(killed_run)  # what its history says it was doing when it died
    runner = start("run-every-2", "run", "--every", "2")
    wait_for(
        "a run of the restarted `run --every` to succeed",
        lambda: state.runs_of(runner.pid, "succeeded"),
        120,
        [runner, capture],
    )

    # 4. the traffic ends; stop the followers as a user would, then drain everything
    assert workload.proc.wait(timeout=WORKLOAD_SECONDS + 120) == 0, workload.output()
    traffic = json.loads(workload.out.read_text())
    assert traffic["total_changes"] > 1_000 and not traffic["dirty"], traffic
    wait_for("a pause between runs", state.idle, 120, [runner])
    assert runner.interrupt() == 0, runner.output()
    assert capture.interrupt() == 0, capture.output()
    assert "resuming slot" in capture.err.read_text(), capture.output()
    cli(project, "capture", "--once", "-q")
    drained = json.loads(cli(project, "run", "--once", "--json").out)
    assert drained["status"] == "succeeded", drained
    again = json.loads(cli(project, "run", "--once", "--json").out)
    assert again["status"] == "succeeded" and again["variables"].get("new_data") == 0, again

    # 5. the run history: the killed run was aborted by the lock takeover, the rest succeeded
    runs = json.loads(cli(project, "runs", "--json", "--limit", "10000").out)
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[killed_run]["pid"] == killed_pid
    assert by_id[killed_run]["status"] == "aborted", by_id[killed_run]
    assert "taken over" in (by_id[killed_run]["error"] or ""), by_id[killed_run]
    others = {r["run_id"]: r["status"] for r in runs if r["run_id"] != killed_run}
    assert set(others.values()) == {"succeeded"}, others
    assert cli(project, "status").code == 0
    quarantined = state.rows("select coalesce(sum(rows_quarantined), 0) from transform_batches")
    assert quarantined == [(0,)], "clean traffic, yet rows were quarantined"

    rows = source_rows(database)
    check_dimensions(project, rows, pii_key=(home / "pii.key").read_text().strip().encode())
    check_facts(project, rows)
    check_revenue_by_month(project, rows)

    print(
        f"killed capture once; killed run {killed_run} (pid {killed_pid}) inside "
        f"{sorted(killed_in)}; {traffic['total_changes']:,} changes of traffic; "
        f"{len(runs)} runs: {Counter(r['status'] for r in runs)}"
    )


def source_rows(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of the shop's tables, read in one snapshot."""
    with database.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("set transaction isolation level repeatable read")
        tables = ("customers", "sellers", "products", "orders", "order_items", "returns")
        return {t: cur.execute(f"select * from shop.{t}").fetchall() for t in tables}


def check_dimensions(project: Path, rows: dict[str, list[dict[str, Any]]], pii_key: bytes) -> None:
    """Each dimension's current, live rows are the source table's rows, key by key, with the
    config's transforms applied: same keys, same values, one current row per key."""

    def hashed(value: str | None) -> str | None:
        # pii: {email: hash} is HMAC-SHA256 with the project's key (.riverbed/pii.key when
        # governance.pii_key is unset); full_name (mask) and phone (redact) are kept in the
        # warehouse and only masked at query time, and admin reads them unmasked
        return None if value is None else hmac.new(pii_key, value.encode(), sha256).hexdigest()

    def upper_trim(value: str | None) -> str | None:  # transforms: {country: upper(trim(...))}
        return None if value is None else value.strip(" ").upper()

    dimensions: dict[str, tuple[str, str, list[str], dict[str, Callable[[Any], Any]]]] = {
        # target: (source, natural key, compared columns, source-side transform per column)
        "dim_customer": (
            "customers",
            "customer_id",
            ["email", "full_name", "phone", "city", "country", "region"],
            {"email": hashed, "country": upper_trim},
        ),
        "dim_seller": ("sellers", "seller_id", ["name", "city", "country", "region"], {}),
        # tracked columns, and description: type1, overwritten in place (and TOAST-sized)
        "dim_product": (
            "products",
            "product_id",
            ["name", "category", "price", "seller_id", "is_active", "description"],
            {},
        ),
    }
    for target, (table, natural, compared, transform) in dimensions.items():
        listed = ", ".join([natural, *compared])
        current = query(
            project, f"select {listed}, is_deleted from {target} where is_current_record"
        )
        per_key = Counter(r[natural] for r in current)
        doubled = sorted(k for k, n in per_key.items() if n > 1)
        assert not doubled, f"{target}: keys with more than one current row: {doubled[:20]}"
        warehouse = {
            r[natural]: tuple(text(r[c]) for c in compared) for r in current if not r["is_deleted"]
        }
        expected = {
            r[natural]: tuple(text(transform.get(c, lambda v: v)(r[c])) for c in compared)
            for r in rows[table]
        }
        missing = sorted(expected.keys() - warehouse.keys())
        extra = sorted(warehouse.keys() - expected.keys())
        assert not missing and not extra, f"{target}: missing keys {missing}, extra keys {extra}"
        differ = {
            k: {c: (e, w) for c, e, w in zip(compared, expected[k], warehouse[k]) if e != w}
            for k in expected
            if expected[k] != warehouse[k]
        }
        assert not differ, (
            f"{target}: {len(differ)} keys differ, (source, warehouse) per column: "
            f"{dict(list(differ.items())[:5])}"
        )


def check_facts(project: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    """No source position twice in any fact; each source row's insert (or snapshot) event
    exactly once; a delete event for every row gone from the source and none for a live one;
    and the latest event of each live key (by source position) carries the source's values."""
    facts = {
        # target: (source, natural key, columns the latest event must match)
        "fact_order_items": (
            "order_items",
            "order_item_id",
            ["order_id", "product_id", "seller_id", "quantity", "unit_price"],
        ),
        "fact_returns": ("returns", "return_id", ["order_item_id", "status", "refund_amount"]),
        "fact_order_status": ("orders", "order_id", ["customer_id", "status"]),
    }
    for target, (table, natural, compared) in facts.items():
        twice = query(
            project,
            f"select _lsn, _seq, count(*) as n from {target} group by _lsn, _seq having count(*) > 1",
        )
        assert not twice, f"{target}: source positions loaded twice: {twice[:5]}"
        events = query(
            project,
            f"select {natural}, {', '.join(compared)}, _op, _lsn, _seq from {target}"
            " order by _lsn, _seq",
        )
        ops = Counter(e["_op"] for e in events)
        assert set(ops) <= {"L", "I", "U", "D"}, ops
        # snapshot rows carry _op 'L' (capture.include_op_for_full_load: false), inserts 'I'
        inserts = Counter(e[natural] for e in events if e["_op"] in ("L", "I"))
        deletes = {e[natural] for e in events if e["_op"] == "D"}
        in_source = {r[natural] for r in rows[table]}
        doubled = sorted(k for k, n in inserts.items() if n > 1)
        assert not doubled, f"{target}: keys inserted more than once: {doubled[:20]}"
        not_loaded = sorted(in_source - inserts.keys())
        assert not not_loaded, f"{target}: source rows without an insert event: {not_loaded[:20]}"
        revived = sorted(deletes & in_source)
        assert not revived, f"{target}: live source rows with a delete event: {revived[:20]}"
        gone = sorted(inserts.keys() - in_source - deletes)
        assert not gone, f"{target}: rows gone from the source without a delete event: {gone}"
        latest = {e[natural]: e for e in events}  # in source order: the last one wins
        stale = {}
        for r in rows[table]:
            want = tuple(text(r[c]) for c in compared)
            event = latest[r[natural]]
            found = tuple(text(event[c]) for c in compared)
            if found != want:
                stale[r[natural]] = (want, found, event["_op"])
        assert not stale, (
            f"{target}: {len(stale)} keys whose latest event is not the source's current row, "
            f"(source, latest event, its _op): {dict(list(stale.items())[:5])}"
        )


REVENUE_BY_MONTH = """
select d.year, d.month, sum(f.amount) as revenue
from fact_order_items_current f join dim_date d using (date_key)
group by d.year, d.month order by d.year, d.month
"""


def check_revenue_by_month(project: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Revenue by month of ordered_at, as a dashboard asks for it: one plain query over the
    current view and dim_date (event_time dates each item by its order's time), equal to the
    source's items summed by their order's UTC month."""
    ordered_at = {r["order_id"]: r["ordered_at"] for r in rows["orders"]}
    expected: Counter[tuple[int, int]] = Counter()
    for item in rows["order_items"]:
        at = ordered_at[item["order_id"]].astimezone(UTC)
        expected[at.year, at.month] += item["quantity"] * item["unit_price"]
    got = {
        (r["year"], r["month"]): Decimal(str(r["revenue"]))
        for r in query(project, REVENUE_BY_MONTH)
    }
    assert len(expected) > 1, "the seeded history spans months"
    assert got == dict(expected), f"revenue by month: source {expected}, warehouse {got}"
