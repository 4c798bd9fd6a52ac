"""The state store's contract for the run history and the alarms (riverbed.state.store.RunState
and AlarmState): every implementation runs these, through the protocol alone."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from riverbed.state.records import AlarmStatus, AlarmTransition
from riverbed.state.store import StateStore

T0 = 1_700_000_000.0


def start(store: StateStore, run_id: str, at: float, trigger: str = "once") -> None:
    store.runs.start(run_id, trigger, started_at=at, pid=4242, host="box")


def succeed(store: StateStore, run_id: str, at: float, new_data: int | None) -> None:
    """The run's check reported ``new_data`` (none at all when None), and the run succeeded."""
    output: dict[str, Any] = {} if new_data is None else {"new_data": new_data}
    store.runs.add_event(run_id, "check", "succeeded", ts=at, detail={"output": output})
    store.runs.finish(run_id, "succeeded", ended_at=at + 1)


# --- runs ------------------------------------------------------------------------------------


def test_a_run_is_started_finished_and_reopened(state_store: StateStore) -> None:
    runs = state_store.runs
    assert runs.run("r1") is None
    start(state_store, "r1", T0, trigger="every")
    run = runs.run("r1")
    assert run is not None
    assert (run.run_id, run.status, run.trigger, run.started_at) == ("r1", "running", "every", T0)
    assert (run.ended_at, run.failed_state, run.error, run.redrives) == (None, None, None, 0)
    assert (run.pid, run.host, run.idle) == (4242, "box", False)

    runs.finish("r1", "failed", ended_at=T0 + 5, failed_state="load", error="boom")
    run = runs.run("r1")
    assert run is not None
    assert (run.status, run.ended_at, run.failed_state, run.error) == (
        "failed",
        T0 + 5,
        "load",
        "boom",
    )

    runs.reopen("r1", pid=99, host="other")
    run = runs.run("r1")
    assert run is not None
    assert (run.status, run.ended_at, run.failed_state, run.error) == (
        "running",
        None,
        None,
        None,
    )
    assert (run.redrives, run.pid, run.host, run.started_at) == (1, 99, "other", T0)
    runs.reopen("r1", pid=100, host="other")
    assert runs.run("r1").redrives == 2  # type: ignore[union-attr]


def test_events_are_numbered_in_order_per_run_and_keep_their_detail(
    state_store: StateStore,
) -> None:
    runs = state_store.runs
    start(state_store, "a", T0)
    start(state_store, "b", T0 + 1)
    runs.add_event("a", "check", "entered", ts=T0)
    runs.add_event("b", "check", "entered", ts=T0 + 1)
    runs.add_event(
        "a",
        "load",
        "failed",
        ts=T0 + 2,
        attempt=2,
        error_class="transient",
        error="connection reset",
        detail={"delay": 1.5, "output": {"rows": 3, "tables": ["x"]}},
    )
    events = runs.events("a")
    assert [(e.seq, e.state, e.event) for e in events] == [
        (1, "check", "entered"),
        (2, "load", "failed"),
    ]
    first, failed = events
    assert (first.attempt, first.error_class, first.error, first.detail) == (None, None, None, {})
    assert (failed.run_id, failed.ts, failed.attempt) == ("a", T0 + 2, 2)
    assert (failed.error_class, failed.error) == ("transient", "connection reset")
    assert failed.detail == {"delay": 1.5, "output": {"rows": 3, "tables": ["x"]}}
    assert [e.seq for e in runs.events("b")] == [1]
    assert runs.events("nope") == []


def test_a_detail_value_json_cannot_hold_is_kept_as_text(state_store: StateStore) -> None:
    start(state_store, "a", T0)
    state_store.runs.add_event("a", "-", "redrive", ts=T0, detail={"at": T0, "odd": {1, 2} - {1}})
    [event] = state_store.runs.events("a")
    assert event.detail == {"at": T0, "odd": "{2}"}


def test_a_run_that_succeeded_finding_nothing_new_is_idle(state_store: StateStore) -> None:
    runs = state_store.runs
    for n, (run_id, new_data) in enumerate([("busy", 3), ("idle", 0), ("quiet", None)]):
        start(state_store, run_id, T0 + 10 * n)
        succeed(state_store, run_id, T0 + 10 * n, new_data)
    start(state_store, "failed", T0 + 40)
    state_store.runs.add_event(
        "failed", "check", "succeeded", ts=T0, detail={"output": {"new_data": 0}}
    )
    runs.finish("failed", "failed", ended_at=T0 + 41)
    # the LAST new_data counts: a run whose later check found something is not idle
    start(state_store, "later", T0 + 50)
    runs.add_event("later", "check", "succeeded", ts=T0, detail={"output": {"new_data": 0}})
    succeed(state_store, "later", T0 + 51, 2)

    idle = {r.run_id: r.idle for r in runs.latest(10)}
    assert idle == {"busy": False, "idle": True, "quiet": False, "failed": False, "later": False}
    assert [r.run_id for r in runs.latest(10, idle=False)] == ["later", "failed", "quiet", "busy"]
    assert runs.idle_count() == 1
    assert runs.idle_count(since=T0 + 10) == 1
    assert runs.idle_count(since=T0 + 11) == 0


def test_latest_runs_are_newest_first_up_to_the_limit(state_store: StateStore) -> None:
    for n in range(5):
        start(state_store, f"r{n}", T0 + n)
    assert [r.run_id for r in state_store.runs.latest(3)] == ["r4", "r3", "r2"]
    assert len(state_store.runs.latest()) == 5


def test_running_runs_are_oldest_first(state_store: StateStore) -> None:
    start(state_store, "late", T0 + 2)
    start(state_store, "early", T0)
    start(state_store, "done", T0 + 1)
    state_store.runs.finish("done", "succeeded", ended_at=T0 + 3)
    assert [r.run_id for r in state_store.runs.running()] == ["early", "late"]


def test_runs_are_found_by_the_start_or_end_of_their_id(state_store: StateStore) -> None:
    start(state_store, "20260101T000000Z-abc123", T0)
    start(state_store, "20260102T000000Z-def456", T0 + 1)
    start(state_store, "x_y%z", T0 + 2)
    runs = state_store.runs
    assert [r.run_id for r in runs.with_id_part("abc123")] == ["20260101T000000Z-abc123"]
    assert [r.run_id for r in runs.with_id_part("2026")] == [
        "20260101T000000Z-abc123",
        "20260102T000000Z-def456",
    ]
    assert runs.with_id_part("000000Z") == []  # in the middle: neither start nor end
    # % and _ are characters of the id, not wildcards
    assert [r.run_id for r in runs.with_id_part("x_y")] == ["x_y%z"]
    assert runs.with_id_part("_") == []
    assert [r.run_id for r in runs.with_id_part("%z")] == ["x_y%z"]
    assert runs.with_id_part("%") == []


def test_the_last_success_and_the_first_start(state_store: StateStore) -> None:
    runs = state_store.runs
    assert (runs.last_success(), runs.first_started()) == (None, None)
    start(state_store, "old", T0)
    runs.finish("old", "failed", ended_at=T0 + 100)
    assert (runs.last_success(), runs.first_started()) == (None, T0)
    start(state_store, "a", T0 + 10)
    runs.finish("a", "succeeded", ended_at=T0 + 20)
    start(state_store, "b", T0 + 30)
    runs.finish("b", "succeeded", ended_at=T0 + 40)
    assert runs.last_success() == T0 + 40
    # a redriven run that succeeds last ended last, though it started first
    runs.reopen("old", pid=1, host="box")
    runs.finish("old", "succeeded", ended_at=T0 + 50)
    assert (runs.last_success(), runs.first_started()) == (T0 + 50, T0)


def test_writes_in_a_failed_transaction_are_not_kept(state_store: StateStore) -> None:
    start(state_store, "kept", T0)
    with pytest.raises(RuntimeError), state_store.transaction():
        start(state_store, "lost", T0 + 1)
        state_store.runs.add_event("kept", "check", "entered", ts=T0)
        state_store.alarms.save(status("a", "ALARM", T0))
        raise RuntimeError
    assert [r.run_id for r in state_store.runs.latest()] == ["kept"]
    assert state_store.runs.events("kept") == []
    assert state_store.alarms.states() == []


# --- alarms ----------------------------------------------------------------------------------


def status(alarm: str, state: Any, at: float, reason: str = "why", value: float | None = 1.0):
    return AlarmStatus(alarm=alarm, state=state, since=at, reason=reason, value=value)


def test_alarm_states_are_by_name_and_since_moves_only_on_a_change(
    state_store: StateStore,
) -> None:
    alarms = state_store.alarms
    assert alarms.states() == []
    alarms.save(status("b", "OK", T0))
    alarms.save(status("a", "ALARM", T0, value=None))
    assert alarms.states() == [status("a", "ALARM", T0, value=None), status("b", "OK", T0)]

    alarms.save(status("b", "OK", T0 + 60, reason="still fine", value=2.0))
    [_, b] = alarms.states()
    assert (b.state, b.since, b.reason, b.value) == ("OK", T0, "still fine", 2.0)
    alarms.save(status("b", "ALARM", T0 + 120, reason="too high", value=9.0))
    [_, b] = alarms.states()
    assert (b.state, b.since, b.reason, b.value) == ("ALARM", T0 + 120, "too high", 9.0)


def transition(alarm: str, old: Any, new: Any, ts: float) -> AlarmTransition:
    return AlarmTransition(
        alarm=alarm, old_state=old, new_state=new, reason=f"{old}->{new}", value=None, ts=ts
    )


def test_alarm_history_is_newest_first_per_alarm_and_limited(state_store: StateStore) -> None:
    alarms = state_store.alarms
    assert alarms.history() == []
    changes = [
        transition("a", "INSUFFICIENT_DATA", "OK", T0),
        transition("b", "INSUFFICIENT_DATA", "ALARM", T0),
        transition("a", "OK", "ALARM", T0 + 60),
        transition("a", "ALARM", "OK", T0 + 60),  # same time: the later one is newer
    ]
    for change in changes:
        alarms.add_transition(change)
    assert alarms.history() == [changes[3], changes[2], changes[1], changes[0]]
    assert alarms.history("a") == [changes[3], changes[2], changes[0]]
    assert alarms.history("a", limit=1) == [changes[3]]
    assert alarms.history("nope") == []


def test_two_evaluations_at_once_record_one_change(state_store: StateStore) -> None:
    """Read and write inside one transaction: the second evaluation sees the first's state."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            with state_store.transaction():
                current = {s.alarm: s.state for s in state_store.alarms.states()}
                old = current.get("a", "INSUFFICIENT_DATA")
                state_store.alarms.save(status("a", "ALARM", T0))
                if old != "ALARM":
                    state_store.alarms.add_transition(transition("a", old, "ALARM", T0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert [(t.old_state, t.new_state) for t in state_store.alarms.history()] == [
        ("INSUFFICIENT_DATA", "ALARM")
    ]
