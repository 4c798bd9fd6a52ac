"""`riverbed run --follow` (issue 20 §3, freshness in seconds), through the command line:
beside `capture --follow`, a change committed at the source reaches the facts in seconds, with
no schedule to wait out; a kill -9 of the follower inside a run, then a restart, leaves the
warehouse exactly the source; SIGTERM stops it with exit 0 and one line; options it cannot go
with are refused with one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from test_e2e import (
    SEED,
    Child,
    StateStore,
    check_dimensions,
    check_facts,
    cli,
    demo_project,
    query,
    source_rows,
    wait_for,
)

from conftest import Database, run_cli
from riverbed.config.loader import load_project
from riverbed.orchestrate.follow import Follower
from riverbed.orchestrate.runner import RunReport
from riverbed.state import LakeFile, open_state

FLUSH_SECONDS = 0.5  # lake.max_seconds: raw files closed at this cadence, as for freshness
FRESH_WITHIN = 15.0  # seconds from a commit to its fact row, on a loaded 2-core machine


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--follow", "--every", "5"], "choose one of --once, --every SECONDS, --follow"),
        (["--follow", "--redrive", "X"], "choose one of --once, --every SECONDS, --follow"),
        (["--follow", "--once"], "choose one of --once, --every SECONDS, --follow"),
        (["--follow", "--stage", "load"], "it goes without --every/--follow/--redrive"),
        (["--follow", "--table", "orders"], "--follow runs every table"),
    ],
)
def test_options_follow_cannot_go_with_are_refused_in_one_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    result = run_cli("run", *args, "-c", str(tmp_path / "none.yaml"))
    assert result.code == 2, result.text
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.text
    assert "Traceback" not in result.text


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            if child.alive():
                child.kill9()
        for child in started:
            print(child.output())


def follow_project(folder: Path, database: Database) -> Path:
    """demo_project with raw files closed every FLUSH_SECONDS."""
    path = demo_project(folder, database)
    config = yaml.safe_load(path.read_text())
    config["lake"]["max_seconds"] = FLUSH_SECONDS
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def commit_order_item(database: Database) -> tuple[int, float]:
    """One order with one item, as a shop would; (its order_item_id, time after COMMIT)."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        with conn.transaction():
            customer, product, seller, price = conn.execute(
                "select (select min(customer_id) from shop.customers), product_id, seller_id,"
                " price from shop.products order by product_id limit 1"
            ).fetchone()  # type: ignore[misc]
            (order_id,) = conn.execute(
                "insert into shop.orders (customer_id, status, ordered_at, updated_at)"
                " values (%s, 'placed', now(), now()) returning order_id",
                (customer,),
            ).fetchone()  # type: ignore[misc]
            (item_id,) = conn.execute(
                "insert into shop.order_items (order_id, product_id, seller_id, quantity,"
                " unit_price, created_at) values (%s, %s, %s, 1, %s, now())"
                " returning order_item_id",
                (order_id, product, seller, price),
            ).fetchone()  # type: ignore[misc]
        return int(item_id), time.time()


def loaded_after(state: StateStore, pid: int, since: float) -> bool:
    """A run of ``pid`` that started after ``since`` succeeded having loaded something."""
    rows = state.rows(
        "select count(*) from runs where pid = ? and status = 'succeeded' and started_at > ?",
        (pid, since),
    )
    return bool(rows and rows[0][0])


def test_follow_runs_as_capture_publishes_and_is_exact_after_a_kill(
    database: Database, tmp_path: Path, children: list[Child]
) -> None:
    project = follow_project(tmp_path / "proj", database)
    config = str(project)
    state = StateStore(project.parent / ".riverbed" / "state.db")
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, *args: str) -> Child:
        child = Child(name, [*args, "-c", config], logs, project.parent)
        children.append(child)
        return child

    cli(project, "shop", "seed", *SEED, "--months", "2", "--seed", "7", "-q")
    cli(project, "capture", "--once", "-q")
    capture = start("capture", "capture", "--follow")
    follower = start("follow-1", "run", "--follow")
    # its first run (nothing captured yet but the snapshot) and a quiet moment after it
    wait_for("the first run", lambda: state.runs_of(follower.pid, "succeeded"), 120, [follower])

    # 1. a commit reaches the facts in seconds: the run that loads it starts when its raw file
    # is published, not at a tick of a schedule
    item, committed = commit_order_item(database)
    wait_for(
        "a run after the commit",
        lambda: loaded_after(state, follower.pid, committed),
        60,
        [follower, capture],
    )

    def in_facts() -> bool:
        return bool(query(project, f"select 1 from fact_order_items where order_item_id = {item}"))

    wait_for("the item in fact_order_items", in_facts, 60, [follower, capture])
    took = time.time() - committed
    assert took < FRESH_WITHIN, f"commit -> fact row took {took:.1f} s"
    triggers = {r[0] for r in state.rows("select trigger from runs where pid = ?", (follower.pid,))}
    assert triggers == {"follow"}, triggers

    # 2. traffic; kill -9 the follower inside a run's facts state, start it again
    workload = start(
        "shop-run", "shop", "run", "--rate", "300", "--duration", "15", "--dirty-ratio", "0",
        "--large-every", "1000", "--seed", "3", "--json", "-q",
    )  # fmt: skip

    def inside_facts() -> str | None:
        run_id = state.running_run(follower.pid)
        if run_id is None or "facts" not in state.open_states(run_id):
            return None
        time.sleep(0.03)
        return run_id if "facts" in state.open_states(run_id) else None

    killed = wait_for("a run inside facts", inside_facts, 90, [follower, capture, workload])
    follower.kill9()
    follower = start("follow-2", "run", "--follow")
    wait_for(
        "a run of the restarted follower",
        lambda: state.runs_of(follower.pid, "succeeded"),
        120,
        [follower, capture],
    )
    assert workload.proc.wait(timeout=120) == 0, workload.output()

    # 3. everything committed reaches the warehouse without anyone starting a run
    last, committed = commit_order_item(database)
    wait_for(
        "the last item in the facts",
        lambda: query(project, f"select 1 from fact_order_items where order_item_id = {last}"),
        120,
        [follower, capture],
    )

    # 4. SIGTERM between runs: exit 0, one line saying it stopped
    wait_for("a pause between runs", lambda: state.running_run(follower.pid) is None, 60, [])
    os.killpg(follower.pid, signal.SIGTERM)
    assert follower.proc.wait(timeout=60) == 0, follower.output()
    assert "stopped" in follower.out.read_text().splitlines()[-1], follower.output()
    assert capture.interrupt() == 0, capture.output()

    # 5. exact: the killed run aborted and taken over, every other run succeeded, and the
    # warehouse equals the source once the rest is drained (nothing doubled by the kill)
    cli(project, "capture", "--once", "-q")
    drained = json.loads(cli(project, "run", "--once", "--json").out)
    assert drained["status"] == "succeeded", drained
    runs = json.loads(cli(project, "runs", "--json", "--limit", "10000").out)
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[killed]["status"] == "aborted" and "taken over" in by_id[killed]["error"]
    assert {r["status"] for r in runs if r["run_id"] != killed} == {"succeeded"}
    rows = source_rows(database)
    pii_key = (project.parent / ".riverbed" / "pii.key").read_text().strip().encode()
    check_dimensions(project, rows, pii_key=pii_key)
    check_facts(project, rows)


# --- when the follower starts a run (no server: a project with its SQLite state only) ------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def raw_file(name: str) -> LakeFile:
    return LakeFile(
        path=f"raw/orders/{name}.parquet",
        stage="raw",
        table="orders",
        rows=1,
        bytes=10,
        min_lsn=1,
        max_lsn=2,
        schema_version=1,
    )


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[Follower, Any, Clock]]:
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        "lake: {path: lake}\nstate: {path: state.db}\n"
        "orchestration:\n  follow: {idle_run_seconds: 60, extract_every_seconds: 120}\n"
    )
    project = load_project(config)
    clock = Clock()
    store = open_state(project)
    following = Follower(project, clock=clock)
    try:
        yield following, store, clock
    finally:
        following.close()
        store.close()


def report(status: str) -> RunReport:
    return RunReport("r", status, 0.1)


def test_a_run_starts_when_a_raw_file_lands_and_not_before(follower: Any) -> None:
    following, store, clock = follower
    assert following.due()  # the first run: whatever is pending
    following.starting()
    assert following.finished(report("succeeded")) == 0
    clock.now += 5
    assert not following.due()
    store.capture.commit("s", [raw_file("a")], 10)
    assert following.due()
    following.starting()
    following.finished(report("succeeded"))
    assert not following.due()
    clock.now += 60  # the idle run
    assert following.due()


def test_failed_runs_back_off_and_their_work_is_taken_without_new_files(follower: Any) -> None:
    following, _store, _clock = follower
    waits = []
    for _ in range(8):
        following.starting()
        waits.append(following.finished(report("failed")))
        assert following.due()  # the failed run's work is pending, new files or not
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    following.starting()
    assert following.finished(report("succeeded")) == 0


def test_the_extract_is_refreshed_when_caught_up_or_when_it_is_due(follower: Any) -> None:
    following, store, clock = follower
    following.starting()
    assert following.extract_due()  # nothing landed during the run: caught up
    store.capture.commit("s", [raw_file("a")], 10)
    following.starting()
    clock.now += 1
    store.capture.commit("s", [raw_file("b")], 20)  # landed during the run
    assert not following.extract_due()
    clock.now += 120
    assert following.extract_due()
    assert not following.extract_due()  # refreshed just now, and files keep coming
