"""PostgreSQL as the warehouse, by DSN, through psycopg 3.

The connection runs in autocommit mode, so a statement outside :meth:`transaction` commits on
its own; inside it, psycopg's transaction block issues BEGIN and COMMIT (ROLLBACK on error).
The session time zone is UTC, like DuckDB's, so both warehouses return the same instants.
Bulk loads stream CSV produced by pyarrow through ``COPY ... FROM STDIN``, chunk by chunk.

A read-only warehouse (``riverbed query``) cannot trust a session default: the SQL it is given
could switch ``default_transaction_read_only`` off itself. So each query runs alone in a
``BEGIN READ ONLY`` transaction that is always rolled back, and is sent by the extended query
protocol, whose Parse message the server refuses to hold more than one statement.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any, cast

import psycopg
import psycopg.types.string
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError

# defined in sqlglot.tokenizer_core since sqlglot 30, and imported by tokens for older callers
from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

from riverbed.errors import dsn_display, first_line, missing_database, transient_connect
from riverbed.load.warehouse import (
    DIALECTS,
    READ_ONLY_HINT,
    STREAM_BATCH_ROWS,
    QueryStopped,
    Rows,
    WarehouseError,
    load_columns,
    loadable_chunks,
    not_one_statement,
    sql_text,
    statement_head,
)

_COUNTED = "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)"
# stale statistics: rows changed since the last ANALYZE past this share of the table plus this
# many rows (autovacuum_analyze_scale_factor and autovacuum_analyze_threshold's defaults)
STALE_SHARE = 0.1
STALE_ROWS = 50
# numeric's precision and scale and a string type's length are part of its name here, as in
# DuckDB's: the loader widens a column whose source type outgrew them (model.holding_type)
_COLUMNS = (
    "SELECT column_name, CASE"
    " WHEN data_type = 'numeric' AND numeric_precision IS NOT NULL"
    " THEN format('numeric(%%s,%%s)', numeric_precision, numeric_scale)"
    " WHEN character_maximum_length IS NOT NULL"
    " THEN format('%%s(%%s)', data_type, character_maximum_length)"
    " ELSE data_type END"
    " FROM information_schema.columns WHERE table_name = %s"
    " AND table_schema = current_schema() AND table_catalog = current_database()"
    " ORDER BY ordinal_position"
)
# Arrow types of the PostgreSQL types a warehouse query returns (by type OID); other types
# are inferred from the values.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    19: pa.string(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
_TEXT_TYPES = {"text", "character varying", "character"}
# SQLSTATE classes worth a retry: connection exceptions, insufficient resources, operator
# intervention (e.g. admin shutdown); plus serialization failure and deadlock.
_TRANSIENT_CLASSES = ("08", "53", "57")
_TRANSIENT_STATES = {"40001", "40P01"}
# SQLSTATEs of a statement a read-only query may not run: a write (read_only_sql_transaction)
# and what cannot run inside a transaction block, e.g. VACUUM (active_sql_transaction)
_REFUSED_STATES = {"25006", "25001"}
_CANCELED = "57014"  # query_canceled: by a cancel request (interrupt) or statement_timeout
# rows fetched per network round trip when streaming: libpq 17's chunked rows mode, else one
_CHUNK_ROWS = STREAM_BATCH_ROWS if psycopg.pq.version() >= 170000 else 1
# memory for each sort and hash of the loader's statements (the server's default is 4MB). At
# 4MB the SCD2 plan's window sorts of a 100,000-change batch spill to disk (EXPLAIN ANALYZE:
# external merges of 25-30MB each, a dozen of them) and the fact append's key join splits
# into 16 batches, hashing the staged rows rather than the dimension. Only a loading
# (writable) session sets it; a read-only one (riverbed query) keeps the server's.
LOAD_WORK_MEM = "256MB"
# bytes a hash table spends per row beyond the row's width (PostgreSQL's tuple header, its
# alignment, the bucket): an estimate, to tell whether a join's hash fits in one batch
_HASH_ROW_OVERHEAD = 64
# plan nodes that emit their first (outer) child's rows in the order it emits them; a hash
# join only while its hash table fits in memory (more batches spill the outer rows too)
_STREAMING = {"ModifyTable", "Result", "Subquery Scan", "Nested Loop", "Hash Join"}


class PostgresWarehouse:
    name = "postgres"
    dialect = "postgres"
    has_indexes = DIALECTS[dialect].has_indexes  # True

    def __init__(self, dsn: str, password: str | None = None, *, read_only: bool = False):
        self.display = dsn_display(dsn, "warehouse.dsn")
        self._read_only = read_only
        extra: dict[str, str] = {"password": password} if password is not None else {}
        if read_only:
            options = _options(dsn)
            extra["options"] = f"{options} -c default_transaction_read_only=on".strip()
        try:
            self._conn = psycopg.connect(
                make_conninfo(dsn, **extra), autocommit=True, connect_timeout=10
            )
            self._conn.execute("SET TimeZone TO 'UTC'")
            if not read_only:
                self._conn.execute(f"SET work_mem TO '{LOAD_WORK_MEM}'")
        except psycopg.OperationalError as exc:
            database = missing_database(exc)
            if database is not None:  # the server is up and answered: say what is missing
                raise WarehouseError(
                    f'cannot connect to the warehouse {self.display}: database "{database}" '
                    f"does not exist on the server; create it (CREATE DATABASE {database}), or "
                    "fix the dbname in warehouse.dsn in riverbed.yaml"
                ) from exc
            raise WarehouseError(
                f"cannot connect to the warehouse {self.display}: {first_line(exc)}; "
                "check warehouse.dsn and warehouse.password, and that the server is up",
                transient=transient_connect(exc),
            ) from exc

    def execute(self, statement: exp.Expr | str) -> int:
        text = sql_text(statement, self.dialect)
        with self._translating(text), self._conn.cursor() as cur:
            cur.execute(text.encode())  # bytes: no client-side placeholder parsing
            return cur.rowcount

    def compact(self, tables: Sequence[str]) -> None:
        # VACUUM FULL writes each table anew and drops the old file with its dead tuples;
        # the connection is in autocommit, as VACUUM requires
        for table in tables:
            # (sqlglot has no VACUUM expression: the table's name is its quoted identifier)
            self.execute(f"VACUUM FULL {exp.to_identifier(table).sql(self.dialect)}")

    def query(self, statement: exp.Expr | str) -> pa.Table:
        text = sql_text(statement, self.dialect)
        if self._read_only:
            self._one_statement(text)
        with self._translating(text), self._reading(), self._conn.cursor() as cur:
            # prepare: the extended protocol, where the server refuses a second statement
            cur.execute(text.encode(), prepare=self._read_only or None)
            if self._read_only and cur.description is None:
                raise self._no_rows((cur.statusmessage or "").split(" ")[0], text, ran=True)
            rows = cur.fetchall()
            description = cur.description or []
        names = [column.name for column in description]
        arrays = [
            pa.array([row[i] for row in rows], _ARROW_TYPES.get(column.type_code))
            for i, column in enumerate(description)
        ]
        return pa.Table.from_arrays(arrays, names=names)

    @contextmanager
    def stream(self, statement: exp.Expr | str) -> Iterator[Rows]:
        text = sql_text(statement, self.dialect)
        if self._read_only:
            self._one_statement(text)
        with self._reading():
            with self._translating(text):
                columns = self._describe(text)
            if self._read_only and not columns:
                raise self._no_rows(text.split(None, 1)[0].upper(), text, ran=False)
            with self._conn.cursor() as cur:
                # intervals as the server writes them ("1 mon 2 days"): psycopg's timedelta
                # would turn a month into 30 days
                cur.adapters.register_loader("interval", psycopg.types.string.TextLoader)
                # a generator (typed Iterator): closing it cancels the query's rest
                rows = cast(Generator[Any], cur.stream(text.encode(), size=_CHUNK_ROWS))
                try:
                    yield Rows([name for name, _ in columns], self._batches(rows, columns, text))
                finally:
                    rows.close()

    def _describe(self, text: str) -> list[tuple[str, int]]:
        """The name and type OID of each column ``text`` returns, from the server's parse of
        it (without running it); none for a statement that returns no rows."""
        pgconn = self._conn.pgconn
        encoding = self._conn.info.encoding
        for result in (pgconn.prepare(b"", text.encode()), pgconn.describe_prepared(b"")):
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                raise psycopg.errors.error_from_result(result, encoding=encoding)
        return [
            ((result.fname(i) or b"").decode(encoding), result.ftype(i))
            for i in range(result.nfields)
        ]

    def _batches(
        self, rows: Iterator[Any], columns: list[tuple[str, int]], text: str
    ) -> Iterator[pa.RecordBatch]:
        with self._translating(text):
            while chunk := list(itertools.islice(rows, STREAM_BATCH_ROWS)):
                arrays = [
                    pa.array([row[i] for row in chunk], _ARROW_TYPES.get(oid))
                    for i, (_, oid) in enumerate(columns)
                ]
                yield pa.RecordBatch.from_arrays(arrays, names=[name for name, _ in columns])

    def interrupt(self) -> None:
        self._conn.cancel_safe(timeout=5)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise WarehouseError(f"warehouse {self.display}: a transaction is already open")
        with self._translating("BEGIN/COMMIT"), self._conn.transaction():
            yield

    def unordered(self) -> AbstractContextManager[None]:
        return nullcontext()  # inserts run on one backend either way

    def keeps_order(self, insert: exp.Expr | str, table: str) -> bool:
        # the rows land in load order, as on DuckDB (the fact's B-tree on the sort key then
        # takes them at its right edge): a plan that does not stream staging in order (a
        # hash of the staged rows, a join split into batches) is sorted by ctid
        text = f"EXPLAIN (FORMAT JSON) {sql_text(insert, self.dialect)}"
        try:
            with self._translating(text), self._conn.cursor() as cur:
                cur.execute(text.encode())
                found = cur.fetchone()
                cur.execute(
                    "SELECT pg_size_bytes(current_setting('work_mem'))"
                    " * current_setting('hash_mem_multiplier')::float8"
                )
                memory = cur.fetchone()
            if found is None:
                return False
            shown = found[0]
            plan = (json.loads(shown) if isinstance(shown, str) else shown)[0]["Plan"]
        except (WarehouseError, LookupError, TypeError, ValueError):
            return False  # a plan this server renders otherwise: sorting is right either way
        hash_memory = float(memory[0]) if memory else 0.0
        return _streams(plan, table, hash_memory) is True

    def load_arrow(self, table: str, rows: pa.Table) -> int:
        existing = self.columns(table)
        names = load_columns(table, rows.schema, existing)
        assert existing is not None
        text = [n for n in names if existing[n].split("(")[0] in _TEXT_TYPES]
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
        )
        loaded = 0
        with (
            self._translating(f"COPY {table}"),
            self._conn.cursor() as cur,
            cur.copy(copy) as sink,
        ):
            for chunk in loadable_chunks(rows, text):
                buffer = io.BytesIO()
                options = pcsv.WriteOptions(include_header=False, quoting_style="needed")
                pcsv.write_csv(_csv_ready(chunk), buffer, options)
                sink.write(buffer.getvalue())
                loaded += chunk.num_rows
        return loaded

    def columns(self, table: str) -> dict[str, str] | None:
        # a constant statement with a bound parameter: building it per call cost more than the
        # query (the loader asks about twenty times a run)
        with self._translating(_COLUMNS), self._conn.cursor() as cur:
            cur.execute(_COLUMNS, [table])
            return {name: kind for name, kind in cur.fetchall()} or None

    def analyze(self, table: str, *, changed: int | None = None) -> None:
        # a freshly truncated-and-loaded staging table otherwise looks empty or stale to the
        # planner, which then sorts a million rows for a merge join (measured: the fact
        # append 2.5x slower). A dimension just loaded in bulk: autovacuum gets to it within
        # a minute, and until then each small append hashes the whole dimension to look up
        # its keys (measured: 70 ms against 20 ms, 1,000 facts on 300,000 keys)
        if changed is not None:
            with self._translating(_COUNTED), self._conn.cursor() as cur:
                cur.execute(_COUNTED, [table])
                found = cur.fetchone()
            counted = float(found[0]) if found else 0.0  # -1: never analyzed
            if counted >= 0 and changed < STALE_SHARE * counted + STALE_ROWS:
                return
        self.execute(exp.Command(this="ANALYZE", expression=exp.to_identifier(table)))

    def close(self) -> None:
        self._conn.close()

    def _one_statement(self, text: str) -> None:
        """Refuse SQL of more than one statement before sending it, with a friendlier message
        than the server's; SQL the tokenizer cannot read is left to the server to judge."""
        try:
            tokens = Dialect.get_or_raise(self.dialect).tokenize(text)
        except SqlglotError:
            return
        count = len(_statements(tokens))
        if count != 1:
            raise not_one_statement(self.display, count)

    def _no_rows(self, command: str, text: str, *, ran: bool) -> WarehouseError:
        """The error for read-only SQL that is no query (e.g. REINDEX): its effect, if it
        ran, is rolled back, which the user should hear rather than read "0 rows" as success."""
        done = "what it did is undone" if ran else "it is not run"
        return WarehouseError(
            f"warehouse {self.display}: {command or 'the statement'} returns no rows and {done} "
            f"(running {statement_head(text)}); {READ_ONLY_HINT}"
        )

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """For a read-only warehouse, a READ ONLY transaction around the block, always rolled
        back: whatever the statement changes (a setting, the transaction's mode) goes with it."""
        if not self._read_only:
            yield
            return
        with self._translating("BEGIN READ ONLY"):
            self._conn.execute("BEGIN READ ONLY")
        try:
            yield
        finally:
            # a lost connection ends the transaction on the server just as well
            with suppress(psycopg.Error):
                self._conn.execute("ROLLBACK")

    @contextmanager
    def _translating(self, statement: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            state = exc.sqlstate or ""
            if state == _CANCELED:
                raise QueryStopped(f"warehouse {self.display}: {first_line(exc)}") from exc
            transient = (
                (isinstance(exc, psycopg.OperationalError) and not state)  # connection lost
                or state.startswith(_TRANSIENT_CLASSES)
                or state in _TRANSIENT_STATES
            )
            hint = f"; {READ_ONLY_HINT}" if self._read_only and state in _REFUSED_STATES else ""
            raise WarehouseError(
                f"warehouse {self.display}: {first_line(exc)} "
                f"(running {statement_head(statement)}){hint}",
                transient=transient,
            ) from exc


def _streams(node: dict[str, Any], table: str, hash_memory: float) -> bool | None:
    """In a PostgreSQL JSON plan: None if ``node`` does not read ``table``; True if it emits
    ``table``'s rows in the order it reads them (a plain scan of it, or _STREAMING nodes
    over one that take it as their outer child, a hash join's hash expected to fit in
    ``hash_memory`` bytes); False otherwise."""
    if node.get("Relation Name") == table:
        return node.get("Node Type") == "Seq Scan"
    children = node.get("Plans", [])
    found = [
        (child, result)
        for child in children
        if (result := _streams(child, table, hash_memory)) is not None
    ]
    if not found:
        return None
    child, result = found[0]
    if not result or node.get("Node Type") not in _STREAMING:
        return False
    if child.get("Parent Relationship") not in (None, "Outer", "Member"):
        return False
    if node.get("Node Type") == "Hash Join":
        inner = [c for c in children if c.get("Parent Relationship") == "Inner"]
        needed = sum(
            float(c.get("Plan Rows", 0)) * (float(c.get("Plan Width", 0)) + _HASH_ROW_OVERHEAD)
            for c in inner
        )
        return needed <= hash_memory
    return True


def _statements(tokens: list[Any]) -> list[list[Any]]:
    """The tokens of each statement, split at semicolons; empty statements dropped."""
    statements: list[list[Any]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [tokens for tokens in statements if tokens]


def _csv_ready(chunk: pa.Table) -> pa.Table:
    """Columns the CSV writer cannot render as PostgreSQL input, converted: binary to bytea's
    hex text form (``\\x0a1b``)."""
    for index, field in enumerate(chunk.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            values: list[Any] = chunk.column(index).to_pylist()
            hexed = pa.array([None if v is None else "\\x" + v.hex() for v in values], pa.string())
            chunk = chunk.set_column(index, pa.field(field.name, pa.string()), hexed)
        elif pa.types.is_dictionary(field.type):
            chunk = chunk.set_column(
                index, field.name, pc.cast(chunk.column(index), field.type.value_type)
            )
    return chunk


def _options(dsn: str) -> str:
    """The DSN's own ``options`` (server settings), kept when we add ours."""
    try:
        return str(conninfo_to_dict(dsn).get("options") or "")
    except psycopg.ProgrammingError:
        return ""
