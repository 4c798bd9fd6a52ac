"""The project's locks with the state store in PostgreSQL (riverbed.lake.lock.project_lock):
advisory locks of the state's server, so that two working folders with no file in common (two
hosts) take turns as two processes of one folder do with lock files; a holder killed with
kill -9 lets go at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_config
from riverbed.config import load_project
from riverbed.config.loader import Project
from riverbed.errors import RiverbedError
from riverbed.lake.lock import every_run_lock, project_lock
from riverbed.orchestrate.history import RunHistory, RunLock
from riverbed.state import open_state
from riverbed.state.postgres.lock import AdvisoryLock


def host_folder(tmp_path: Path, name: str, pg_state: tuple[str, str]) -> Project:
    """A project folder of its own on ``name``'s "host", its state in the shared schema."""
    dsn, schema = pg_state
    config = write_config(
        tmp_path / name,
        f'state:\n  engine: postgres\n  dsn: "{dsn}"\n  schema: {schema}\n',
    )
    return load_project(config)


def test_a_lock_held_in_one_folder_refuses_another_folder_then_passes_on(
    tmp_path: Path, pg_state: tuple[str, str]
) -> None:
    one, two = (host_folder(tmp_path, name, pg_state) for name in ("one", "two"))
    held = project_lock(one, "run", "riverbed run")
    assert isinstance(held, AdvisoryLock)
    with pytest.raises(RiverbedError) as refused:
        project_lock(two, "run", "riverbed run")
    assert "another `riverbed run` (pid " in str(refused.value)
    assert " on " in str(refused.value) and "wait for it" in str(refused.value)
    project_lock(two, "transform", "riverbed run").release()  # another name is another lock
    with pytest.raises(RiverbedError), every_run_lock(two):
        pass
    held.release()
    with every_run_lock(two), pytest.raises(RiverbedError):
        project_lock(one, "load", "riverbed run (load)")
    assert not list((tmp_path / "one").rglob("*.lock"))  # no lock file: the server holds them


def test_a_second_run_on_another_host_is_refused_naming_the_run(
    tmp_path: Path, pg_state: tuple[str, str]
) -> None:
    one, two = (host_folder(tmp_path, name, pg_state) for name in ("one", "two"))
    store = open_state(one)
    try:
        history = RunHistory(store)
        lock = RunLock(one, history)
        run_id = history.start("once")
        with pytest.raises(RiverbedError) as refused:
            RunLock(two, RunHistory(store))
        assert f"run {run_id} (pid " in str(refused.value)
        assert "is active for this project" in str(refused.value)
        lock.release()
    finally:
        store.close()


HOLDER = """
import sys, time
from riverbed.config import load_project
from riverbed.lake.lock import project_lock

from pathlib import Path
lock = project_lock(load_project(Path(sys.argv[1])), "run", "riverbed run")
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_kill_9_lets_go(tmp_path: Path, pg_state: tuple[str, str]) -> None:
    one, two = (host_folder(tmp_path, name, pg_state) for name in ("one", "two"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "one" / "riverbed.yaml")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RiverbedError, match=f"pid {holder.pid} on "):
            project_lock(two, "run", "riverbed run")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the server ends the session as soon as it reads the closed socket
        try:
            project_lock(two, "run", "riverbed run").release()
            break
        except RiverbedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
