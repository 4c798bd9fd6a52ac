"""The state store the read paths' audit records go to (riverbed.serve.queries): one per
project store and process, opened at the first record and shared by every thread after it.

Opening the store for each record cost more than the record: a SQLite open runs the schema's
``create ... if not exists`` script, and the close of the last connection checkpoints the
WAL, both on every dashboard call (an extract answer is a few milliseconds itself). The
stores are safe to share between threads (riverbed.state.sql.database.SharedConnection: one
lock, a write joins no other thread's transaction), so the web app's thread pool writes
through one, each record still its own committed, durable transaction, hash-chained as
before. Other processes (a run, `riverbed audit`, another server) append to the same chain as
they did: SQLite and PostgreSQL make the writers take turns.

A store kept open must still be the project's: one is opened again when the process forked
since (a connection is not the child's to use) and when the SQLite file it holds is not the
file at ``state.path`` any more (deleted or replaced: records written to it would be lost);
and a record that failed drops it, so the next one opens the store anew (a full disk freed,
a PostgreSQL server back). The app closes its project's store at shutdown (``close``), and
whatever a process still holds is closed at its exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from dataclasses import dataclass

from riverbed.config import Project
from riverbed.state import open_state
from riverbed.state.store import StateStore

Key = tuple[str, ...]


@dataclass(frozen=True)
class _Held:
    store: StateStore
    pid: int  # the process that opened it
    file: tuple[int, int] | None  # the SQLite file's (device, inode) when opened


_HELD: dict[Key, _Held] = {}
_LOCK = threading.Lock()


def audit_store(project: Project) -> StateStore:
    """The project's state store, shared by this process's threads (do not close it)."""
    key = _key(project)
    with _LOCK:
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid() and held.file == _file(project):
            return held.store
        # a forked parent's or a replaced file's: dropped, not closed (the parent's own, or
        # another thread may be inside a write on it, which fails or lands in the old file)
        store = open_state(project)
        _HELD[key] = _Held(store, os.getpid(), _file(project))
        return store


def discard(project: Project, store: StateStore) -> None:
    """Forget ``store`` (a write on it failed): the next record opens the store again."""
    with _LOCK:
        held = _HELD.get(_key(project))
        if held is not None and held.store is store:
            del _HELD[_key(project)]


def close(project: Project) -> None:
    """Close the project's shared store (the app's shutdown); a later record opens it again."""
    with _LOCK:
        held = _HELD.pop(_key(project), None)
    if held is not None and held.pid == os.getpid():
        with contextlib.suppress(Exception):  # shutting down: nothing left to tell
            held.store.close()


@atexit.register
def close_all() -> None:
    """Close every store this process holds."""
    with _LOCK:
        held = list(_HELD.values())
        _HELD.clear()
    for one in held:
        if one.pid == os.getpid():
            with contextlib.suppress(Exception):
                one.store.close()


def _key(project: Project) -> Key:
    state = project.config.state
    if state.engine == "postgres":
        return ("postgres", str(state.dsn), state.schema_name)
    return ("sqlite", str(project.path(state.path).resolve()))


def _file(project: Project) -> tuple[int, int] | None:
    state = project.config.state
    if state.engine == "postgres":
        return None
    try:
        found = os.stat(project.path(state.path))
    except OSError:  # gone: whatever is held writes to a deleted file
        return None
    return (found.st_dev, found.st_ino)
