"""A writer's turn at a DuckDB warehouse file that readers never stop taking.

DuckDB lets a file be open either by readers (any number of processes, read-only) or by one
writer, and an open that finds the other kind waits (duckdb_warehouse._connect polls). With
many readers in turn (the web app's live charts and query API under concurrent clients) some
reader nearly always holds the file, and a run's load, polling for a moment when none does,
waited out its 15 s and failed, again and again: pages blocked the load.

So the writer goes first: before it opens the file it takes an exclusive ``flock`` on
``<warehouse>.gate`` (made 0600 beside it) and keeps it until it closes the file. A reader
probes the gate shared and non-blocking before each open and lets go at once: while a writer
holds it, no new reader gets in (it waits and, past its own wait, is busy: the web app's 503);
readers already in finish their queries and the writer's open then succeeds. A reader holds
the gate for microseconds, so the writer's polling takes it at once. A killed writer's lock
dies with its process. Within one process the gate is taken once per file and counted, so a
process's own opens never wait on itself (DuckDB shares one instance per file in a process).
Without the file (no writer has run yet) there is nothing to wait for.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from riverbed.private import FILE_MODE

POLL_SECONDS = 0.005  # a writer's retries: readers hold the gate for microseconds
_HELD: dict[Path, tuple[int, int]] = {}  # a file's gate this process holds: (fd, writers)
_LOCK = threading.Lock()


def gate_of(path: Path) -> Path:
    return path.with_name(path.name + ".gate")


def enter(path: Path, wait: float) -> bool:
    """Take the writer's turn at ``path`` within ``wait`` seconds; False when readers kept
    it (then DuckDB's own lock would refuse the writer too). The process-wide lock is held per
    try, not across the wait: the process's readers and writers go on meanwhile."""
    key = path.resolve()
    deadline = time.monotonic() + wait
    descriptor = os.open(gate_of(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        while True:
            with _LOCK:
                held = _HELD.get(key)
                if held is not None:  # another writer of this process has it: share its turn
                    _HELD[key] = (held[0], held[1] + 1)
                    return True
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    _HELD[key] = (descriptor, 1)
                    descriptor = -1  # kept open: its flock is the turn
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)
    finally:
        if descriptor >= 0:
            os.close(descriptor)


def leave(path: Path) -> None:
    """Give back a turn ``enter`` gave; the last of this process's writers opens the gate."""
    key = path.resolve()
    with _LOCK:
        held = _HELD.pop(key, None)
        if held is None:
            return
        if held[1] > 1:
            _HELD[key] = (held[0], held[1] - 1)
            return
        os.close(held[0])  # closing the descriptor releases its flock


def open_to_readers(path: Path) -> bool:
    """No writer of another process wants or holds ``path``: a reader may open it now."""
    key = path.resolve()
    with _LOCK:
        if key in _HELD:
            return True
    try:
        descriptor = os.open(gate_of(key), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)  # a probe only: the shared lock ends here
    return True
