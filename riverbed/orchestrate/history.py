"""The run history as the orchestrator keeps it, and the lock that makes runs one at a time.

Every run is a record of the state store's run history (riverbed.state.store.RunState);
everything that happens in it is an event (state entered, attempt, retry scheduled,
succeeded, failed, caught, skipped on redrive), with its time, attempt, error and counts,
committed as it happens: a run killed with kill -9 leaves its history up to the last event,
and the next run marks it ``aborted``. This side mints the run ids, stamps what it records with
the time and this process, and finds the run a user names by a part of its id.

The lock is an advisory file lock (the kernel drops it when the holder dies, kill -9
included); the refusal names the active run from the history. A run still ``running`` whose
lock is free belonged to a dead process: the next run takes the lock over and marks that run
``aborted``, so it can be redriven.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Collection
from typing import Any

from riverbed.config.loader import Project
from riverbed.errors import RiverbedError
from riverbed.lake.lock import project_lock
from riverbed.state import StateStore
from riverbed.state.records import RunRecord

# the row counts the orchestrator's tasks report (orchestrate.tasks), summed per run
ROW_COUNTS = ("rows_in", "rows_staged", "rows_quarantined", "loaded_rows")


class RunHistory:
    """The orchestrator's writes to the run history, and runs named by part of their id.
    Thread-safe: the state store serialises its writes, so the branches of a Parallel state
    record through it."""

    def __init__(self, store: StateStore):
        self.runs = store.runs

    def start(self, trigger: str) -> str:
        run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        self.runs.start(
            run_id, trigger, started_at=time.time(), pid=os.getpid(), host=socket.gethostname()
        )
        return run_id

    def reopen(self, run_id: str) -> None:
        """A redrive: the failed run is running again, under the same id."""
        self.runs.reopen(run_id, pid=os.getpid(), host=socket.gethostname())

    def finish(
        self, run_id: str, status: str, failed_state: str | None = None, error: str | None = None
    ) -> None:
        self.runs.finish(
            run_id, status, ended_at=time.time(), failed_state=failed_state, error=error
        )

    def record(
        self,
        run_id: str,
        state: str,
        event: str,
        *,
        attempt: int | None = None,
        error_class: str | None = None,
        error: str | None = None,
        **detail: Any,
    ) -> None:
        self.runs.add_event(
            run_id,
            state,
            event,
            ts=time.time(),
            attempt=attempt,
            error_class=error_class,
            error=error,
            detail=detail,
        )

    # --- reading ------------------------------------------------------------------------------

    def matching(self, given: str) -> list[RunRecord]:
        """The run ``given`` names: by its whole id, else every run whose id starts or ends
        with it (the hex tail of an id is what people copy)."""
        exact = self.runs.run(given)
        if exact is not None or not given:
            return [exact] if exact else []
        return self.runs.with_id_part(given)

    def resolve(self, given: str) -> RunRecord:
        """The one run ``given`` names (see ``matching``), for `runs show` and `run
        --redrive`; none, or several, is an error that says what to give instead."""
        found = self.matching(given)
        if not found:
            raise RiverbedError(f"no run {given}; `riverbed runs` lists the runs")
        if len(found) > 1:
            ids = ", ".join(r.run_id for r in found[:5]) + (", ..." if len(found) > 5 else "")
            raise RiverbedError(f"{given} names {len(found)} runs ({ids}); give more of the id")
        return found[0]

    def short_id(self, run_id: str) -> str:
        """The hex tail of ``run_id`` when it names that run alone, else the whole id."""
        tail = run_id.rsplit("-", 1)[-1]
        found = self.matching(tail)
        return tail if len(found) == 1 and found[0].run_id == run_id else run_id

    def succeeded_outputs(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """State -> the outputs of its successes in ``run_id``, in order (a state in a loop
        succeeds once per visit; a redrive skips as many visits as succeeded)."""
        outputs: dict[str, list[dict[str, Any]]] = {}
        for e in self.runs.events(run_id):
            if e.event == "succeeded" and "output" in e.detail and not e.detail.get("handling"):
                outputs.setdefault(e.state, []).append(e.detail.get("output", {}))
        return outputs

    def row_counts(self, run_id: str, tasks: Collection[str]) -> dict[str, int]:
        """The rows ``run_id`` moved, summed over the successes of its ``tasks`` (the Task
        states, machine.task_states: a Parallel's output sums its branches', which would
        count them twice), under the names their outputs give them (what `riverbed runs show`
        prints): rows_in and rows_staged read and written by transform, rows_quarantined set
        aside by its rules, loaded_rows applied to the warehouse. 0 for a stage not reached."""
        counts = dict.fromkeys(ROW_COUNTS, 0)
        for state, outputs in self.succeeded_outputs(run_id).items():
            if state not in tasks:
                continue
            for output in outputs:
                for key in ROW_COUNTS:
                    counts[key] += int(output.get(key) or 0)
        return counts


class RunLock:
    """One `riverbed run` at a time per project (see the module docstring)."""

    def __init__(self, project: Project, history: RunHistory):
        def refusal(pid: str) -> str:
            active = history.runs.running()
            named = (
                f"run {active[-1].run_id} (pid {active[-1].pid}, started "
                f"{time.strftime('%H:%M:%S', time.localtime(active[-1].started_at))})"
                if active
                else f"another run (pid {pid})"
            )
            return (
                f"{named} is active for this project; wait for it to finish, see it with "
                "`riverbed runs`, or stop it (Ctrl-C or SIGTERM) before starting another"
            )

        self.lock = project_lock(project, "run", "riverbed run", refusal)
        # the lock is ours: any run still 'running' belonged to a process that died
        self.taken_over = history.runs.running()
        for stale in self.taken_over:
            history.record(
                stale.run_id,
                "-",
                "aborted",
                error=f"process {stale.pid} on {stale.host} died; its lock was taken over",
            )
            history.finish(
                stale.run_id,
                "aborted",
                error=f"process {stale.pid} died during the run (lock taken over)",
            )

    def release(self) -> None:
        self.lock.release()
