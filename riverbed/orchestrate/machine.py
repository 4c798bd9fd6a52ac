"""The pipeline's state machine: the default one, and what its states mean.

The default machine (``orchestration.machine`` replaces it)::

    check ──► anything_new? ──no──► nothing_new (Succeed)
                   │yes        └─only loads not published yet──► publish
                   ▼
    transform ──► stage ──► dimensions (Parallel, one branch per dimension) ──► facts
                    ▲                                                            │
                    └────────────── more_to_load? ◄──────────────────────────────┘
                                         │no
                                         ▼
                                      publish ──► report (only with orchestration.reports)
    any task, after its retries ──Catch──► notify_failure ──► failed (Fail)

``check`` counts raw files not transformed yet and staged batches not loaded yet, so a run with
nothing to do touches neither the transform engine nor the warehouse; and whether loads were
committed after the last publish (``unpublished``: a run killed between its load and its
publish), which a run with nothing new to load then publishes. A quality rule with
action ``fail`` makes ``transform`` fail with the error class ``quality``: it is not retried,
and the Catch leads away before anything is staged into the warehouse. ``more_to_load`` loops
when staging could not take every pending batch in one round (a batch with a new column set
waits for the next round, see riverbed.load.runner). ``report`` writes the dashboard snapshots of
``orchestration.reports`` once the run's data is published: a report that fails fails the run
in that state (its one line in the history), the load it follows stays committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from riverbed.config.models import RiverbedConfig
from riverbed.config.orchestration import (
    CatchRule,
    ChoiceRule,
    ChoiceState,
    FailState,
    MachineConfig,
    ParallelState,
    SucceedState,
    TaskState,
)
from riverbed.errors import ErrorClass, RiverbedError


def default_machine(config: RiverbedConfig) -> MachineConfig:
    """The machine `riverbed run` executes when orchestration.machine is not set."""
    catch = [CatchRule(errors=["all"], next="notify_failure")]
    dims = [name for name, t in config.tables.items() if t.kind == "dimension"]
    facts = [name for name, t in config.tables.items() if t.kind == "fact"]
    after_dims = "facts" if facts else "more_to_load"
    states: dict[str, object] = {
        "check": TaskState(type="task", resource="check", next="anything_new", catch=catch),
        "anything_new": ChoiceState(
            type="choice",
            choices=[
                ChoiceRule(variable="new_data", comparison=">", value=0, next="transform"),
                # loads an earlier run committed and did not publish (killed in between)
                ChoiceRule(variable="unpublished", comparison=">", value=0, next="publish"),
            ],
            default="nothing_new",
        ),
        "nothing_new": SucceedState(type="succeed"),
        "transform": TaskState(type="task", resource="transform", next="stage", catch=catch),
        "stage": TaskState(
            type="task",
            resource="stage",
            next="dimensions" if dims else after_dims,
            catch=catch,
        ),
        "more_to_load": ChoiceState(
            type="choice",
            choices=[ChoiceRule(variable="pending_batches", comparison=">", value=0, next="stage")],
            default="publish",
        ),
        "publish": TaskState(type="task", resource="publish", end=True, catch=catch),
        **(
            {  # not retried: a report waits for a busy warehouse itself (riverbed.serve.report)
                "report": TaskState(type="task", resource="report", end=True, retry=[], catch=catch)
            }
            if config.orchestration.reports
            else {}
        ),
        # the handler records nothing itself: the executor already wrote the error to the
        # run's history; it tells people, then the run ends failed
        "notify_failure": TaskState(type="task", resource="notify", next="failed", retry=[]),
        "failed": FailState(type="fail", error="run_failed", cause="a state failed"),
    }
    if config.orchestration.reports:
        states["publish"] = TaskState(type="task", resource="publish", next="report", catch=catch)
    if dims:
        branches = [
            MachineConfig(
                start_at=f"dimension_{name}",
                states={
                    f"dimension_{name}": TaskState(
                        type="task", resource="dimension", table=name, end=True
                    )
                },
            )
            for name in dims
        ]
        states["dimensions"] = ParallelState(
            type="parallel",
            branches=branches,
            max_concurrency=config.orchestration.max_concurrency,
            next=after_dims,
            # each branch's task retries with orchestration.retry already: the Parallel
            # retrying too would multiply the attempts and run again the dimensions that loaded
            retry=[],
            catch=catch,
        )
    if facts:
        states["facts"] = TaskState(type="task", resource="facts", next="more_to_load", catch=catch)
    return MachineConfig.model_validate({"start_at": "check", "states": states})


def machine_for(config: RiverbedConfig) -> MachineConfig:
    return config.orchestration.machine or default_machine(config)


def state_names(machine: MachineConfig) -> list[str]:
    """Every state of the machine and of its Parallel branches (names are unique across all,
    as in Step Functions: history and redrive refer to states by name)."""
    names: list[str] = []
    for name, state in machine.states.items():
        names.append(name)
        if isinstance(state, ParallelState):
            for branch in state.branches:
                names += state_names(branch)
    return names


def task_states(machine: MachineConfig) -> set[str]:
    """The Task states of the machine and of its Parallel branches: the ones whose outputs are
    their own work (a Parallel's output sums its branches')."""
    tasks: set[str] = set()
    for name, state in machine.states.items():
        if isinstance(state, TaskState):
            tasks.add(name)
        elif isinstance(state, ParallelState):
            for branch in state.branches:
                tasks |= task_states(branch)
    return tasks


def duplicate_states(machine: MachineConfig) -> list[str]:
    names = state_names(machine)
    return sorted({n for n in names if names.count(n) > 1})


def choose(state: ChoiceState, variables: dict[str, float]) -> str:
    """The next state of a Choice: the first rule that holds, else the default. A variable no
    task has set counts as 0."""
    for rule in state.choices:
        if _holds(rule, float(variables.get(rule.variable, 0))):
            return rule.next
    return state.default


def _holds(rule: ChoiceRule, value: float) -> bool:
    match rule.comparison:
        case ">":
            return value > rule.value
        case ">=":
            return value >= rule.value
        case "<":
            return value < rule.value
        case "<=":
            return value <= rule.value
        case "==":
            return value == rule.value
        case _:
            return value != rule.value


def classify(exc: BaseException) -> str:
    """transient, terminal or quality: a RiverbedError's ``error_class``, decided where it
    was raised (riverbed.errors); OS-level I/O and connection errors that escaped translation
    are transient, anything else terminal."""
    if isinstance(exc, RiverbedError):
        return exc.error_class.value
    if isinstance(exc, ConnectionError | TimeoutError | BlockingIOError):
        return ErrorClass.TRANSIENT.value
    return ErrorClass.TERMINAL.value


def matches(errors: Sequence[str], error_class: str) -> bool:
    return "all" in errors or error_class in errors
