"""The state store's contract, for the lake's manifest, capture's positions and the metrics:
what the stages rely on, asserted through the protocol only (riverbed.state.store), so a second
implementation runs the same tests (conftest.STATE_STORES)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import reopen_store, store_place
from riverbed.config.source import SourceConfig
from riverbed.state import LakeFile, SchemaVersion, SnapshotDone


def raw(path: str, table: str = "orders", low: int = 10, high: int = 20, **kw: Any) -> LakeFile:
    return LakeFile(
        path=path,
        stage="raw",
        table=table,
        rows=5,
        bytes=100,
        min_lsn=low,
        max_lsn=high,
        schema_version=1,
        **kw,
    )


def test_files_are_visible_once_committed_in_lsn_order(state_store: Any) -> None:
    late, early = raw("raw/orders/b.parquet", low=30, high=40), raw("raw/orders/a.parquet")
    other = raw("raw/items/a.parquet", table="items")
    state_store.capture.commit("s", [late, early, other], 40)
    assert [f.path for f in state_store.lake.files("raw", "orders")] == [early.path, late.path]
    assert state_store.lake.files("raw", "orders")[0] == early  # every field read back
    assert len(state_store.lake.files("raw")) == 3
    assert state_store.lake.files("staged") == []
    assert state_store.lake.tables("raw") == ["items", "orders"]
    summary = state_store.lake.summary("raw")["orders"]
    assert (summary.files, summary.rows, summary.schema_version) == (2, 10, 1)


def test_a_failed_transaction_makes_nothing_visible(state_store: Any) -> None:
    with pytest.raises(RuntimeError), state_store.transaction():
        state_store.capture.commit("s", [raw("raw/orders/a.parquet")], 20)
        state_store.metrics.record({"capture_rows_total": 5.0})
        raise RuntimeError("crash before the commit")
    assert state_store.lake.files("raw") == []
    assert state_store.capture.position("s") is None
    assert state_store.metrics.totals() == []


def test_the_position_only_moves_forward(state_store: Any) -> None:
    state_store.capture.commit("s", [], 100)
    state_store.capture.commit("s", [], 50)  # a late, older confirmation
    assert state_store.capture.position("s") == 100
    assert state_store.capture.position("other") is None


def test_snapshots_and_schemas_are_recorded_with_their_files(state_store: Any) -> None:
    schema = SchemaVersion("orders", 1, [{"name": "id", "type_name": "int4", "key": True}], 10)
    state_store.capture.commit(
        "s", [raw("raw/orders/a.parquet")], None, [schema], [SnapshotDone("orders", 10, 5)]
    )
    state_store.capture.commit("s", [], None, [schema])  # a known version stays as it was
    assert state_store.lake.schema_versions("orders") == [schema]
    assert state_store.capture.snapshot_tables("s") == {"orders": 10}
    state_store.capture.forget_snapshots("s", ["orders"])
    assert state_store.capture.snapshot_tables("s") == {}


def test_the_ceiling_only_rises_and_the_identity_is_the_consistent_point(
    state_store: Any,
) -> None:
    capture = state_store.capture
    assert not capture.created_slot("s") and capture.ceiling("s") is None
    capture.creating_slot("s")
    assert capture.created_slot("s") and capture.slot_identity("s") is None
    capture.slot_created("s", 70)
    assert (capture.slot_identity("s"), capture.ceiling("s")) == (70, 70)
    capture.raise_ceiling("s", 90)
    capture.raise_ceiling("s", 80)
    assert capture.ceiling("s") == 90


def test_forgetting_a_slot_returns_its_files_and_keeps_other_slots(state_store: Any) -> None:
    capture = state_store.capture
    capture.creating_slot("old")
    capture.commit("old", [raw("raw/orders/a.parquet")], 20, [], [SnapshotDone("orders", 10, 5)])
    capture.commit("new", [raw("raw/orders/b.parquet", low=30, high=40)], 40)
    assert capture.known_slots() == ["new", "old"]
    assert capture.forget_slot("old") == ["raw/orders/a.parquet"]
    assert [f.path for f in state_store.lake.files("raw")] == ["raw/orders/b.parquet"]
    assert capture.position("old") is None and not capture.created_slot("old")
    assert capture.snapshot_tables("old") == {} and capture.known_slots() == ["new"]


def test_the_projects_capture_name_is_chosen_once(state_store: Any) -> None:
    source = SourceConfig()  # names no slot or publication
    assert state_store.capture.names(source) == (None, None)
    slot, publication = state_store.capture.names(source, create=True)
    assert slot == publication and slot is not None and slot.startswith("riverbed_")
    assert state_store.capture.names(source, create=True) == (slot, slot)
    named = SourceConfig(slot="mine", publication="pub")
    assert state_store.capture.names(named) == ("mine", "pub")


def test_a_project_captured_before_names_were_chosen_keeps_riverbed(state_store: Any) -> None:
    state_store.capture.commit("riverbed", [], 10)
    assert state_store.capture.names(SourceConfig(), create=True) == ("riverbed", "riverbed")


def test_removed_files_are_no_longer_visible(state_store: Any) -> None:
    state_store.capture.commit("s", [raw("raw/orders/a.parquet"), raw("raw/orders/b.parquet")], 20)
    state_store.lake.remove(["raw/orders/a.parquet"])
    assert [f.path for f in state_store.lake.files("raw")] == ["raw/orders/b.parquet"]


def test_metrics_read_back_by_name_labels_and_time(state_store: Any) -> None:
    metrics = state_store.metrics
    metrics.record({"load_rows": 3.0}, {"table": "a"}, ts=100.0)
    metrics.record({"load_rows": 4.0}, {"table": "b"}, ts=200.0)
    metrics.record({"capture_lag_seconds": 2.0}, ts=150.0)
    metrics.record({"capture_lag_seconds": 1.0}, ts=250.0)
    assert metrics.series("load_rows", since=0) == [(100.0, 3.0), (200.0, 4.0)]
    assert metrics.series("load_rows", since=0, labels={"table": "b"}) == [(200.0, 4.0)]
    assert metrics.series("load_rows", since=100.0, until=200.0) == [(100.0, 3.0)]
    assert metrics.newest("capture_") == {"capture_lag_seconds": (1.0, 250.0)}
    assert [(s.name, s.value) for s in metrics.latest("capture_lag")] == [
        ("capture_lag_seconds", 1.0)
    ]
    # a prefix is a prefix: "_" and "%" are not wildcards
    assert metrics.newest("capture%") == {} and metrics.newest("load_rowsX") == {}
    totals = {(s.name, s.labels["table"]): s.value for s in metrics.totals()}
    assert totals == {("load_rows", "a"): 3.0, ("load_rows", "b"): 4.0}


def test_pruning_keeps_a_counters_total_and_a_gauges_newest_reading(state_store: Any) -> None:
    metrics = state_store.metrics
    for ts in (10.0, 20.0, 30.0):
        metrics.record({"load_rows": 1.0, "capture_lag_seconds": ts}, ts=ts)
    assert metrics.prune(older_than=50, now=100.0) == 4  # 3 increments -> 1; 2 old readings
    assert [(s.name, s.value) for s in metrics.totals()] == [("load_rows", 3.0)]
    assert metrics.newest("capture_lag") == {"capture_lag_seconds": (30.0, 30.0)}


def test_another_thread_never_reads_rows_that_are_not_committed(state_store: Any) -> None:
    """One store shared by threads (the snapshot's copy threads, the demo's runs beside its
    capture): a read must wait for a transaction in flight, not see rows it may roll back."""
    inside, seen = threading.Event(), []

    def reader() -> None:
        inside.wait(10)
        seen.append([f.path for f in state_store.lake.files("raw")])

    thread = threading.Thread(target=reader)
    thread.start()
    with pytest.raises(RuntimeError), state_store.transaction():
        state_store.capture.commit("s", [raw("raw/orders/a.parquet")], 20)
        inside.set()
        thread.join(0.5)  # the reader runs now, if nothing holds it back
        raise RuntimeError("rolled back")
    thread.join(10)
    assert seen == [[]]


# a process that opens the store at argv[2:] and commits a capture flush, killed (SIGKILL, as
# kill -9) at argv[1]: after the manifest rows are written inside the transaction, before the
# position is; or once the commit returned
KILLED_IN_COMMIT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from conftest import open_place
from riverbed.state import LakeFile
from riverbed.state.sql.lake_files import SQLLakeFiles

point, place = sys.argv[2], sys.argv[3:]
if point == "rows":
    add = SQLLakeFiles.add
    def add_then_die(self, files, slot=None):
        add(self, files, slot)
        os.kill(os.getpid(), signal.SIGKILL)
    SQLLakeFiles.add = add_then_die
store = open_place(*place)
file = LakeFile(
    path="raw/orders/a.parquet", stage="raw", table="orders", rows=5, bytes=100, min_lsn=10,
    max_lsn=20, schema_version=1,
)
store.capture.commit("s", [file], 20)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("point", ["rows", "committed"])
def test_a_kill_in_a_capture_commit_leaves_its_files_and_position_both_or_neither(
    state_store: Any, point: str
) -> None:
    """kill -9 of the process that commits a flush: the manifest rows and the position it
    wrote are both visible to the next process, or neither is."""
    tests = str(Path(__file__).parent)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_COMMIT, tests, point, *store_place(state_store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = reopen_store(state_store)
    try:
        files = [f.path for f in after.lake.files("raw")]
        position = after.capture.position("s")
        # the next commit of the same flush is not held back by a lock the dead one took
        after.capture.commit("s", [], 30)
    finally:
        after.close()
    expected = (["raw/orders/a.parquet"], 20) if point == "committed" else ([], None)
    assert (files, position) == expected


def test_the_newest_file_of_a_stage_is_its_latest_commit(state_store: Any) -> None:
    assert state_store.lake.newest("raw") is None
    state_store.capture.commit("s", [raw("raw/orders/a.parquet")], 20)
    first = state_store.lake.newest("raw")
    assert first is not None
    state_store.capture.commit("s", [], 30)  # a position alone is no new file
    assert state_store.lake.newest("raw") == first
    state_store.capture.commit("s", [raw("raw/items/b.parquet", table="items")], 40)
    assert state_store.lake.newest("raw") >= first
    assert state_store.lake.newest("staged") is None
