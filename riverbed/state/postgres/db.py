"""One PostgreSQL connection shared by the threads of one process, and its transactions: the
Database of riverbed.state.sql over PostgreSQL (state.engine: postgres).

As with SQLite (riverbed.state.sqlite.db), one lock guards reads as well as writes, since a
connection shows its own uncommitted rows, and a write joins the transaction its thread has
open. What SQLite's BEGIN IMMEDIATE gave for free, one writer at a time across every process,
is here a transaction-level advisory lock every write transaction takes first
(``pg_advisory_xact_lock``, keyed by the store's schema): a read-then-write of the
repositories (the audit chain's head, a run's next event number, an alarm evaluation, the
project's capture name) sees no other writer's rows in between, on however many hosts. Reads
take no lock (MVCC); ``snapshot`` reads at REPEATABLE READ.

The connection is in autocommit between transactions; a connection that broke (the server
restarted, the network went) is opened again before the next statement, and the error of the
statement that found it broken is transient, so a follower retries.

The repositories' ``?`` and ``:name`` placeholders become psycopg's ``%s`` and ``%(name)s``
(``translated``). Sums of bigint columns come back as int, not Decimal, as SQLite gives them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.adapt import Loader

from riverbed.errors import RiverbedError, dsn_display, first_line, transient_connect
from riverbed.state.postgres.schema import advisory_key, ddl, pg_types
from riverbed.state.sql.database import StateStoreFull

# a ``?``, a ``:name`` (not a ``::`` cast) or a literal ``%``
_PLACEHOLDER = re.compile(r"\?|(?<![:\w]):([A-Za-z_]\w*)|%")
WRITER_LOCK = "writer"


@lru_cache(maxsize=512)
def translated(query: str) -> str:
    """``query`` with its SQLite placeholders in psycopg's words."""

    def one(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "?":
            return "%s"
        if found == "%":
            return "%%"
        return f"%({match.group(1)})s"

    return _PLACEHOLDER.sub(one, query)


class _NumericLoader(Loader):
    """numeric as int when whole (``sum`` of a bigint column), else float."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _Translating:
    """The connection as the repositories use it: sqlite3's ``execute`` and ``executemany``."""

    def __init__(self, conn: psycopg.Connection[Any]):
        self._conn = conn

    def execute(self, query: str, params: Any = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(translated(query), params)

    def executemany(self, query: str, params: Iterable[Any]) -> psycopg.Cursor[Any]:
        cursor = self._conn.cursor()
        rows = list(params)
        if rows:
            cursor.executemany(translated(query), rows)
        return cursor


class Database:
    """The connection to ``conninfo`` (password included), its lock, and the depth of the
    transaction the lock's owner has open; the store's tables in ``schema``, created on
    first use from the repositories' SQLite ``schema_sql``."""

    def __init__(self, conninfo: str, schema: str, schema_sql: str):
        self.conninfo = conninfo
        self.schema = schema
        self.display = dsn_display(conninfo, "state.dsn")
        self._writer = advisory_key(schema, WRITER_LOCK)
        self._lock = threading.RLock()
        self._depth = 0  # of the open transaction; only the lock's owner reads or writes it
        self._conn = self._connect()
        self._create(ddl(schema_sql))

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise RiverbedError(
                f"cannot connect to the state store {self.display}: {first_line(exc)}; check "
                "state.dsn and state.password in riverbed.yaml, and that the server is up",
                transient=transient_connect(exc),
            ) from exc
        conn.adapters.register_loader("numeric", _NumericLoader)
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(self.schema)))
        return conn

    def _create(self, statements: list[str]) -> None:
        """The schema and its tables, where missing, under the writer lock (two hosts opening a
        new store at once would otherwise both create them, and one would fail)."""
        create = sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema))
        try:
            with self.write() as db:
                db.execute(create.as_string(self._conn))
                for statement in statements:
                    db.execute(statement)
        except errors.InsufficientPrivilege as exc:
            raise RiverbedError(
                f"state.schema {self.schema}: cannot create the state store's tables in "
                f"{self.display} ({first_line(exc)}); create the schema for the user of "
                f"state.dsn (CREATE SCHEMA {self.schema} AUTHORIZATION <user>), or name one "
                "it may create tables in"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def read(self) -> Iterator[_Translating]:
        """The connection, for reads, while no other thread is inside a transaction."""
        with self._lock, self._translating():
            self._reconnect()
            yield _Translating(self._conn)

    @contextmanager
    def snapshot(self) -> Iterator[_Translating]:
        """The connection, for several reads that see the store as of one moment (REPEATABLE
        READ), under the lock. Inside this thread's write transaction, that transaction is the
        moment."""
        with self._lock, self._translating():
            if self._depth:
                yield _Translating(self._conn)
                return
            self._reconnect()
            with self._conn.transaction():
                self._conn.execute("set transaction isolation level repeatable read read only")
                yield _Translating(self._conn)

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.read() as db:
            return db.execute(query, params).fetchall()

    def row(self, query: str, params: Sequence[Any] = ()) -> Any:
        with self.read() as db:
            return db.execute(query, params).fetchone()

    @contextmanager
    def write(self) -> Iterator[_Translating]:
        """One write transaction, holding the writer lock, or the one this thread has open:
        what it writes becomes durable with the outermost one, or not at all."""
        with self._lock, self._translating():
            if self._depth:
                self._depth += 1
                try:
                    yield _Translating(self._conn)
                finally:
                    self._depth -= 1
                return
            self._reconnect()
            self._depth = 1
            try:
                with self._conn.transaction():
                    self._conn.execute("select pg_advisory_xact_lock(%s)", (self._writer,))
                    yield _Translating(self._conn)
            finally:
                self._depth = 0

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Give a table created by an earlier release the ``columns`` it lacks."""
        with self.write() as db:
            for column, kind in columns.items():
                db.execute(
                    f"alter table {table} add column if not exists {column} {pg_types(kind)}"
                )

    def json_number(self, column: str, *path: str) -> str:
        return f"(({column})::jsonb #>> '{{{','.join(path)}}}')::double precision"

    def compact(self) -> None:
        """Rewrite every table of the store (VACUUM FULL, outside a transaction) so deleted
        values leave no dead tuples behind."""
        with self._lock, self._translating():
            self._reconnect()
            tables = self._conn.execute(
                "select tablename from pg_tables where schemaname = %s", (self.schema,)
            ).fetchall()
            for (table,) in tables:
                name = sql.Identifier(self.schema, table)
                self._conn.execute(sql.SQL("vacuum full {}").format(name))

    def _reconnect(self) -> None:
        """A fresh connection in place of one that broke (only between transactions)."""
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()

    @contextmanager
    def _translating(self) -> Iterator[None]:
        """A statement that failed because the server's disk is full, or the connection was
        lost, as one RiverbedError naming state.dsn (transient: a follower retries)."""
        try:
            yield
        except errors.DiskFull as exc:
            raise StateStoreFull(
                f"state.dsn {self.display}: the server has no space left ({first_line(exc)}); "
                "free space on the PostgreSQL server of the state store"
            ) from exc
        except psycopg.OperationalError as exc:
            if not (self._conn.closed or self._conn.broken):
                raise
            raise RiverbedError(
                f"the state store {self.display} went away ({first_line(exc)}); check that "
                "the server is up",
                transient=True,
            ) from exc
