"""Pipeline health for the dashboards: what the state store records, read through the readers
`riverbed status` and `riverbed runs` use (riverbed.observe.status.gather, the store's run,
transform, metrics and alarm repositories, riverbed.orchestrate.history.RunHistory), not the
warehouse. Plain dicts and lists, ready for a page or a JSON response.

None of it is governed by the warehouse policy (it holds no warehouse rows): the web app
decides who may see it. Error texts of failed runs may quote SQL or paths, never secrets (the
logs and run history mask those where they are written).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from riverbed.config import Project
from riverbed.observe.metrics import since_last_success
from riverbed.state import StateStore, existing_state


def _store(project: Project) -> StateStore | None:
    """The project's state store, or None before anything ran (nothing to show yet)."""
    return existing_state(project)


def pipeline_status(project: Project) -> dict[str, Any]:
    """What `riverbed status --json` prints: source, capture position and lag (measured from
    the source when no capture runs), the lake, the latest quality results, runs, alarms and
    the last hour's counts."""
    from riverbed.capture.lag import measure_lag
    from riverbed.observe.status import gather

    return gather(project, lambda store: measure_lag(project, store)[0])


def freshness(project: Project, now: float | None = None) -> dict[str, Any]:
    """The data-freshness line: when the last successful run ended, and how long ago."""
    store = _store(project)
    if store is None:
        return {"last_success_at": None, "seconds_ago": None}
    try:
        at = now if now is not None else time.time()
        last = store.runs.last_success()
        return {
            "last_success_at": last,
            "seconds_ago": since_last_success(store, at) if last is not None else None,
        }
    finally:
        store.close()


def recent_runs(project: Project, limit: int = 20, idle: bool = True) -> list[dict[str, Any]]:
    """The latest runs, newest first, as `riverbed runs --json` lists them: each run's record
    (a running run whose process is gone says ``died``) and the rows it moved per state."""
    from riverbed.orchestrate.history import RunHistory
    from riverbed.orchestrate.machine import machine_for, task_states

    store = _store(project)
    if store is None:
        return []
    try:
        history = RunHistory(store)
        tasks = task_states(machine_for(project.config))
        return [
            asdict(r)
            | {"status": "died" if r.process_gone() else r.status}
            | history.row_counts(r.run_id, tasks)
            for r in store.runs.latest(limit, idle=idle)
        ]
    finally:
        store.close()


def run_timeline(project: Project, run_id: str) -> dict[str, Any]:
    """One run (its id or a unique tail of it) and its events in order: the state timeline."""
    from riverbed.orchestrate.history import RunHistory

    store = _store(project)
    if store is None:
        return {"run": None, "events": []}
    try:
        run = RunHistory(store).resolve(run_id)
        return {"run": asdict(run), "events": [asdict(e) for e in store.runs.events(run.run_id)]}
    finally:
        store.close()


def quality_over_time(
    project: Project, table: str | None = None, batches: int = 50
) -> list[dict[str, Any]]:
    """Each rule's result per batch (each table's latest ``batches`` batches), oldest first:
    when, table, batch, rule, rows checked and failed, its status, and the rows the batch put
    in quarantine."""
    store = _store(project)
    if store is None:
        return []
    try:
        found = store.transform.quality(table, limit_batches=batches)
    finally:
        store.close()
    return [
        {
            "at": batch.at,
            "table": batch.table,
            "batch_id": batch.batch_id,
            "batch_status": batch.status,
            "rows_in": batch.rows_in,
            "rows_quarantined": batch.rows_quarantined,
            **result.as_dict(),
            "ratio": result.ratio,
        }
        for batch in sorted(found, key=lambda b: (b.at, b.table))
        for result in batch.results
    ]


def capture_lag_series(project: Project, seconds: float = 3600) -> list[dict[str, Any]]:
    """The capture lag over the last ``seconds``, as capture and the alarm evaluations
    recorded it: [{at, lag_seconds}] oldest first."""
    store = _store(project)
    if store is None:
        return []
    try:
        series = store.metrics.series("capture_lag_seconds", time.time() - seconds)
    finally:
        store.close()
    return [{"at": at, "lag_seconds": value} for at, value in series]


def alarm_states(project: Project) -> list[dict[str, Any]]:
    """Each alarm's state as of its latest evaluation (OK, ALARM, INSUFFICIENT_DATA)."""
    store = _store(project)
    if store is None:
        return []
    try:
        return [asdict(s) for s in store.alarms.states()]
    finally:
        store.close()
