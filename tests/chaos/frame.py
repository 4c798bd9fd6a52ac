"""The chaos suite's common frame (issue 20 §5): every scenario runs the live shop workload with
`capture --follow` and the continuous run side by side, injects its fault, removes it, lets the
pipeline catch up by itself, and then proves the same things:

- the warehouse is exact (:func:`assert_exact`): each dimension's current rows equal the source
  table, every live source row is in its fact table exactly once, no source position (LSN) was
  loaded twice (tests/pipeline_support.py's checks, shared with the end-to-end tests);
- the fault was reported as one clear line in the stderr of the process that met it, never a
  traceback (:func:`fault_reported`), and as an alarm in the state store (:func:`alarm_fired`:
  ``run_failed`` for a run, ``capture_interrupted`` — over the counter
  ``capture_interruptions_total`` — for capture);
- no process needed a manual step.

"No manual step" means: the processes run as services under a supervisor that does what
systemd's ``Restart=always`` with ``RestartSec=1`` does and nothing else (:class:`Service`):
whatever exits, for whatever reason, is started again with the same command line a second
later. A process may ride a fault out (capture reconnecting) or exit on it (a `run --follow`
whose run cannot start); an exit is acceptable only with a clear last line and no traceback,
or when the scenario killed it (SIGKILL). Nobody redrives a run, resets a slot, deletes a
lock or drains the pipeline by hand: after the fault is removed the test only waits, and the
services catch up on their own. The one exception is named by the scenario that needs it
(the invalidated slot, whose recovery is `capture --resnapshot` by design).

The command of the continuous run is in ONE place, :data:`CONTINUOUS_RUN`: `run --follow`,
a run as soon as capture publishes raw files.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_support import Child, check_dimensions, check_facts, cli, demo_project, source_rows

from conftest import Database
from riverbed.capture.runner import drain_target
from riverbed.config import load_project
from riverbed.state import StateStore, open_state

# the continuous run: `run --follow` replaces it once it lands (issue 20)
CONTINUOUS_RUN = ("run", "--follow")
RESTART_SECONDS = 1.0  # systemd's RestartSec
SEED = ("--customers", "120", "--sellers", "12", "--products", "60", "--orders", "600")
RATE = 150  # changes per second of the live workload


def count_alarm(metric: str, period_seconds: int = 300) -> dict[str, Any]:
    """An alarm on any count of ``metric`` within the last ``period_seconds``, to the console."""
    return {
        "metric": metric,
        "statistic": "sum",
        "period_seconds": period_seconds,
        "threshold": 0,
        "comparison": ">",
        "evaluation_periods": 1,
        "treat_missing_data": "not_breaching",
        "notify": ["console"],
    }


# capture's alarm: any interruption in the last five minutes (the lag alarm fires only after
# minutes of lag); evaluated after each run, and a run may take a while on a busy machine
CAPTURE_ALARM = count_alarm("capture_interruptions_total")
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Exit:
    service: str
    code: int
    last_line: str


class Service:
    """One long-running `riverbed ...` process under a supervisor: when it exits, whatever the
    reason, it is started again RESTART_SECONDS later with the same command line, as systemd's
    Restart=always would. ``args`` is called at each start (the workload asks for the time
    left of its window); None from it means the unit is done and stays down."""

    def __init__(
        self,
        name: str,
        args: Callable[[], list[str] | None],
        logs: Path,
        cwd: Path,
        prefix: tuple[str, ...] = (),
    ):
        self.name, self.args, self.logs, self.cwd, self.prefix = name, args, logs, cwd, prefix
        self.lives: list[Child] = []
        self.exits: list[Exit] = []
        self.expected_kills = 0  # SIGKILLs the scenario dealt: exits that need no clear line
        self.held = False  # the scenario is changing the fault: do not start it meanwhile
        self.done = False
        self._exited_at: float | None = None
        self._start()

    @property
    def current(self) -> Child:
        return self.lives[-1]

    def _start(self) -> None:
        args = self.args()
        if args is None:
            self.done = True
            return
        name = f"{self.name}-{len(self.lives) + 1}"
        self.lives.append(Child(name, args, self.logs, self.cwd, threads=True, prefix=self.prefix))
        self._exited_at = None

    def tend(self) -> None:
        """The supervisor's look: note an exit, restart once RestartSec has passed."""
        if self.done or self.current.alive():
            return
        if self._exited_at is None:
            code = self.current.proc.returncode
            err = self.current.err.read_text().strip().splitlines()
            self.exits.append(Exit(self.current.name, code, err[-1] if err else ""))
            self._exited_at = time.monotonic()
        if not self.held and time.monotonic() - self._exited_at >= RESTART_SECONDS:
            self._start()

    def kill9(self) -> None:
        self.expected_kills += 1
        self.current.kill9()

    def stop(self) -> int:
        """Ctrl-C (the unit stopped), then its exit code."""
        self.done = True
        return self.current.interrupt(timeout=120)

    def stderr(self) -> str:
        return "".join(life.err.read_text() for life in self.lives)

    def output(self) -> str:
        return "\n".join(life.output() for life in self.lives)


class Supervisor:
    """Tends every service from a thread, ten times a second."""

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, service: Service) -> Service:
        with self.lock:
            self.services[service.name] = service
        return service

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            with self.lock:
                for service in self.services.values():
                    service.tend()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for service in self.services.values():
            if service.lives and service.current.alive():
                service.current.kill9()

    def output(self) -> str:
        return "\n".join(s.output() for s in self.services.values())


@dataclass
class Chaos:
    """One scenario's pipeline: a demo project on ``database`` (warehouse DuckDB, or the
    PostgreSQL ``warehouse``), seeded and snapshotted, with its services."""

    config: Path
    database: Database
    logs: Path
    supervisor: Supervisor = field(default_factory=Supervisor)
    workload_until: float = 0.0
    prefix: tuple[str, ...] = ()  # what every service runs under (UNPRIVILEGED, say)

    # --- the services ------------------------------------------------------------------------

    def alarm(self, name: str, metric: str, period_seconds: int = 300) -> None:
        """Add alarm ``name`` on any count of ``metric`` (count_alarm) to the config."""
        data = yaml.safe_load(self.config.read_text())
        data["alarms"][name] = count_alarm(metric, period_seconds)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def service(self, name: str) -> Service:
        return self.supervisor.services[name]

    def start(self, workload_seconds: float = 600, rate: int = RATE) -> None:
        """capture --follow, the continuous run and the workload, as services."""
        self.add("capture", lambda: ["capture", "--follow", "-c", str(self.config)])
        self.add("run", lambda: [*CONTINUOUS_RUN, "-c", str(self.config)])
        self.workload_until = time.monotonic() + workload_seconds
        seed = iter(range(1, 1000))

        def workload() -> list[str] | None:
            # a client of the source: restarted while its window lasts, for the time left
            left = self.workload_until - time.monotonic()
            if left < 1:
                return None
            return ["shop", "run", "--rate", str(rate), "--duration", f"{left:.0f}"] + [
                "--dirty-ratio", "0", "--seed", str(next(seed)), "-q", "-c", str(self.config)
            ]  # fmt: skip

        self.add("workload", workload)

    def end_workload(self) -> None:
        """The traffic stops (Ctrl-C: the transaction in flight commits first)."""
        self.workload_until = 0.0
        with self.supervisor.lock:  # not while the supervisor restarts it
            workload = self.service("workload")
            workload.done = True  # stopped: its exit (130) is not a fault
        workload.current.interrupt()

    def add(self, name: str, args: Callable[[], list[str] | None]) -> Service:
        with self.supervisor.lock:
            service = Service(name, args, self.logs, self.config.parent, self.prefix)
        return self.supervisor.add(service)

    @contextmanager
    def held(self, name: str) -> Iterator[Service]:
        """``name`` is not restarted inside the block (the scenario changes its fault)."""
        service = self.service(name)
        service.held = True
        try:
            yield service
        finally:
            service.held = False

    # --- waiting -----------------------------------------------------------------------------

    def wait(self, what: str, condition: Callable[[], Any], timeout: float = 120) -> Any:
        began = time.monotonic()
        deadline = began + timeout
        while True:
            found = condition()
            if found:
                print(f"chaos: {what} after {time.monotonic() - began:.1f} s")
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}\n{self.supervisor.output()}")
            time.sleep(0.05)

    def state(self) -> StateStore:
        return open_state(load_project(self.config))

    def read(self, look: Callable[[StateStore], Any]) -> Any:
        manifest = self.state()
        try:
            return look(manifest)
        finally:
            manifest.close()

    def runs_succeeded_since(self, since: float) -> int:
        return int(
            self.read(
                lambda m: sum(
                    1 for r in m.runs.latest(50) if r.started_at > since and r.status == "succeeded"
                )
            )
        )

    def flowing(self, timeout: float = 120) -> None:
        """Changes stream into the lake and a run loads them."""
        since = time.time()

        def streamed() -> int:
            return int(self.read(lambda m: sum(1 for f in m.lake.files("raw") if not f.full_load)))

        before = streamed()
        self.wait("new streamed raw files", lambda: streamed() > before, timeout)
        self.wait("a run since the stream began", lambda: self.runs_succeeded_since(since), timeout)

    def catch_up(self, timeout: float = 180) -> None:
        """The workload's window over, wait (nothing else) until capture holds everything the
        source wrote and a run that started after that has succeeded."""
        self.wait("the end of the workload", lambda: self.service("workload").done, timeout + 60)
        slot = load_project(self.config).config.source.slot
        target = source_position(self.database)
        self.wait(
            "capture to reach the source's position",
            lambda: (self.read(lambda m: m.capture.position(slot)) or 0) >= target,
            timeout,
        )
        since = time.time()
        self.wait(
            "a run after capture caught up", lambda: self.runs_succeeded_since(since), timeout
        )

    def stop(self) -> None:
        """Ctrl-C each follower: each ends cleanly (exit 0)."""
        for name in ("run", "capture"):
            with self.supervisor.lock:  # not while the supervisor restarts it
                service = self.service(name)
                service.done = True
            code = service.stop()
            assert code == 0, f"{name} exited {code} on Ctrl-C\n{service.output()}"

    def no_manual_step(self) -> None:
        """Every exit of every service was a kill the scenario dealt or ended with a clear
        line; no traceback anywhere (the supervisor restarted each exit by itself)."""
        for service in self.supervisor.services.values():
            assert TRACEBACK not in service.stderr(), service.output()
            unclear = [
                e for e in service.exits if e.code not in (0, -signal.SIGKILL) and not e.last_line
            ]
            assert not unclear, f"{service.name} exited without a line: {unclear}"
            killed = [e for e in service.exits if e.code == -signal.SIGKILL]
            assert len(killed) <= service.expected_kills, (service.name, service.exits)


def source_position(database: Database) -> int:
    """Where the source is: a WAL position that covers every commit so far, as `capture
    --once` takes it (runner.drain_target). Not pg_current_wal_lsn(): that is where WAL has
    been written to, and the workload commits with synchronous_commit off, so its last
    commits can be past it for a moment: a catch-up to that position could end before their
    rows reached the lake, and the run after it leave them out of the warehouse (the rows of
    the workload's last transaction missing: a customer from dim_customer, an order's items
    from fact_order_items)."""
    with database.connect(autocommit=True) as conn:
        return drain_target(conn)


def chaos_project(
    folder: Path, database: Database, warehouse: Database | None = None, **settings: Any
) -> Path:
    """The demo project for a scenario: raw files closed every second and a heartbeat a
    second, so runs find work while traffic flows and capture's position follows the source
    when it is idle; capture's alarm; ``settings`` merged over the top-level sections."""
    config = demo_project(folder, database, warehouse)
    data = yaml.safe_load(config.read_text())
    data["source"]["slot"] = data["source"]["publication"] = f"chaos_{uuid.uuid4().hex[:8]}"
    data["lake"]["max_seconds"] = 1
    data["capture"].update(heartbeat_seconds=1, status_interval_seconds=1)
    data["alarms"]["capture_interrupted"] = CAPTURE_ALARM
    for section, values in settings.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def seed_and_snapshot(config: Path) -> None:
    cli(config, "shop", "seed", *SEED, "--months", "1", "--seed", "11", "-q")
    cli(config, "capture", "--once", "-q")


def assert_exact(config: Path, database: Database) -> None:
    """The warehouse of ``config`` equals the source ``database`` (pipeline_support's checks):
    current dimensions, every live source row in its fact table exactly once, no source
    position loaded twice."""
    rows = source_rows(database)
    pii_key = (config.parent / ".riverbed" / "pii.key").read_text().strip().encode()
    check_dimensions(config, rows, pii_key=pii_key, ask=admin_query)
    check_facts(config, rows, ask=admin_query)


def admin_query(config: Path, sql: str) -> list[dict[str, Any]]:
    """`riverbed query --as admin` in this process (the same governed path, read-only): the
    checks ask nine queries, and a command line each would cost the suite seconds."""
    from riverbed.load.warehouse import open_warehouse
    from riverbed.serve.queries import governed_rows

    project = load_project(config)
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        with governed_rows(project, warehouse, "admin", sql) as rows:
            found: list[dict[str, Any]] = []
            for batch in rows.batches:
                found += batch.to_pylist()
            return found
    finally:
        warehouse.close()


def fault_reported(service: Service, pattern: str) -> str:
    """The line of ``service``'s stderr (all its lives) that reports the fault: one line
    matching ``pattern``, with no traceback anywhere."""
    err = service.stderr()
    assert TRACEBACK not in err, service.output()
    lines = [line for line in err.splitlines() if re.search(pattern, line)]
    assert lines, f"no line of {service.name} matches {pattern!r}\n{service.output()}"
    return lines[0]


def alarm_fired(chaos: Chaos, alarm: str) -> None:
    """``alarm`` went to ALARM in the state store (evaluated by the continuous run)."""
    chaos.wait(
        f"alarm {alarm} in ALARM",
        lambda: chaos.read(
            lambda m: [t for t in m.alarms.history(alarm) if t.new_state == "ALARM"]
        ),
        60,
    )
