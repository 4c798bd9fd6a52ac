"""riverbed.yaml's ``orchestration:`` section: the state machine a run follows (in Step
Functions' shape: task, parallel, choice, succeed and fail states, with Retry and Catch), its
schedule (every N seconds or a cron expression), the reports a run writes after publish
(``reports``) and test-only fault injection.

A machine is checked whole at load: every ``next``/``default``/catch target is a state, and no
state can loop for ever (a cycle through tasks alone, or a state no path leads out of to an end).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from riverbed.config.fields import Model

ErrorClass = Literal["transient", "terminal", "quality", "all"]
TaskResource = Literal[
    "check", "transform", "stage", "dimension", "facts", "publish", "report", "notify"
]
# the dashboards' pages, as `riverbed report --page` names them (riverbed.serve.pages)
ReportPage = Literal["product-trends", "seller-behaviour", "consumer-statistics", "pipeline-health"]


class RetryRule(Model):
    """Step Functions' Retrier: which errors, how often, how far apart."""

    errors: list[ErrorClass] = ["transient"]
    interval_seconds: float = Field(1.0, ge=0)
    max_attempts: int = Field(3, ge=0, le=100)  # retries after the first attempt; 0 = none
    backoff_rate: float = Field(2.0, ge=1)
    max_delay_seconds: float | None = Field(None, gt=0)
    jitter: Literal["full", "none"] = "none"


class CatchRule(Model):
    """Step Functions' Catcher: errors of these classes (after retries) go to state ``next``."""

    errors: list[ErrorClass] = ["all"]
    next: str


class ChoiceRule(Model):
    """``variable`` (a number the run's tasks set, e.g. new_data) compared with ``value``."""

    variable: str
    comparison: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    value: float = 0
    next: str


class _Transition(Model):
    next: str | None = None
    end: bool = False

    @model_validator(mode="after")
    def _next_or_end(self) -> _Transition:
        if (self.next is None) == (not self.end):
            raise ValueError("give exactly one of next: STATE or end: true")
        return self


class TaskState(_Transition):
    type: Literal["task"]
    resource: TaskResource
    table: str | None = None  # resource dimension (required), transform/facts (optional)
    retry: list[RetryRule] | None = None  # None: orchestration.retry
    catch: list[CatchRule] = []


class ParallelState(_Transition):
    type: Literal["parallel"]
    branches: list[MachineConfig] = Field(min_length=1)
    max_concurrency: int = Field(2, ge=1, le=64)
    retry: list[RetryRule] | None = None
    catch: list[CatchRule] = []


class ChoiceState(Model):
    type: Literal["choice"]
    choices: list[ChoiceRule] = Field(min_length=1)
    default: str


class SucceedState(Model):
    type: Literal["succeed"]


class FailState(Model):
    type: Literal["fail"]
    error: str = "failed"
    cause: str = ""


MachineState = Annotated[
    TaskState | ParallelState | ChoiceState | SucceedState | FailState,
    Field(discriminator="type"),
]


class MachineConfig(Model):
    """A state machine: where it starts and its states by name (Step Functions' shape)."""

    start_at: str
    states: dict[str, MachineState] = Field(min_length=1)

    @model_validator(mode="after")
    def _targets_exist(self) -> MachineConfig:
        names = set(self.states)
        wanted = {"start_at": self.start_at}
        for name, state in self.states.items():
            if isinstance(state, TaskState | ParallelState):
                if state.next is not None:
                    wanted[f"states.{name}.next"] = state.next
                for i, rule in enumerate(state.catch):
                    wanted[f"states.{name}.catch[{i}].next"] = rule.next
            if isinstance(state, ChoiceState):
                wanted[f"states.{name}.default"] = state.default
                for i, choice in enumerate(state.choices):
                    wanted[f"states.{name}.choices[{i}].next"] = choice.next
            if isinstance(state, TaskState) and state.resource == "dimension" and not state.table:
                raise ValueError(f"states.{name}: a dimension task needs table: NAME")
        for where, target in wanted.items():
            if target not in names:
                raise ValueError(
                    f"{where}: '{target}' is not a state; defined: {', '.join(sorted(names))}"
                )
        self._no_endless_loop()
        return self

    def _no_endless_loop(self) -> None:
        """Refuse a loop of task and parallel states whose next leads back to itself with no
        choice on the way: each run would go round it until the transition limit. A loop
        through a choice (which can leave it) or a catch (taken on failure) is fine."""
        for start in self.states:
            path: list[str] = []
            name: str | None = start
            while name is not None and name not in path:
                state = self.states[name]
                if not isinstance(state, TaskState | ParallelState):
                    break
                path.append(name)
                name = state.next
            if path and name == start:  # back where it began, through tasks alone
                loop = " -> ".join([*path, start])
                raise ValueError(
                    f"states.{path[-1]}.next: {loop} loops with no choice state to leave it, so "
                    "a run would never end; route it through a choice state, or end one with "
                    "end: true"
                )
        # and a state from which no way at all leads to an end (choices whose every branch
        # goes back in): a run that gets there goes round until the transition limit
        ends = self._reaching_an_end()
        for name in self.states:
            if name not in ends:
                raise ValueError(
                    f"states.{name}: no path from it reaches a succeed or fail state or end: "
                    "true, so a run there would never end; give one of its choices or its "
                    "default a way out"
                )

    def _reaching_an_end(self) -> set[str]:
        """The states from which some path (next, choice branches, catch) reaches an end."""
        exits: dict[str, list[str]] = {}
        reached: set[str] = set()
        for name, state in self.states.items():
            if isinstance(state, SucceedState | FailState):
                reached.add(name)
            elif isinstance(state, ChoiceState):
                exits[name] = [state.default, *(c.next for c in state.choices)]
            else:
                if state.end:
                    reached.add(name)
                exits[name] = [
                    *([state.next] if state.next else []),
                    *(c.next for c in state.catch),
                ]
        grown = True
        while grown:
            grown = False
            for name, targets in exits.items():
                if name not in reached and any(t in reached for t in targets):
                    reached.add(name)
                    grown = True
        return reached


class FaultConfig(Model):
    """Test-only: make a task state fail ``times`` times with this error class; or, with
    ``error: kill``, kill the whole process with SIGKILL (a crash: no handler runs) ``at`` the
    state's start or at its end (its work done and committed, its success not yet recorded:
    the moment a crash most tempts a rerun to do the work twice). A kill fires in every
    process started with it: the chaos tests remove it from the config before the restart."""

    error: Literal["transient", "terminal", "kill"] = "transient"
    times: int = Field(1, ge=1)
    at: Literal["start", "end"] = "start"


class ReportConfig(Model):
    """A report the run writes after publish: `riverbed report --as <as> --out <out>`."""

    principal: str = Field(alias="as")  # whose rows and masks
    out: Path  # relative to the project folder
    pages: list[ReportPage] | None = None  # None: every page
    formats: list[Literal["html", "png"]] = Field(["html", "png"], min_length=1)


class FollowConfig(Model):
    """`riverbed run --follow`: a run as soon as capture publishes raw files (see
    riverbed.orchestrate.follow for why each setting exists)."""

    # how often the newest raw file's time is read from the state store (one index probe)
    poll_seconds: float = Field(0.1, gt=0, le=60)
    # a run even when nothing arrived: work a failed run left, the time since the last
    # success, and a raw file committed by a host whose clock is behind are not left waiting
    idle_run_seconds: float = Field(60.0, gt=0)
    # while raw files keep arriving, publish refreshes the extract at most this often; a run
    # that finds nothing new landed meanwhile refreshes it always (0: every run)
    extract_every_seconds: float = Field(120.0, ge=0)


class OrchestrationConfig(Model):
    retry: list[RetryRule] = [RetryRule()]  # every task state's Retry unless it sets its own
    max_concurrency: int = Field(2, ge=1, le=64)  # the default machine's Parallel states
    machine: MachineConfig | None = None  # None: the default (see riverbed.orchestrate.machine)
    notify: list[str] = []  # notifiers told when a run fails (the Catch handler)
    every_seconds: float | None = Field(None, gt=0)  # `riverbed run --every` without a value
    cron: str | None = None
    follow: FollowConfig = FollowConfig()
    # dashboard snapshots each run writes after publish (the default machine's report state)
    reports: list[ReportConfig] = []
    # test-only fault injection, off by default: task state name -> failures to raise
    fault_injection: dict[str, FaultConfig] = {}

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if len(value.split()) != 5:
            raise ValueError("cron needs five fields: minute hour day-of-month month day-of-week")
        # the parser `riverbed run` schedules with, so every command refuses what run would
        from riverbed.config.cron import CronSchedule

        CronSchedule(value)  # raises ValueError naming the field and what it allows
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> OrchestrationConfig:
        if self.every_seconds is not None and self.cron is not None:
            raise ValueError(
                "every_seconds and cron are both set and only one can drive the schedule; "
                "keep one of them"
            )
        return self
