"""`riverbed run`: one execution of the pipeline's state machine, a redrive, or a schedule.

A run takes the project's run lock, gets a row in the run history, executes the machine
(riverbed.orchestrate.executor) with the task resources (riverbed.orchestrate.tasks), records
its metrics, evaluates the alarms and hands their notifications to the dispatcher, which gets
the notifiers' whole retry window to deliver them before the process moves on; what is still
undelivered then is given up, logged as an ERROR and counted (metric notifications_given_up).
"""

from __future__ import annotations

import logging
import math
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from riverbed.capture.lag import record_source_lag
from riverbed.config.loader import Project
from riverbed.config.models import RiverbedConfig
from riverbed.config.orchestration import FailState, MachineConfig, ParallelState
from riverbed.errors import ConfigError, RiverbedError
from riverbed.observe.alarms import evaluate_alarms
from riverbed.observe.logs import log_context, log_event
from riverbed.observe.metrics import RETENTION_SECONDS, SINCE_LAST_SUCCESS, since_last_success
from riverbed.observe.notify import RETRY_WINDOW_SECONDS, Dispatcher, open_notifiers
from riverbed.orchestrate.executor import Executor, RunFailed
from riverbed.orchestrate.history import RunHistory, RunLock
from riverbed.orchestrate.machine import duplicate_states, machine_for
from riverbed.orchestrate.schedule import Schedule
from riverbed.orchestrate.tasks import Tasks
from riverbed.state import StateStore, open_state
from riverbed.state.store import Metrics

log = logging.getLogger("riverbed.run")
# how long a finished run waits for its notifications to go out: every retry a notifier makes
# (a failed run's notification is the one that matters most), and its last attempt's answer
NOTIFY_GRACE_SECONDS = RETRY_WINDOW_SECONDS + 5.0
INTERRUPTED_GRACE_SECONDS = 5.0  # after Ctrl-C / SIGTERM: whoever stops a run wants it to stop
ALARM_INTERVAL_MAX = 60.0  # between runs, alarms are evaluated at least this often


@dataclass
class RunReport:
    run_id: str
    status: str  # succeeded | failed
    seconds: float
    variables: dict[str, float] = field(default_factory=dict)
    failed_state: str | None = None
    error: str | None = None
    error_class: str | None = None
    redrive: bool = False
    summary: dict[str, Any] = field(default_factory=dict)  # per table: see Tasks.summary
    # failed_state is a Fail state of the machine (not a task): a redrive would fail again
    ended_by_fail_state: bool = False

    @property
    def loaded_rows(self) -> int:
        """Rows applied to the warehouse by every load task of the run."""
        tables = self.summary.get("load", {}).get("tables", {})
        return sum(int(t["rows"]) for t in tables.values())

    def as_dict(self) -> dict[str, Any]:
        return self.summary | {
            "run_id": self.run_id,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "failed_state": self.failed_state,
            "error": self.error,
            "error_class": self.error_class,
            "redrive": self.redrive,
            "variables": self.variables,
        }


def run_pipeline(
    project: Project,
    *,
    trigger: str = "once",
    redrive: str | None = None,
    engine: str | None = None,
    tables: Sequence[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    extract_due: Callable[[], bool] | None = None,
) -> RunReport:
    """One execution of the machine (or the redrive of a failed run); never raises for a run
    that fails: the report says how it ended. Raises RiverbedError when it cannot start.
    ``extract_due``: asked by publish whether to refresh the extract (None: always)."""
    config = project.config
    machine = machine_for(config)
    duplicates = duplicate_states(machine)
    if duplicates:
        raise ConfigError(
            [
                f"orchestration.machine: state names must be unique, repeated: {', '.join(duplicates)}"
            ]
        )
    started = time.monotonic()
    manifest = open_state(project)
    try:
        history = RunHistory(manifest)
        lock = RunLock(project, history)
        _report_taken_over(manifest, lock)
        try:
            return _execute(
                project,
                manifest,
                history,
                machine,
                trigger,
                redrive,
                engine,
                tables,
                sleep,
                started,
                extract_due,
            )
        finally:
            lock.release()
    finally:
        manifest.close()


def _report_taken_over(manifest: StateStore, lock: RunLock) -> None:
    """A run whose process died (kill -9, a crash, a lost host) is one warning line and one
    sample of ``runs_taken_over``, so an alarm can say so: the run itself never can."""
    for stale in lock.taken_over:
        log_event(
            log,
            "run_taken_over",
            f"run {stale.run_id} died with its process {stale.pid} on {stale.host}: aborted, "
            "its lock taken over (this run does its work again)",
            level=logging.WARNING,
            dead_run=stale.run_id,
        )
    if lock.taken_over:
        manifest.metrics.record({"runs_taken_over": float(len(lock.taken_over))}, {})


def _execute(
    project: Project,
    manifest: StateStore,
    history: RunHistory,
    machine: Any,
    trigger: str,
    redrive: str | None,
    engine: str | None,
    tables: Sequence[str] | None,
    sleep: Callable[[float], None],
    started: float,
    extract_due: Callable[[], bool] | None = None,
) -> RunReport:
    config = project.config
    replay: dict[str, list[dict[str, Any]]] = {}
    if redrive is not None:
        previous = history.resolve(redrive)  # the id's tail or start, as `runs show` takes
        redrive = previous.run_id
        if previous.status not in ("failed", "aborted"):
            raise RiverbedError(
                f"run {redrive} {previous.status}; only a failed or aborted run can be "
                "redriven (start a new one with `riverbed run`)"
            )
        replay = history.succeeded_outputs(redrive)
        history.reopen(redrive)
        run_id = redrive
        history.record(run_id, "-", "redrive", replayable=sorted(replay))
    else:
        run_id = history.start(trigger)
    metrics = manifest.metrics
    dispatcher = Dispatcher(open_notifiers(config))
    tasks = Tasks(
        project,
        manifest,
        run_id,
        dispatcher,
        engine=engine,
        tables=tables,
        extract_due=extract_due,
    )
    executor = Executor(
        history=history,
        run_id=run_id,
        tasks=tasks,
        default_retry=list(config.orchestration.retry),
        faults=dict(config.orchestration.fault_injection),
        replay=replay,
        sleep=sleep,
        metrics=lambda values, labels: metrics.record(values, labels),
    )
    report = RunReport(run_id, "running", 0.0, redrive=redrive is not None)
    with log_context(run_id=run_id):
        log_event(log, "run_started", f"run {run_id} started ({trigger})", trigger=trigger)
        try:
            try:
                executor.execute(machine)
            finally:
                tasks.release()
        except RunFailed as failed:
            report.status = "failed"
            report.failed_state = failed.failed_state
            report.error = failed.error
            report.error_class = failed.error_class
            report.ended_by_fail_state = _is_fail_state(machine, failed.failed_state)
        except BaseException as exc:  # Ctrl-C, SIGTERM: the run ends aborted, redrivable
            history.finish(run_id, "aborted", None, f"interrupted: {type(exc).__name__}")
            close_dispatcher(dispatcher, metrics, INTERRUPTED_GRACE_SECONDS)
            raise
        else:
            report.status = "succeeded"
        report.seconds = time.monotonic() - started
        report.variables = dict(executor.variables)
        report.summary = tasks.summary
        history.finish(run_id, report.status, report.failed_state, report.error)
        _record_run(metrics, report)
        level = logging.INFO if report.status == "succeeded" else logging.ERROR
        log_event(
            log,
            f"run_{report.status}",
            f"run {run_id} {report.status} in {report.seconds:.2f} s"
            + (f" at {report.failed_state}: {report.error}" if report.error else ""),
            level=level,
            seconds=round(report.seconds, 3),
            **{k: v for k, v in report.variables.items() if isinstance(v, int | float)},
        )
        observe(project, manifest, dispatcher)
        close_dispatcher(dispatcher, metrics)
    return report


def observe(project: Project, manifest: StateStore, dispatcher: Dispatcher) -> None:
    """After a run, and between runs (see watch_alarms): the gauges measured now (capture lag,
    time since the last success), then the alarms."""
    now = time.time()
    # a capture that is not running records no lag: measured from the source instead
    record_source_lag(project, manifest, now)
    metrics = manifest.metrics
    since = since_last_success(manifest, now)
    if since is not None:
        metrics.record({SINCE_LAST_SUCCESS: since}, ts=now)
    # evaluated just after ``now``: a period ends before its end instant, and the gauge
    # recorded at ``now`` belongs to the period being evaluated, not to the next one
    evaluate_alarms(project.config, manifest, math.nextafter(now, math.inf), dispatcher)
    metrics.prune(RETENTION_SECONDS, now=now)


def observe_between_runs(project: Project) -> None:
    """``observe`` outside any run, for a process that outlives them (see watch_alarms): an
    alarm on time since the last success must fire when nothing runs at all, and a dead
    scheduler runs nothing. Safe beside runs: each evaluation is one transaction."""
    manifest = open_state(project)
    try:
        dispatcher = Dispatcher(open_notifiers(project.config))
        try:
            observe(project, manifest, dispatcher)
        finally:
            close_dispatcher(dispatcher, manifest.metrics)
    finally:
        manifest.close()


def measure_between_runs(project: Project) -> None:
    """Record what is measured from the source rather than by a stage (the lag of a capture
    that is not running): before each /metrics scrape, so a dead capture shows."""
    manifest = open_state(project)
    try:
        record_source_lag(project, manifest)
    finally:
        manifest.close()


def close_dispatcher(
    dispatcher: Dispatcher, metrics: Metrics, timeout: float = NOTIFY_GRACE_SECONDS
) -> None:
    """Wait for the notifications still pending (up to ``timeout``), then count the ones
    given up (the dispatcher logged each) in the metric notifications_given_up."""
    dispatcher.close(timeout)
    if dispatcher.given_up:
        metrics.record({"notifications_given_up": float(dispatcher.given_up)})


def watch_alarms(project: Project, stop: threading.Event) -> threading.Thread:
    """A daemon thread that evaluates the alarms between runs (observe_between_runs) every
    alarm_interval until ``stop`` is set: for the processes that outlive runs, `serve` and
    `capture --follow`. An evaluation that fails (a busy state store) is logged and the next
    tick tries again; the thread never takes its process down."""
    interval = alarm_interval(project.config)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                observe_between_runs(project)
            except Exception as exc:  # noqa: BLE001 - a watchdog logs and carries on
                log.warning("alarms not evaluated: %s", exc)

    thread = threading.Thread(target=loop, name="riverbed-alarms", daemon=True)
    thread.start()
    return thread


def alarm_interval(config: RiverbedConfig) -> float:
    """How often to evaluate alarms between runs: every shortest period (evaluating more
    often sees no new period), at least every ALARM_INTERVAL_MAX seconds, at most every 1 s."""
    periods = [a.period_seconds for a in config.alarms.values()]
    return float(min(max(min(periods, default=ALARM_INTERVAL_MAX), 1), ALARM_INTERVAL_MAX))


def _is_fail_state(machine: MachineConfig, name: str | None) -> bool:
    """Whether ``name`` is a Fail state of ``machine`` or of one of its Parallel branches."""
    for state_name, state in machine.states.items():
        if state_name == name and isinstance(state, FailState):
            return True
        if isinstance(state, ParallelState) and any(
            _is_fail_state(branch, name) for branch in state.branches
        ):
            return True
    return False


def _record_run(metrics: Metrics, report: RunReport) -> None:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    metrics.record(
        {
            "runs_succeeded": 1.0 if report.status == "succeeded" else 0.0,
            "runs_failed": 1.0 if report.status == "failed" else 0.0,
            "run_duration_seconds": report.seconds,
            "run_peak_rss_bytes": peak_kib * 1024.0,
        }
    )


def run_scheduled(
    project: Project,
    schedule: Schedule,
    *,
    trigger: str,
    should_stop: Callable[[], bool],
    on_report: Callable[[RunReport], None],
    engine: str | None = None,
    wait: Callable[[float], bool] | None = None,
) -> None:
    """Run at every time ``schedule`` gives until ``should_stop``; a failed run does not stop
    the schedule (its alarm and notification tell someone), a run that cannot start does."""
    stopped = threading.Event()
    pause = wait or (lambda seconds: stopped.wait(seconds))
    while not should_stop():
        started = datetime.now(UTC)
        on_report(run_pipeline(project, trigger=trigger, engine=engine))
        # runs start on the schedule (every N s from the last start), not N s after the last
        # end; a run longer than the interval is followed at once, missed ticks are not owed
        delay = (schedule.next_after(started) - datetime.now(UTC)).total_seconds()
        # sleep in short steps, so Ctrl-C and should_stop are honoured promptly
        while delay > 0 and not should_stop():
            step = min(delay, 0.5)
            if pause(step):
                return
            delay -= step
