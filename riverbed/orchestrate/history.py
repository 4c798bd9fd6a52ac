"""Durable run history in the state store, and the lock that makes runs one at a time.

Every run is a row of ``runs``; everything that happens in it is a row of ``run_events``
(state entered, attempt, retry scheduled, succeeded, failed, caught, skipped on redrive), with
its time, attempt, error and counts, committed as it happens: a run killed with kill -9 leaves
its history up to the last event, and the next run marks it ``aborted``.

The lock is an advisory file lock (the kernel drops it when the holder dies, kill -9
included); the refusal names the active run from ``runs``. A run row still ``running`` whose
lock is free belonged to a dead process: the next run takes the lock over and marks that run
``aborted``, so it can be redriven.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riverbed.errors import RiverbedError
from riverbed.lake.lock import ProcessLock
from riverbed.state import StateStore


def process_gone(run: dict[str, Any]) -> bool:
    """A run the history still calls running whose process, on this machine, no longer
    exists (kill -9): it stays 'running' until the next run takes its lock over, so whoever
    shows it (`riverbed runs`, `riverbed status`) calls it died instead."""
    if run["status"] != "running" or run.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(run["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, TypeError, ValueError):
        return False  # alive under another user, or no pid to check
    return False


SCHEMA = """
create table if not exists runs (
  run_id        text primary key,
  status        text not null,      -- running | succeeded | failed | aborted
  trigger       text not null,      -- once | every | cron | demo | redrive
  started_at    real not null,
  ended_at      real,
  failed_state  text,
  error         text,
  redrives      integer not null default 0,
  pid           integer not null,
  host          text not null
);
create table if not exists run_events (
  run_id       text not null,
  seq          integer not null,
  ts           real not null,
  state        text not null,
  event        text not null,
  attempt      integer,
  error_class  text,
  error        text,
  detail       text not null,       -- JSON: counts, delay, output
  primary key (run_id, seq)
);
create index if not exists runs_by_start on runs (started_at);
"""

# A run is idle when it succeeded having found nothing to do: the last ``new_data`` a task
# reported (the default machine's ``check``) was 0. `run --every` makes one per interval.
IDLE = (
    "(status = 'succeeded' and coalesce((select json_extract(e.detail, '$.output.new_data') "
    "from run_events e where e.run_id = runs.run_id and e.event in ('succeeded', 'skipped') "
    "and json_extract(e.detail, '$.output.new_data') is not null order by e.seq desc limit 1), "
    "1) = 0)"
)


@dataclass(frozen=True)
class Event:
    run_id: str
    seq: int
    ts: float
    state: str
    event: str
    attempt: int | None
    error_class: str | None
    error: str | None
    detail: dict[str, Any]


class RunHistory:
    """The ``runs`` and ``run_events`` tables of one state store. Thread-safe: the StateStore
    serialises its connection, so the branches of a Parallel state record through it."""

    def __init__(self, manifest: StateStore):
        self.db = manifest
        manifest.ensure_schema(SCHEMA)

    def start(self, trigger: str) -> str:
        run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        with self.db.transaction() as tx:
            tx.execute(
                "insert into runs (run_id, status, trigger, started_at, pid, host) "
                "values (?, 'running', ?, ?, ?, ?)",
                (run_id, trigger, time.time(), os.getpid(), socket.gethostname()),
            )
        return run_id

    def reopen(self, run_id: str) -> None:
        """A redrive: the failed run is running again, under the same id."""
        with self.db.transaction() as tx:
            tx.execute(
                "update runs set status = 'running', ended_at = null, error = null, "
                "failed_state = null, redrives = redrives + 1, pid = ?, host = ? where run_id = ?",
                (os.getpid(), socket.gethostname(), run_id),
            )

    def finish(
        self, run_id: str, status: str, failed_state: str | None = None, error: str | None = None
    ) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "update runs set status = ?, ended_at = ?, failed_state = ?, error = ? "
                "where run_id = ?",
                (status, time.time(), failed_state, error, run_id),
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
        with self.db.transaction() as tx:
            (seq,) = tx.execute(
                "select coalesce(max(seq), 0) + 1 from run_events where run_id = ?", (run_id,)
            ).fetchone()
            tx.execute(
                "insert into run_events values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    time.time(),
                    state,
                    event,
                    attempt,
                    error_class,
                    error,
                    json.dumps(detail, default=str),
                ),
            )

    # --- reading ------------------------------------------------------------------------------

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._runs("where run_id = ?", (run_id,))
        return rows[0] if rows else None

    def matching(self, given: str) -> list[dict[str, Any]]:
        """The run ``given`` names: by its whole id, else every run whose id starts or ends
        with it (the hex tail of an id is what people copy)."""
        exact = self.run(given)
        if exact is not None or not given:
            return [exact] if exact else []
        pattern = given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self._runs(
            "where run_id like ? escape '\\' or run_id like ? escape '\\' order by started_at",
            (pattern + "%", "%" + pattern),
        )

    def resolve(self, given: str) -> dict[str, Any]:
        """The one run ``given`` names (see ``matching``), for `runs show` and `run
        --redrive`; none, or several, is an error that says what to give instead."""
        found = self.matching(given)
        if not found:
            raise RiverbedError(f"no run {given}; `riverbed runs` lists the runs")
        if len(found) > 1:
            ids = ", ".join(r["run_id"] for r in found[:5]) + (", ..." if len(found) > 5 else "")
            raise RiverbedError(f"{given} names {len(found)} runs ({ids}); give more of the id")
        return found[0]

    def short_id(self, run_id: str) -> str:
        """The hex tail of ``run_id`` when it names that run alone, else the whole id."""
        tail = run_id.rsplit("-", 1)[-1]
        found = self.matching(tail)
        return tail if len(found) == 1 and found[0]["run_id"] == run_id else run_id

    def runs(self, limit: int = 20, idle: bool = True) -> list[dict[str, Any]]:
        """The latest runs, newest first; without the idle ones when ``idle`` is False."""
        where = "" if idle else f"where not {IDLE} "
        return self._runs(where + "order by started_at desc limit ?", (limit,))

    def idle_runs(self, since: float | None = None) -> int:
        """How many idle runs started at or after ``since`` (all of them without it)."""
        (count,) = self.db.query(
            f"select count(*) from runs where {IDLE} and started_at >= ?",
            (since if since is not None else float("-inf"),),
        )[0]
        return int(count)

    def running(self) -> list[dict[str, Any]]:
        return self._runs("where status = 'running' order by started_at", ())

    def last(self, status: str) -> dict[str, Any] | None:
        rows = self._runs("where status = ? order by started_at desc limit 1", (status,))
        return rows[0] if rows else None

    def first_started(self) -> float | None:
        """When the oldest run in the history started."""
        (started,) = self.db.query("select min(started_at) from runs")[0]
        return float(started) if started is not None else None

    def events(self, run_id: str) -> list[Event]:
        rows = self.db.query(
            "select run_id, seq, ts, state, event, attempt, error_class, error, detail "
            "from run_events where run_id = ? order by seq",
            (run_id,),
        )
        return [
            Event(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8])) for r in rows
        ]

    def succeeded_outputs(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """State -> the outputs of its successes in ``run_id``, in order (a state in a loop
        succeeds once per visit; a redrive skips as many visits as succeeded)."""
        outputs: dict[str, list[dict[str, Any]]] = {}
        for e in self.events(run_id):
            if e.event == "succeeded" and "output" in e.detail and not e.detail.get("handling"):
                outputs.setdefault(e.state, []).append(e.detail.get("output", {}))
        return outputs

    def _runs(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        columns = (
            "run_id, status, trigger, started_at, ended_at, failed_state, error, redrives, "
            "pid, host"
        )
        rows = self.db.query(f"select {columns}, {IDLE} from runs {where}", params)
        names = [c.strip() for c in columns.split(",")]
        return [dict(zip(names, row[:-1])) | {"idle": bool(row[-1])} for row in rows]


class RunLock:
    """One `riverbed run` at a time per project (see the module docstring)."""

    def __init__(self, path: Path, history: RunHistory):
        def refusal(pid: str) -> str:
            active = history.running()
            named = (
                f"run {active[-1]['run_id']} (pid {active[-1]['pid']}, started "
                f"{time.strftime('%H:%M:%S', time.localtime(active[-1]['started_at']))})"
                if active
                else f"another run (pid {pid})"
            )
            return (
                f"{named} is active for this project; wait for it to finish, see it with "
                "`riverbed runs`, or stop it (Ctrl-C or SIGTERM) before starting another"
            )

        self.lock = ProcessLock(path, "riverbed run", refusal)
        # the lock is ours: any run still 'running' belonged to a process that died
        self.taken_over = history.running()
        for stale in self.taken_over:
            history.record(
                stale["run_id"],
                "-",
                "aborted",
                error=f"process {stale['pid']} on {stale['host']} died; its lock was taken over",
            )
            history.finish(
                stale["run_id"],
                "aborted",
                error=f"process {stale['pid']} died during the run (lock taken over)",
            )

    def release(self) -> None:
        self.lock.release()
