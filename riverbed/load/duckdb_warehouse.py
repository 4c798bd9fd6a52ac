"""DuckDB: the default warehouse, one local file, in process.

Read-only (``riverbed query``), the file refuses writes, but SQL could still write other files
(``COPY ... TO``, ``EXPORT DATABASE``), attach another database or install an extension. So a
read-only warehouse also turns external access off and locks the configuration, which no
statement can undo, and runs exactly one statement, as counted by DuckDB's own parser.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from riverbed.errors import first_line
from riverbed.load import duckdb_gate
from riverbed.load.warehouse import (
    DIALECTS,
    READ_ONLY_HINT,
    STREAM_BATCH_ROWS,
    QueryStopped,
    Rows,
    WarehouseBusy,
    WarehouseError,
    load_columns,
    loadable_chunks,
    not_one_statement,
    sql_text,
    statement_head,
)
from riverbed.private import FILE_MODE, private_folders

_COLUMNS = (
    "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?"
    " AND schema_name = current_schema() AND database_name = current_database()"
    " ORDER BY column_index"
)
LOCK_WAIT_SECONDS = 15.0  # how long an open waits for another process to let go of the file
_CONFIGURING = threading.Lock()  # one open at a time configures (and locks) a shared instance


def _connect(path: Path, read_only: bool, lock_wait: float) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting up to ``lock_wait`` seconds while another process has it open:
    DuckDB lets one process write a file and none read it meanwhile, so a `riverbed query` and
    a run's load step each wait for the other's short hold instead of failing. A reader also
    waits while a writer has taken its turn (duckdb_gate; the writer's open takes it first).
    Past the wait, WarehouseBusy."""
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            if read_only and not duckdb_gate.open_to_readers(path):
                raise duckdb.IOException("lock: a writer is waiting for the file (duckdb_gate)")
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() > deadline:
                raise _busy(path) from exc
            time.sleep(0.1)


def _busy(path: Path) -> WarehouseBusy:
    return WarehouseBusy(
        f"warehouse {path}: another process holds the file (a load, most likely); "
        "try again in a few seconds",
        transient=True,
    )


class DuckDBWarehouse:
    name = "duckdb"
    dialect = "duckdb"
    has_indexes = DIALECTS[dialect].has_indexes  # False: scans use zone maps

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        memory_limit: str | None = None,
        lock_wait: float = LOCK_WAIT_SECONDS,
    ):
        self.path = path
        self._read_only = read_only
        if read_only and not path.exists():
            raise WarehouseError(
                f"warehouse {path} does not exist yet; load something first (`riverbed run`) "
                "or fix warehouse.path"
            )
        self._gated = False  # this open holds the writer's turn (duckdb_gate)
        try:
            if not read_only:
                private_folders(path.parent)
                started = time.monotonic()
                self._gated = duckdb_gate.enter(path, lock_wait)
                if not self._gated:
                    raise _busy(path)
                lock_wait = max(0.0, lock_wait - (time.monotonic() - started))
            with _CONFIGURING:
                self._db = _connect(path, read_only, lock_wait)
                if not read_only:
                    # DuckDB refuses an empty file made for it: tighten the one it made, before
                    # anything is written into it (its .wal: riverbed.private)
                    path.chmod(FILE_MODE)
                if not self._locked():
                    self._configure(read_only, memory_limit)
        except OSError as exc:
            self._leave_gate()
            raise WarehouseError(
                f"warehouse {path}: cannot create its folder ({exc.strerror}); "
                "fix warehouse.path or the folder's permissions"
            ) from exc
        except duckdb.Error as exc:
            self._leave_gate()
            raise self._translate(exc, "opening the file") from exc
        except BaseException:
            self._leave_gate()
            raise
        self._in_transaction = False
        self._interrupted = False

    def _locked(self) -> bool:
        """An earlier read-only open in this process configured and locked the instance."""
        rows = self._db.execute("SELECT current_setting('lock_configuration')").fetchall()
        return bool(rows and rows[0][0])

    def _configure(self, read_only: bool, memory_limit: str | None) -> None:
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")  # every later connection's too
        self._db.execute("SET enable_progress_bar = false")  # stdout belongs to --json
        if memory_limit is not None:  # a size checked by the config model
            self._db.execute(f"SET memory_limit = '{memory_limit}'")
        if read_only:
            self._db.execute("SET enable_external_access = false")
            self._db.execute("SET lock_configuration = true")  # last: no SET after it

    def execute(self, statement: exp.Expr | str) -> int:
        text = sql_text(statement, self.dialect)
        with self._translating(text):
            result = self._db.execute(text)
            count = result.rowcount
            if count == -1 and result.description and result.description[0][0] == "Count":
                row = result.fetchone()  # DML reports its row count as a one-row result
                count = int(row[0]) if row else -1
            return int(count)

    def query(self, statement: exp.Expr | str) -> pa.Table:
        text = sql_text(statement, self.dialect)
        if self._read_only:
            self._one_statement(text)
        with self._translating(text):
            relation = self._db.sql(text)  # a relation streams into Arrow without a copy
            return relation.to_arrow_table() if relation is not None else pa.table({})

    @contextmanager
    def stream(self, statement: exp.Expr | str) -> Iterator[Rows]:
        text = sql_text(statement, self.dialect)
        if self._read_only:
            self._one_statement(text)
        with self._streaming(text):
            relation = self._db.sql(text)
            # executes up to the first batch; the rest as it is read
            reader = None if relation is None else relation.to_arrow_reader(STREAM_BATCH_ROWS)
        if reader is None:  # a statement without a result
            yield Rows([], iter(()))
            return
        try:
            yield Rows(list(reader.schema.names), self._batches(reader, text))
        finally:
            reader.close()  # stops a query not read to its end

    def _batches(self, reader: pa.RecordBatchReader, text: str) -> Iterator[pa.RecordBatch]:
        with self._streaming(text):
            yield from reader

    @contextmanager
    def _streaming(self, text: str) -> Iterator[None]:
        """DuckDB's errors while a query streams, as ours: the reader reports them as Arrow's
        (OSError) and an interrupted start as a RuntimeError, each with DuckDB's text."""
        try:
            yield
        except (duckdb.Error, OSError, RuntimeError, pa.ArrowException) as exc:
            first = first_line(exc)
            if self._interrupted or "interrupt" in first.lower():
                raise QueryStopped(f"warehouse {self.path}: {first}") from exc
            if isinstance(exc, duckdb.Error):
                raise self._translate(exc, f"running {statement_head(text)}") from exc
            raise WarehouseError(
                f"warehouse {self.path}: {first} (running {statement_head(text)})"
            ) from exc

    def interrupt(self) -> None:
        self._interrupted = True
        self._db.interrupt()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:
            raise WarehouseError(f"warehouse {self.path}: a transaction is already open")
        with self._translating("BEGIN"):
            self._db.begin()
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            with suppress(duckdb.Error):  # the original error is the one worth reporting
                self._db.rollback()
            raise
        self._in_transaction = False
        with self._translating("COMMIT"):
            self._db.commit()

    @contextmanager
    def unordered(self) -> Iterator[None]:
        # DuckDB keeps a SELECT's row order into the table by default, which serialises an
        # insert fed by a join (a hash join is not order-preserving). Parallel, each thread
        # still inserts whole scan morsels, contiguous ranges of the source, so zone maps on
        # a source in load order stay as tight.
        with self._translating("SET preserve_insertion_order = false"):
            self._db.execute("SET preserve_insertion_order = false")
        try:
            yield
        finally:
            with suppress(duckdb.Error):
                self._db.execute("RESET preserve_insertion_order")

    def keeps_order(self, insert: exp.Expr | str, table: str) -> bool:
        # DuckDB hashes the smaller side of a join, by its estimates: for a batch far smaller
        # than its dimension, the staged rows, which then come out in the dimension's order
        # (measured: 300,000 facts against a 4M-key dimension, every other row out of order)
        text = f"EXPLAIN (FORMAT json) {sql_text(insert, self.dialect)}"
        try:
            plan = json.loads(self.query(text).column("explain_value")[0].as_py())
        except (WarehouseError, KeyError, IndexError, ValueError):
            return False  # a plan this DuckDB renders otherwise: sorting is right either way
        return all(_streams(node, table) is not False for node in plan)

    def load_arrow(self, table: str, rows: pa.Table) -> int:
        existing = self.columns(table)
        names = load_columns(table, rows.schema, existing)
        assert existing is not None
        text = [n for n in names if existing[n].upper() == "VARCHAR"]
        view = f"_riverbed_load_{uuid.uuid4().hex[:12]}"
        target = exp.Schema(
            this=exp.to_table(table), expressions=[exp.to_identifier(n, quoted=True) for n in names]
        )
        source = exp.select(*(exp.column(n, quoted=True) for n in names)).from_(view)
        statement = exp.Insert(this=target, expression=source).sql(dialect=self.dialect)
        # nothing to convert: one statement over the whole table, which DuckDB scans in place
        # on every thread and writes as whole row groups (measured: 1M staged fact rows in
        # 0.28 s, against 0.7 s in statements of LOAD_CHUNK_ROWS, each scanned by one thread)
        converts = any(
            pa.types.is_list(rows.schema.field(n).type)
            or pa.types.is_large_list(rows.schema.field(n).type)
            for n in text
        )
        loaded = 0
        for chunk in loadable_chunks(rows, text) if converts else [rows]:
            with self._translating(statement):
                self._db.register(view, chunk)
                try:
                    self._db.execute(statement)
                finally:
                    # in a transaction the failed insert aborted, unregistering fails too, and
                    # its "transaction is aborted" would hide what the insert said
                    with suppress(duckdb.Error):
                        self._db.unregister(view)
            loaded += chunk.num_rows
        return loaded

    def columns(self, table: str) -> dict[str, str] | None:
        # duckdb_columns(), not information_schema (the same names and types, measured equal
        # on every warehouse table): a third of the time, and the loader asks about twenty
        # times a run
        with self._translating(_COLUMNS):
            rows = self._db.execute(_COLUMNS, [table]).fetchall()
        return {name: kind for name, kind in rows} or None

    def analyze(self, _table: str, *, changed: int | None = None) -> None:
        if changed is not None:
            return  # DuckDB keeps its statistics as rows go in; only deletes wait (below)
        # DuckDB counts a table's rows by its row groups, deleted rows included until a
        # checkpoint vacuums them: a staging table truncated after a big batch still looks
        # that big to the planner, which then hashes the whole dimension to look up the keys
        # of a thousand staged rows, not the other way round (measured: a third of such an
        # append). The checkpoint writes what the load left in the WAL: a few ms.
        assert not self._in_transaction, "analyze runs once the load's transaction committed"
        with suppress(duckdb.TransactionException):  # another connection's open transaction
            self._db.execute("CHECKPOINT")

    def compact(self, tables: Sequence[str]) -> None:
        """DuckDB keeps freed blocks with their old bytes (CHECKPOINT and VACUUM reuse them,
        never wipe them: measured, an updated value stays in the file), so the whole
        database is copied into a fresh file (COPY FROM DATABASE: tables, views, and only
        the live rows) that replaces the old one by a rename. A kill leaves the old file or
        the new one, whole, and at most a stray copy the next compaction removes."""
        del tables  # the file is one: every table is copied
        assert not self._read_only and not self._in_transaction
        fresh = self.path.with_name(self.path.name + ".compact")
        for stray in (fresh, fresh.with_name(fresh.name + ".wal")):
            stray.unlink(missing_ok=True)
        with self._translating("COPY FROM DATABASE"):
            self._db.execute("CHECKPOINT")
            (current,) = self._db.execute("SELECT current_database()").fetchone() or ("",)
            quoted = str(fresh).replace("'", "''")
            self._db.execute(f"ATTACH '{quoted}' AS riverbed_compact")
            try:
                self._db.execute(f'COPY FROM DATABASE "{current}" TO riverbed_compact')
            finally:
                self._db.execute("DETACH riverbed_compact")
        self._db.close()
        fresh.chmod(FILE_MODE)
        os.replace(fresh, self.path)
        self._db = _connect(self.path, False, LOCK_WAIT_SECONDS)
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute("SET enable_progress_bar = false")

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._leave_gate()

    def _leave_gate(self) -> None:
        if self._gated:
            self._gated = False
            duckdb_gate.leave(self.path)

    def _one_statement(self, text: str) -> None:
        """Refuse SQL of more than one statement: the Python API runs them all, not just the
        last one whose rows it returns."""
        with self._translating(text):
            count = len(self._db.extract_statements(text))
        if count != 1:
            raise not_one_statement(str(self.path), count)

    @contextmanager
    def _translating(self, statement: str) -> Iterator[None]:
        try:
            yield
        except duckdb.Error as exc:
            raise self._translate(exc, f"running {statement_head(statement)}") from exc

    def _translate(self, exc: duckdb.Error, doing: str) -> WarehouseError:
        first = first_line(exc)
        if isinstance(exc, duckdb.InterruptException):
            return QueryStopped(f"warehouse {self.path}: {first} ({doing})")
        hint = f"; {READ_ONLY_HINT}" if self._read_only and _refused(exc) else ""
        # IOException: the file, the disk or a lock held by another process; a transaction
        # conflict with another writer succeeds when retried
        transient = isinstance(exc, duckdb.IOException) or (
            isinstance(exc, duckdb.TransactionException) and "conflict" in first.lower()
        )
        return WarehouseError(
            f"warehouse {self.path}: {first} ({doing}){hint}", transient=transient
        )


def _refused(exc: duckdb.Error) -> bool:
    """Whether ``exc`` refused a statement a read-only query may not run: a write to the file,
    a file or extension outside it, or a setting."""
    first = first_line(exc)
    return isinstance(exc, duckdb.PermissionException) or (
        isinstance(exc, duckdb.InvalidInputException)
        and ("read-only mode" in first or "configuration has been locked" in first)
    )


# operators that emit their (first) input's rows in the order they come
_STREAMING = {"INSERT", "BATCH_INSERT", "PROJECTION", "FILTER", "HASH_JOIN"}


def _streams(node: dict[str, Any], table: str) -> bool | None:
    """In a DuckDB JSON plan: None if ``node`` does not read ``table``; True if it emits
    ``table``'s rows in the order it reads them (a scan of it, or streaming operators over
    one, joins taking it as the probe side, their first child); False otherwise."""
    info = node.get("extra_info") or {}
    if isinstance(info, dict) and str(info.get("Table", "")).split(".")[-1] == table:
        return True
    found = [
        (index, result)
        for index, child in enumerate(node.get("children", []))
        if (result := _streams(child, table)) is not None
    ]
    if not found:
        return None
    index, result = found[0]
    return bool(result) and index == 0 and node.get("name") in _STREAMING
