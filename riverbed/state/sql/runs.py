"""The run history: a row of ``runs`` per run, a row of ``run_events`` per thing that happened
in it, each committed as it happens, so a run killed with kill -9 leaves its history up to its
last event (riverbed.orchestrate.history says who writes them and when).
"""

from __future__ import annotations

import json
from typing import Any

from riverbed.state.records import RunEvent, RunRecord
from riverbed.state.sql.database import Database

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


def _idle(db: Database) -> str:
    """A run is idle when it succeeded having found nothing to do: the last ``new_data`` a
    task reported (the default machine's ``check``) was 0, and so was the ``unpublished``
    beside it (loads an earlier run did not publish, which this one did). `run --every`
    makes one per interval."""
    new_data = db.json_number("e.detail", "output", "new_data")
    unpublished = db.json_number("e.detail", "output", "unpublished")
    return (
        f"(status = 'succeeded' and coalesce((select {new_data} + coalesce({unpublished}, 0)"
        " from run_events e"
        " where e.run_id = runs.run_id and e.event in ('succeeded', 'skipped')"
        f" and {new_data} is not null order by e.seq desc limit 1), 1) = 0)"
    )


_RUN_COLUMNS = (
    "run_id, status, trigger, started_at, ended_at, failed_state, error, redrives, pid, host"
)


class SQLRunState:
    def __init__(self, db: Database):
        self._db = db
        self._idle = _idle(db)

    def start(self, run_id: str, trigger: str, *, started_at: float, pid: int, host: str) -> None:
        """A new run, running in process ``pid`` on ``host``."""
        with self._db.write() as db:
            db.execute(
                "insert into runs (run_id, status, trigger, started_at, pid, host)"
                " values (?, 'running', ?, ?, ?, ?)",
                (run_id, trigger, started_at, pid, host),
            )

    def reopen(self, run_id: str, *, pid: int, host: str) -> None:
        """A redrive: the run is running again, in process ``pid`` on ``host``, one redrive
        more, its end and error forgotten."""
        with self._db.write() as db:
            db.execute(
                "update runs set status = 'running', ended_at = null, error = null,"
                " failed_state = null, redrives = redrives + 1, pid = ?, host = ?"
                " where run_id = ?",
                (pid, host, run_id),
            )

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        ended_at: float,
        failed_state: str | None = None,
        error: str | None = None,
    ) -> None:
        with self._db.write() as db:
            db.execute(
                "update runs set status = ?, ended_at = ?, failed_state = ?, error = ?"
                " where run_id = ?",
                (status, ended_at, failed_state, error, run_id),
            )

    def add_event(
        self,
        run_id: str,
        state: str,
        event: str,
        *,
        ts: float,
        attempt: int | None = None,
        error_class: str | None = None,
        error: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """The run's next event (seq one more than its last); a detail value JSON cannot
        hold is kept as its text."""
        with self._db.write() as db:
            (seq,) = db.execute(
                "select coalesce(max(seq), 0) + 1 from run_events where run_id = ?", (run_id,)
            ).fetchone()
            db.execute(
                "insert into run_events (run_id, seq, ts, state, event, attempt, error_class,"
                " error, detail) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    ts,
                    state,
                    event,
                    attempt,
                    error_class,
                    error,
                    json.dumps(detail or {}, default=str),
                ),
            )

    def run(self, run_id: str) -> RunRecord | None:
        rows = self._runs("where run_id = ?", (run_id,))
        return rows[0] if rows else None

    def with_id_part(self, part: str) -> list[RunRecord]:
        """Runs whose id starts or ends with ``part``, oldest first."""
        pattern = part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self._runs(
            "where run_id like ? escape '\\' or run_id like ? escape '\\' order by started_at",
            (pattern + "%", "%" + pattern),
        )

    def latest(self, limit: int = 20, idle: bool = True) -> list[RunRecord]:
        """The latest runs, newest first; without the idle ones when ``idle`` is False."""
        where = "" if idle else f"where not {self._idle} "
        return self._runs(where + "order by started_at desc limit ?", (limit,))

    def idle_count(self, since: float | None = None) -> int:
        """How many idle runs started at or after ``since`` (all of them without it)."""
        (count,) = self._db.row(
            f"select count(*) from runs where {self._idle} and started_at >= ?",
            (since if since is not None else float("-inf"),),
        )
        return int(count)

    def running(self) -> list[RunRecord]:
        """The runs still running, oldest first."""
        return self._runs("where status = 'running' order by started_at", ())

    def last_success(self) -> float | None:
        """When the last successful run ended."""
        return self._one_float("select max(ended_at) from runs where status = 'succeeded'")

    def first_started(self) -> float | None:
        """When the oldest run in the history started."""
        return self._one_float("select min(started_at) from runs")

    def events(self, run_id: str) -> list[RunEvent]:
        """The run's events, in order."""
        rows = self._db.rows(
            "select run_id, seq, ts, state, event, attempt, error_class, error, detail"
            " from run_events where run_id = ? order by seq",
            (run_id,),
        )
        return [
            RunEvent(
                run_id=r[0],
                seq=r[1],
                ts=r[2],
                state=r[3],
                event=r[4],
                attempt=r[5],
                error_class=r[6],
                error=r[7],
                detail=json.loads(r[8]),
            )
            for r in rows
        ]

    def _runs(self, where: str, params: tuple[Any, ...]) -> list[RunRecord]:
        rows = self._db.rows(f"select {_RUN_COLUMNS}, {self._idle} from runs {where}", params)
        return [
            RunRecord(
                run_id=r[0],
                status=r[1],
                trigger=r[2],
                started_at=r[3],
                ended_at=r[4],
                failed_state=r[5],
                error=r[6],
                redrives=r[7],
                pid=r[8],
                host=r[9],
                idle=bool(r[10]),
            )
            for r in rows
        ]

    def _one_float(self, query: str) -> float | None:
        (value,) = self._db.row(query)
        return None if value is None else float(value)
