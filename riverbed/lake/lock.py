"""One process at a time for a piece of work: an advisory lock file held for its lifetime.

The kernel drops the lock when the holder dies (kill -9 included), so a stale lock file never
blocks anyone; the pid written into it only names the holder in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
            raise RiverbedError(
                refusal(holder)
                if refusal is not None
                else f"another `{what}` (pid {holder}) is running for this project; "
                "wait for it, or stop it first (Ctrl-C or SIGTERM)"
            ) from None
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


@contextmanager
def every_run_lock(home: Path) -> Iterator[None]:
    """Every lock a run or one of its stages holds (run, transform, load), for work that must
    not fall between a run's transform and its load: withdrawn or rewritten there, batches
    would be missing from that load, which then publishes without them."""
    with (
        ProcessLock(home / "run.lock", "riverbed run"),
        ProcessLock(home / "transform.lock", "riverbed run"),
        ProcessLock(home / "load.lock", "riverbed run (load)"),
    ):
        yield
