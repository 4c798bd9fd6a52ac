"""One SQLite connection shared by the threads of one process, and its transactions.

The file is in WAL mode with synchronous=FULL: a commit is durable when it returns. Threads
share the connection (the snapshot's copy threads, the scheduled runs beside `capture
--follow` in the demo), so one lock guards reads as well as writes: SQLite shows a connection
its own uncommitted rows, and a read from another thread in the middle of a transaction would
see rows that may yet be rolled back.

A write joins the transaction its thread already has open, so repositories commit together
what a stage makes visible at once (``with store.transaction(): ...``) and alone otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from riverbed.errors import RiverbedError, first_line
from riverbed.private import private_file
from riverbed.state.sql.database import SharedConnection, StateStoreFull


class Database(SharedConnection):
    """The connection to the file at ``path``, its lock, and the depth of the transaction the
    lock's owner has open (riverbed.state.sql.database.SharedConnection)."""

    def __init__(self, path: Path, schema: str):
        super().__init__()
        private_file(path)  # SQLite gives its -wal and -shm the database file's mode
        self.path = path
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("pragma journal_mode = wal")
        self._conn.execute("pragma synchronous = full")
        self._conn.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _connection(self) -> sqlite3.Connection:
        return self._conn

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        if not write:
            self._conn.execute("begin")
            try:
                yield self._conn
            finally:
                self._conn.execute("commit")
            return
        self._conn.execute("begin immediate")
        try:
            yield self._conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed commit rolled back already
                self._conn.execute("rollback")
            raise
        self._conn.execute("commit")

    def _errors(self) -> AbstractContextManager[None]:
        return _translating(self.path)

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Give a table created by an earlier release the ``columns`` (name -> type) it lacks;
        a process opening the store at the same time may add them first."""
        for column, kind in columns.items():
            if column in self._columns(table):
                continue
            try:
                self._conn.execute(f"alter table {table} add column {column} {kind}")
            except sqlite3.OperationalError:
                if column not in self._columns(table):
                    raise

    def json_number(self, column: str, *path: str) -> str:
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def compact(self) -> None:
        """Rewrite the file without its free pages (VACUUM), and empty its WAL."""
        with self.read() as db:
            db.execute("vacuum")
            db.execute("pragma wal_checkpoint(truncate)")

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self._conn.execute(f"pragma table_info({table})")}


def disk_full(exc: BaseException, path: Path) -> StateStoreFull | None:
    """The error to raise for ``exc`` if it means the state store's disk is full, else None.
    SQLite says "database or disk is full", or, when the WAL cannot even be created, only
    "disk I/O error": then the free space decides."""
    text = first_line(exc)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = (
        getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        or "database or disk is full" in text
        or ("disk I/O error" in text and free is not None and free < 1_000_000)
    )
    if not full:
        return None
    room = f" ({free / 1e6:,.1f} MB free)" if free is not None else ""
    return StateStoreFull(
        f"state.path {path}: no space left on the device{room}; free space there or move "
        "state.path to a larger disk"
    )


@contextmanager
def _translating(path: Path) -> Iterator[None]:
    """A write to the state store that failed because its disk is full or read-only, or its
    file cannot be written, as one RiverbedError naming state.path and the fix."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        full = disk_full(exc, path)
        if full is not None:
            raise full from exc
        text = first_line(exc)
        if "readonly" in text or "unable to open" in text or "disk I/O error" in text:
            raise RiverbedError(
                f"state.path {path}: cannot write the state store ({text}); the file and its "
                "folder must be writable, on a file system mounted read-write"
            ) from exc
        raise
