"""One process at a time for a piece of work: an advisory lock file held for its lifetime.

The kernel drops the lock when the holder dies (kill -9 included), so a stale lock file never
blocks anyone; the pid written into it only names the holder in the refusal.

A lock file is one machine's. A project whose state store is PostgreSQL may run its capture,
its pipeline and its web app on several hosts; its locks are then advisory locks of that
server (riverbed.state.postgres.lock), which refuse a second taker on any host the same way.
``project_lock`` takes whichever the project's state.engine calls for.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from riverbed.config.loader import Project
from riverbed.errors import RiverbedError
from riverbed.private import open_private, private_folders


class ProcessLock:
    """``refusal(pid)``, when given, words the error for a lock someone else holds."""

    def __init__(self, path: Path, what: str, refusal: Callable[[str], str] | None = None):
        try:
            private_folders(path.parent)
            self.handle = open_private(path, "a+")  # held until release()
        except OSError as exc:  # a project folder the user cannot write, a full disk
            raise RiverbedError(
                f"cannot write the lock file {path} ({exc.strerror or exc}); make its folder "
                "(beside riverbed.yaml) writable, with space to spare"
            ) from exc
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise RiverbedError((refusal or _refusal(what))(holder)) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        self.handle.close()

    def __enter__(self) -> ProcessLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refusal(what: str) -> Callable[[str], str]:
    def refusal(holder: str) -> str:
        return (
            f"another `{what}` (pid {holder}) is running for this project; "
            "wait for it, or stop it first (Ctrl-C or SIGTERM)"
        )

    return refusal


class Lock(Protocol):
    def release(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...


def project_lock(
    project: Project, name: str, what: str, refusal: Callable[[str], str] | None = None
) -> Lock:
    """The project's lock ``name`` (run, transform, load, capture-<slot>) for ``what``: the
    file ``<name>.lock`` in the project's folder, or with the state store in PostgreSQL that
    server's advisory lock of the name, which a process on another host holds as well."""
    state = project.config.state
    if state.engine == "postgres":
        from riverbed.state import advisory_lock

        lock: Lock = advisory_lock(state, name, refusal or _refusal(what))
        return lock
    return ProcessLock(project.home / f"{name}.lock", what, refusal)


@contextmanager
def every_run_lock(project: Project) -> Iterator[None]:
    """Every lock a run or one of its stages holds (run, transform, load), for work that must
    not fall between a run's transform and its load: withdrawn or rewritten there, batches
    would be missing from that load, which then publishes without them."""
    with (
        project_lock(project, "run", "riverbed run"),
        project_lock(project, "transform", "riverbed run"),
        project_lock(project, "load", "riverbed run (load)"),
    ):
        yield
