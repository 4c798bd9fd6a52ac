"""DuckDB: the default transform engine, in process."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from riverbed.lake.parquet import dataset
from riverbed.transform.engine import DIALECT, TransformEngineError

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto


class DuckDBEngine:
    name = "duckdb"
    keeps_input_order = True  # in process, insertion order preserved (DuckDB's default)
    returns_reference_types = True  # its types are the reference

    def __init__(self, threads: int | None = None, memory_limit: str | None = None):
        # a connection of its own (its registered tables and temporary views are its own) to
        # the process's in-memory database of these settings: a new database each run cost
        # 15-30 ms, a run's fixed cost under `run --follow`
        self._db = shared_database(threads or None, memory_limit or None).cursor()
        self._db.execute("set TimeZone = 'UTC'")
        self._db.execute("set enable_progress_bar = false")  # stdout belongs to --json
        self._tables: dict[str, Any] = {}  # tables and datasets

    def register(self, name: str, table: pa.Table) -> None:
        self._tables[name] = table  # keep it alive: DuckDB scans it in place
        self._db.register(name, table)

    def register_files(
        self, name: str, paths: list[str], schema: pa.Schema, crypto: LakeCrypto | None = None
    ) -> None:
        if not paths:
            self.register(name, schema.empty_table())
            return
        if crypto is not None:
            # DuckDB cannot open files whose keys come from a KMS: pyarrow decrypts them, here,
            # whole. Handed the dataset to scan lazily, DuckDB's threads drove pyarrow's
            # decryption, whose key callbacks need the GIL, while the query held it waiting
            # on them: a run could hang (once in a CI run)
            with crypto.reading():
                files = dataset(paths, schema, crypto).to_table()
            self._tables[name] = files  # kept alive, as in register
            self._db.register(name, files)
            return
        relation = self._db.read_parquet(paths)
        relation.create_view(name, replace=True)

    def register_view(self, name: str, statement: exp.Expression) -> None:
        text = statement.sql(dialect=DIALECT)
        try:
            self._db.execute(f'create or replace temp view "{name}" as {text}')
        except duckdb.Error as exc:
            raise TransformEngineError(f"duckdb: {_one_line(exc)}") from exc

    def query(self, statement: exp.Expression) -> pa.Table:
        text = statement.sql(dialect=DIALECT)
        try:
            return self._db.sql(text).to_arrow_table()
        except duckdb.IOException as exc:
            raise TransformEngineError(f"duckdb: {_one_line(exc)}", transient=True) from exc
        except duckdb.Error as exc:
            raise TransformEngineError(f"duckdb: {_one_line(exc)}") from exc

    def close(self) -> None:
        self._db.close()


_DATABASES: dict[tuple[int | None, str | None], duckdb.DuckDBPyConnection] = {}
_DATABASES_LOCK = threading.Lock()


def shared_database(
    threads: int | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """The process's in-memory database of ``threads`` and ``memory_limit`` (settings of the
    database, not of a connection), made on first use: the engines of those settings, and the
    PII digests (riverbed.transform.pii), each work in a cursor of their own on it."""
    with _DATABASES_LOCK:
        db = _DATABASES.get((threads, memory_limit))
        if db is None:
            db = duckdb.connect(":memory:")
            if threads:
                db.execute(f"set threads = {int(threads)}")
            if memory_limit:
                db.execute("set memory_limit = ?", [memory_limit])
            _DATABASES[(threads, memory_limit)] = db
        return db


def _one_line(exc: duckdb.Error) -> str:
    """DuckDB's message on one line: its hint lines ("Candidate bindings: ...") joined to the
    first, the echo of the statement ("LINE 1: ..." and its carets) left out, so a run's
    error, its log line and `riverbed runs` stay one line each."""
    kept: list[str] = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept) or type(exc).__name__
