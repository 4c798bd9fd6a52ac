"""What the repositories of riverbed.state.sql need of a database: a connection shared by the
threads of one process behind a lock, transactions that a thread's later writes join, and the
few things the two engines say differently.

The repositories write one SQL both SQLite and PostgreSQL run: ``?`` and ``:name``
placeholders (PostgreSQL's Database translates them), upserts as ``insert ... on conflict``
(``upsert`` writes them), no ``rowid`` but where a table's schema gives PostgreSQL one
(riverbed.state.postgres.schema). What cannot be written once is asked of the database:
``json_number`` for a number inside a JSON text column, ``compact`` for rewriting the store
without the blocks deleted values sat in, ``add_columns`` for a store an earlier release made.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from riverbed.errors import ErrorClass, RiverbedError


class StateStoreFull(RiverbedError):
    """The state store's disk is full: transient, a follower waits for room."""

    error_class = ErrorClass.TRANSIENT


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class Connection(Protocol):
    def execute(self, query: str, params: Any = ..., /) -> Any: ...
    def executemany(self, query: str, params: Iterable[Any], /) -> Any: ...


class Database(Protocol):
    def read(self) -> AbstractContextManager[Connection]:
        """The connection, for reads, while no other thread is inside a transaction."""
        ...

    def snapshot(self) -> AbstractContextManager[Connection]:
        """The connection, for several reads that see the store as of one moment."""
        ...

    def write(self) -> AbstractContextManager[Connection]:
        """One write transaction, or the one this thread has open."""
        ...

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]: ...
    def row(self, query: str, params: Sequence[Any] = ()) -> Any: ...
    def add_columns(self, table: str, columns: dict[str, str]) -> None: ...
    def json_number(self, column: str, *path: str) -> str:
        """An SQL expression: the number at ``path`` in the JSON text ``column`` (or null)."""
        ...

    def compact(self) -> None: ...
    def close(self) -> None: ...


class SharedConnection:
    """One connection shared by the threads of one process: the lock that guards reads as well
    as writes (a connection shows its own uncommitted rows, and a read from another thread in
    the middle of a transaction would see rows that may yet be rolled back), and the depth of
    the transaction the lock's owner has open, which a write of the same thread joins.

    An engine gives ``_connection`` (the connection, opened again if it was lost),
    ``_transaction`` (one transaction on it, for writing or for reading as of one moment) and
    ``_errors`` (its failures as RiverbedErrors that name the store and the fix)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # of the open transaction; only the lock's owner reads or writes it

    def _connection(self) -> Any:
        raise NotImplementedError

    def _transaction(self, write: bool) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _errors(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    @contextmanager
    def read(self) -> Iterator[Any]:
        """The connection, for reads, while no other thread is inside a transaction."""
        with self._lock, self._errors():
            yield self._connection()

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """The connection, for several reads that see the store as of one moment (a read
        transaction: another process's commits in between stay out), under the lock. Inside
        this thread's write transaction, that transaction is the moment."""
        with self._lock, self._errors():
            if self._depth:
                yield self._connection()
                return
            with self._transaction(write=False) as conn:
                yield conn

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row ``query`` reads, under the lock (read)."""
        with self.read() as db:
            return list(db.execute(query, params).fetchall())

    def row(self, query: str, params: Sequence[Any] = ()) -> Any:
        """The first row ``query`` reads (None when there is none), under the lock (read)."""
        with self.read() as db:
            return db.execute(query, params).fetchone()

    @contextmanager
    def write(self) -> Iterator[Any]:
        """One write transaction, or the one this thread has open: what it writes becomes
        durable with the outermost one, or not at all."""
        with self._lock, self._errors():
            if self._depth:
                self._depth += 1
                try:
                    yield self._connection()
                finally:
                    self._depth -= 1
                return
            try:
                with self._transaction(write=True) as conn:
                    self._depth = 1
                    yield conn
            finally:
                self._depth = 0


def upsert(
    table: str, columns: Sequence[str], key: Sequence[str], values: str | None = None
) -> str:
    """``insert into table (columns) values (values)``, a row with the same ``key`` replaced
    by the new one (SQLite's ``insert or replace``, which PostgreSQL lacks). ``values``: the
    placeholders, a ``?`` a column without it."""
    rest = [c for c in columns if c not in key]
    action = (
        "do update set " + ", ".join(f"{c} = excluded.{c}" for c in rest) if rest else "do nothing"
    )
    return (
        f"insert into {table} ({', '.join(columns)}) values ({values or ', '.join('?' * len(columns))})"
        f" on conflict ({', '.join(key)}) {action}"
    )
