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

import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.adapt import Loader

from riverbed.errors import RiverbedError, dsn_display, first_line, transient_connect
from riverbed.state.postgres.schema import advisory_key, ddl, pg_types
from riverbed.state.sql.database import SharedConnection, StateStoreFull

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


class Database(SharedConnection):
    """The connection to ``conninfo`` (password included), its lock, and the depth of the
    transaction the lock's owner has open (riverbed.state.sql.database.SharedConnection); the
    store's tables in ``schema``, created on first use from the repositories' SQLite
    ``schema_sql``."""

    def __init__(self, conninfo: str, schema: str, schema_sql: str):
        super().__init__()
        self.conninfo = conninfo
        self.schema = schema
        self.display = dsn_display(conninfo, "state.dsn")
        self._writer = advisory_key(schema, WRITER_LOCK)
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
        new store at once would otherwise both create them, and one would fail). Done once per
        release's tables: their digest, recorded with them, is all a later open reads, so
        opening a store (each /metrics scrape does) takes no lock."""
        digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()
        try:
            if self.row("select 1 from schema_digests where digest = ?", (digest,)):
                return
        except errors.UndefinedTable:  # a new store: not even its schema
            pass
        create = sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema))
        try:
            with self.write() as db:
                db.execute(create.as_string(self._conn))
                for statement in statements:
                    db.execute(statement)
                db.execute("create table if not exists schema_digests (digest text primary key)")
                db.execute(
                    "insert into schema_digests (digest) values (?) on conflict do nothing",
                    (digest,),
                )
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

    def _connection(self) -> _Translating:
        """The connection, a fresh one in place of one that broke (only between
        transactions: inside one, the error goes to the writer)."""
        if not self._depth and (self._conn.closed or self._conn.broken):
            self._conn = self._connect()
        return _Translating(self._conn)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[_Translating]:
        """A write transaction holds the writer lock; a read one reads as of one moment."""
        conn = self._connection()
        with self._conn.transaction():
            if write:
                self._conn.execute("select pg_advisory_xact_lock(%s)", (self._writer,))
            else:
                self._conn.execute("set transaction isolation level repeatable read read only")
            yield conn

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Give a table created by an earlier release the ``columns`` it lacks (looked up
        first: ALTER TABLE locks the table even when it changes nothing)."""
        present = {
            r[0]
            for r in self.rows(
                "select column_name from information_schema.columns"
                " where table_schema = ? and table_name = ?",
                (self.schema, table),
            )
        }
        missing = {c: kind for c, kind in columns.items() if c not in present}
        if not missing:
            return
        with self.write() as db:
            for column, kind in missing.items():
                db.execute(
                    f"alter table {table} add column if not exists {column} {pg_types(kind)}"
                )

    def json_number(self, column: str, *path: str) -> str:
        return f"(({column})::jsonb #>> '{{{','.join(path)}}}')::double precision"

    def compact(self) -> None:
        """Rewrite every table of the store (VACUUM FULL, outside a transaction) so deleted
        values leave no dead tuples behind."""
        with self._lock, self._errors():
            self._connection()
            tables = self._conn.execute(
                "select tablename from pg_tables where schemaname = %s", (self.schema,)
            ).fetchall()
            for (table,) in tables:
                name = sql.Identifier(self.schema, table)
                self._conn.execute(sql.SQL("vacuum full {}").format(name))

    @contextmanager
    def _errors(self) -> Iterator[None]:
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
