"""Executes a state machine with Step Functions semantics, writing every step to the history.

Task: run the resource; on an error, the first Retry rule whose ``errors`` match its class
(transient, terminal, quality) retries it after ``interval * backoff_rate ** n`` seconds
(capped by ``max_delay_seconds``; ``jitter: full`` draws uniformly below that), at most
``max_attempts`` times; then the first matching Catch rule routes to its state, else the run
fails. The class is the error's ``error_class`` (riverbed.errors.ErrorClass, read by
machine.classify). These rules are the layer that retries a task's failures: a task does not
also retry them inside (the transform turns its own retries off when the state's rules take
transient errors; riverbed.errors lists who retries what). Parallel: branches run on a pool
of ``max_concurrency`` threads; a failed branch makes the Parallel fail with its error once
the running branches end (branches not started yet are not started), and a Parallel has its
own Retry/Catch (as in Step Functions, a branch's task retried by its own rules and then by
the Parallel's is retried by both; the default machine's Parallel has none, so its dimensions
are retried once, by their own tasks' rules). Choice: the first rule that holds.
Succeed / Fail end the run.

Variables: tasks return numbers (``new_data``, ``pending_batches``, rows ...) that later
Choice states read; a Parallel's branches add theirs up.

The error a Catch took travels with the path it routes to, as Step Functions passes it in the
state's input: the handler's tasks (notify) and a Fail state on that path report it. It is not
shared state: a branch's caught error stays in its branch, and a Fail state on a path no Catch
led to reports its own error.

Redrive: the run is walked again from the start with ``replay``, the outputs of the states
that succeeded before; a visit to such a state is recorded as ``skipped`` and its output
restored instead of running it again (a state in a loop replays as many visits as succeeded).
States run by a Catch handler are not replayed: they run again if the redriven run fails again.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any

from riverbed.config.orchestration import (
    ChoiceState,
    FailState,
    FaultConfig,
    MachineConfig,
    ParallelState,
    RetryRule,
    SucceedState,
    TaskState,
)
from riverbed.errors import ErrorClass, RiverbedError, first_line
from riverbed.observe.logs import log_context, log_event
from riverbed.orchestrate.history import RunHistory
from riverbed.orchestrate.machine import choose, classify, matches

log = logging.getLogger("riverbed.run")
# what each history event is worth in the log (the rest: DEBUG)
_LEVELS = {
    "entered": logging.INFO,  # what a run is doing now (the live line of `riverbed run`)
    "succeeded": logging.INFO,
    "skipped": logging.INFO,
    "failed": logging.WARNING,
    "retry_scheduled": logging.WARNING,
    "caught": logging.ERROR,
}
MAX_TRANSITIONS = 10_000  # a machine that loops without end fails instead of running forever

# a task state's name, the state, the run's variables and the error a Catch routed here with
TaskRunner = Callable[[str, TaskState, dict[str, float], "StateError | None"], dict[str, Any]]


class StateError(Exception):
    """A state failed after its retries: which one, the error class and the message."""

    def __init__(self, state: str, error_class: str, message: str):
        super().__init__(message)
        self.state = state
        self.error_class = error_class
        self.message = message


class RunFailed(Exception):
    """The machine ended in a Fail state, or with an error no Catch took."""

    def __init__(self, failed_state: str, error: str, error_class: str):
        super().__init__(error)
        self.failed_state = failed_state
        self.error = error
        self.error_class = error_class


class InjectedFault(RiverbedError):
    """orchestration.fault_injection: a test-only failure of a chosen task state."""

    def __init__(self, state: str, error_class: str):
        super().__init__(
            f"injected {error_class} failure of state {state} (fault_injection)",
            error_class=ErrorClass(error_class),
        )


@dataclass
class Executor:
    history: RunHistory
    run_id: str
    tasks: TaskRunner
    default_retry: list[RetryRule]
    faults: dict[str, FaultConfig] = field(default_factory=dict)
    replay: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    metrics: Callable[[dict[str, float], dict[str, str]], None] | None = None
    variables: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _injected: dict[str, int] = field(default_factory=dict)
    _transitions: int = 0

    def execute(self, machine: MachineConfig) -> None:
        """Walk ``machine`` to its end; RunFailed when it ends failed."""
        try:
            self._walk(machine, self.variables, caught=None)
        except StateError as err:
            raise RunFailed(err.state, err.message, err.error_class) from err

    # --- walking ------------------------------------------------------------------------------

    def _walk(
        self, machine: MachineConfig, variables: dict[str, float], caught: StateError | None
    ) -> None:
        """Walk from ``machine.start_at``; ``caught`` is the error a Catch routed this path
        with (None: not a handler's path)."""
        name: str | None = machine.start_at
        while name is not None:
            handling = caught is not None
            with self._lock:  # Parallel branches walk on several threads
                self._transitions += 1
                transitions = self._transitions
            if transitions > MAX_TRANSITIONS:
                raise StateError(name, "terminal", f"more than {MAX_TRANSITIONS} transitions")
            state = machine.states[name]
            if isinstance(state, SucceedState):
                self._record(name, "succeeded", handling=handling)
                return
            if isinstance(state, FailState):
                self._record(name, "entered", handling=handling)
                raise StateError(
                    caught.state if caught else name,
                    caught.error_class if caught else "terminal",
                    caught.message if caught else f"{state.error}: {state.cause}",
                )
            if isinstance(state, ChoiceState):
                chosen = choose(state, variables)
                self._record(name, "chose", handling=handling, next=chosen)
                name = chosen
                continue
            assert isinstance(state, TaskState | ParallelState)
            try:
                output = self._run_state(name, state, variables, caught)
            except StateError as err:
                rule = next((c for c in state.catch if matches(c.errors, err.error_class)), None)
                if rule is None:
                    raise
                self._record(
                    name,
                    "caught",
                    error_class=err.error_class,
                    error=err.message,
                    handling=handling,
                    next=rule.next,
                )
                name, caught = rule.next, err
                continue
            _assign(variables, output)
            name = None if state.end else state.next

    def _run_state(
        self,
        name: str,
        state: TaskState | ParallelState,
        variables: dict[str, float],
        caught: StateError | None,
    ) -> dict[str, Any]:
        handling = caught is not None
        if not handling:
            with self._lock:
                done = self.replay.get(name)
                output = done.pop(0) if done else None
            if output is not None:
                self._record(name, "skipped", output=output, reason="succeeded before the redrive")
                return output
        self._record(name, "entered", handling=handling)
        retriers = state.retry if state.retry is not None else self.default_retry
        used = [0] * len(retriers)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                with log_context(state=name, table=getattr(state, "table", None)):
                    self._inject(name, "start")
                    if isinstance(state, ParallelState):
                        output = self._parallel(name, state, variables, caught)
                    else:
                        output = self.tasks(name, state, dict(variables), caught)
                    self._inject(name, "end")
            except StateError as err:  # a Parallel's branch: already classified
                error_class, message, origin = err.error_class, err.message, err.state
            except Exception as exc:
                error_class, message, origin = classify(exc), _message(exc), name
            else:
                seconds = time.monotonic() - started
                self._record(
                    name,
                    "succeeded",
                    attempt=attempt,
                    handling=handling,
                    seconds=round(seconds, 3),
                    output=output,
                )
                self._metric(
                    name, {"state_duration_seconds": seconds, "state_retries": attempt - 1}
                )
                return output
            self._record(
                name,
                "failed",
                attempt=attempt,
                error_class=error_class,
                error=message,
                handling=handling,
                seconds=round(time.monotonic() - started, 3),
            )
            index = next(
                (i for i, r in enumerate(retriers) if matches(r.errors, error_class)), None
            )
            if index is None or used[index] >= retriers[index].max_attempts:
                self._metric(name, {"state_failures": 1, "state_retries": attempt - 1})
                # the state that failed inside a Parallel, so the report and redrive name it
                raise StateError(origin, error_class, message)
            used[index] += 1
            delay = retry_delay(retriers[index], used[index])
            self._record(
                name,
                "retry_scheduled",
                attempt=attempt,
                error_class=error_class,
                handling=handling,
                delay_seconds=round(delay, 3),
                retry=used[index],
            )
            self.sleep(delay)

    def _parallel(
        self,
        name: str,
        state: ParallelState,
        variables: dict[str, float],
        caught: StateError | None,
    ) -> dict[str, Any]:
        outputs: list[dict[str, float]] = []
        failures: list[StateError] = []
        stop = threading.Event()

        def branch(machine: MachineConfig) -> None:
            if stop.is_set():
                return  # a sibling failed before this branch started: it does not start
            own = dict(variables)
            try:
                self._walk(machine, own, caught)
            except StateError as err:
                stop.set()
                failures.append(err)
                return
            with self._lock:
                outputs.append({k: v for k, v in own.items() if variables.get(k) != v})

        with ThreadPoolExecutor(state.max_concurrency, thread_name_prefix=name) as pool:
            # each branch thread carries the run's log context (run_id)
            futures = [pool.submit(copy_context().run, branch, b) for b in state.branches]
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                future.result()
        if failures:
            first = failures[0]
            raise StateError(first.state, first.error_class, first.message)
        merged: dict[str, float] = {}
        for output in outputs:
            for key, value in output.items():
                if isinstance(value, int | float):
                    merged[key] = merged.get(key, 0) + value
        return merged

    # --- helpers -----------------------------------------------------------------------------

    def _inject(self, name: str, at: str) -> None:
        fault = self.faults.get(name)
        if fault is None or fault.at != at:
            return
        if fault.error == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        with self._lock:
            done = self._injected.get(name, 0)
            if done >= fault.times:
                return
            self._injected[name] = done + 1
        raise InjectedFault(name, fault.error)

    def _record(self, state: str, event: str, **detail: Any) -> None:
        if not detail.get("handling"):
            detail.pop("handling", None)
        self.history.record(self.run_id, state, event, **detail)
        level = _LEVELS.get(event, logging.DEBUG)
        if log.isEnabledFor(level):
            counts = detail.get("output") or {}
            fields = {k: v for k, v in detail.items() if k != "output"} | counts
            error = f": {detail['error']}" if detail.get("error") else ""
            with log_context(state=state):
                log_event(log, f"state_{event}", f"{state} {event}{error}", level=level, **fields)

    def _metric(self, state: str, values: dict[str, float]) -> None:
        if self.metrics is not None:
            self.metrics(values, {"state": state})


def retry_delay(rule: RetryRule, retry: int, draw: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``retry`` (1-based): Step Functions' IntervalSeconds *
    BackoffRate ** (retry - 1), capped at MaxDelaySeconds; full jitter draws in [0, that)."""
    delay = rule.interval_seconds * rule.backoff_rate ** (retry - 1)
    if rule.max_delay_seconds is not None:
        delay = min(delay, rule.max_delay_seconds)
    return delay * draw() if rule.jitter == "full" else delay


def _assign(variables: dict[str, float], output: dict[str, Any]) -> None:
    for key, value in output.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            variables[key] = value


def _message(exc: BaseException) -> str:
    if isinstance(exc, RiverbedError):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"
