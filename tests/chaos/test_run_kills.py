"""kill -9 of a run in each state of the state machine, under live traffic: the fault is
orchestration.fault_injection's ``error: kill`` (the process SIGKILLs itself at the end of
the state: its work done and committed, its success not yet in the history, the moment a
crash most tempts the next run to do the work twice), one state after another. Each killed
process is restarted by the supervisor; its first run takes the dead run's lock over, says so
in one warning line and in runs_taken_over (the run_died alarm), and does the work again; the
warehouse ends exact.

The fault is part of the config a process starts with, so the scenario holds the restart while
it moves the fault to the next state (the process's last kill had stopped it anyway): the
restarted run is killed in the next state, often while it redoes the work of the run killed
before, which is harder still. The Parallel ``dimensions`` and one of its branches are killed
too."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import yaml

from chaos.conftest import MakeChaos
from chaos.frame import Chaos, alarm_fired, assert_exact, fault_reported
from conftest import Database

# the default machine's task states, in the order a run enters them
KILLED_IN = (
    "check",
    "transform",
    "stage",
    "dimension_customers",
    "dimensions",
    "facts",
    "publish",
)


def inject(config: Path, faults: dict[str, Any]) -> None:
    data = yaml.safe_load(config.read_text())
    data["orchestration"]["fault_injection"] = faults
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def kills(chaos: Chaos) -> int:
    return sum(1 for e in chaos.service("run").exits if e.code == -signal.SIGKILL)


def test_kill_9_of_a_run_in_each_state(database: Database, make_chaos: MakeChaos) -> None:
    chaos = make_chaos(database)
    chaos.alarm("run_died", "runs_taken_over", 60)
    inject(chaos.config, {KILLED_IN[0]: {"error": "kill", "at": "end"}})
    chaos.start(workload_seconds=600)
    for index, state in enumerate(KILLED_IN):
        with chaos.held("run") as run:
            run.expected_kills += 1
            lives = len(run.lives)
            chaos.wait(f"the run killed in {state}", lambda n=index: kills(chaos) > n, 120)
            following = KILLED_IN[index + 1 : index + 2]
            inject(chaos.config, {s: {"error": "kill", "at": "end"} for s in following})
        chaos.wait("the run restarted", lambda n=lives: len(run.lives) > n, 30)
    chaos.flowing()
    chaos.end_workload()

    chaos.catch_up()
    fault_reported(chaos.service("run"), r"run \S+ died with its process \d+")
    alarm_fired(chaos, "run_died")
    chaos.stop()
    chaos.no_manual_step()
    assert_exact(chaos.config, database)
    runs = chaos.read(lambda m: m.runs.latest(1000))
    aborted = [r for r in runs if r.status == "aborted"]
    assert len(aborted) == len(KILLED_IN), [(r.run_id, r.status, r.error) for r in runs]
    assert all("lock taken over" in (r.error or "") for r in aborted), aborted
