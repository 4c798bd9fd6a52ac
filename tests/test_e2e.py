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

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import (
    CHILD_ENV,
    Child,
    check_dimensions,
    check_facts,
    cli,
    demo_project,
    query,
    source_rows,
    wait_for,
)

from conftest import Database

# re-exported for the test modules that import them from here
__all__ = [
    "CHILD_ENV",
    "SEED",
    "Child",
    "StateStore",
    "children",
    "cli",
    "demo_project",
    "wait_for",
]

WORKLOAD_SECONDS = 25
SEED = ("--customers", "300", "--sellers", "30", "--products", "150", "--orders", "3000")
# a run is killed inside the state that appends the facts (one warehouse transaction per fact
# table, after the dimensions' merges), a moment after it began: a small part of the state's
# usual 0.1 s, or the wait may see every run of the workload leave it first
KILL_STATE = "facts"
KILL_AFTER_SECONDS = 0.03


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


@pytest.fixture(params=["duckdb", "postgres"])
def project(database: Database, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """demo_project on the test database: the DuckDB default warehouse, or a PostgreSQL
    database of its own on the same server."""
    warehouse: Database | None = None
    if request.param == "postgres":
        warehouse = request.getfixturevalue("warehouse_database")
    return demo_project(tmp_path / "proj", database, warehouse)


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
