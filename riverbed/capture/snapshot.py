"""The initial snapshot: every captured table copied from the snapshot the slot exported.

When the slot is created it exports a snapshot that sees exactly the transactions committed
before the slot's consistent point; the stream then delivers exactly the transactions committed
at or after it. Each copy worker imports that snapshot (SET TRANSACTION SNAPSHOT) in its own
REPEATABLE READ transaction, so snapshot and stream meet with nothing lost and nothing doubled,
even while the source keeps writing. Tables are copied in parallel (big ones as page ranges), each
as binary COPY decoded into Arrow batches and written to Parquet in bounded memory.

Snapshot rows carry the consistent point as ``_lsn`` and a negative ``_seq``. The first streamed
transaction can commit exactly at the consistent point (its commit record starts where the record
that made the slot consistent ends), so its rows share that ``_lsn``; their ``_seq`` counts from
0, and the snapshot's must sort before them in the source order (``_lsn``, ``_seq``) that every
later stage reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql

from riverbed.capture.changes import TableSchema
from riverbed.errors import SourceError, first_line
from riverbed.lake.layout import snapshot_file_path, truncate_file_path
from riverbed.lake.parquet import ROW_GROUP_ROWS, CountingSink, write_table, writer_options
from riverbed.lake.pgbinary import unscaled_to_decimal
from riverbed.lake.pgtypes import PgColumn, PgOid, UnrepresentableValue, arrow_type, to_arrow
from riverbed.lake.schema import CDC_FIELDS
from riverbed.lake.storage import LakeStorage
from riverbed.source.connection import Source
from riverbed.state import LakeFile

FIRST_USER_OID = 16384  # types below this are built in; pgoutput names only user types
ROWS_PER_FILE = 1_000_000
SESSION_SETTINGS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3"
)


@dataclass(frozen=True)
class SnapshotPoint:
    name: str  # the exported snapshot's name
    lsn: int  # the slot's consistent point
    ts_us: int  # when it was taken (Unix microseconds), the _commit_ts of snapshot rows


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    files: list[LakeFile]
    schema: TableSchema


def table_schema(conn: Any, schema: str, table: str, version: int = 1) -> TableSchema:
    """The table's columns as the stream's Relation message will describe them.

    Its keys are those the stream takes (ChangeStream._relation): the primary key, else the
    replica identity, which pgoutput flags: the index's columns (USING INDEX) or every column
    (FULL). Marking them alike keeps the first streamed change from making a new schema version.

    VIRTUAL generated columns (PostgreSQL 18+, attgenerated 'v') are left out: they cannot be
    published, so the stream never carries them, and a snapshot that did would make the first
    streamed change a schema version without them (the warehouse then gets NULLs). Older
    servers only have '' and 's' (stored, published when asked: slot._publication_options).
    """
    rows = conn.execute(
        "select a.attname, a.atttypid, a.atttypmod, tn.nspname || '.' || t.typname,"
        " case when pk.indkey is not null then a.attnum = any(pk.indkey)"
        "  when c.relreplident = 'f' then true"
        "  else coalesce(a.attnum = any(ri.indkey), false) end"
        " from pg_attribute a join pg_type t on t.oid = a.atttypid"
        " join pg_namespace tn on tn.oid = t.typnamespace"
        " join pg_class c on c.oid = a.attrelid"
        " left join pg_index pk on pk.indrelid = a.attrelid and pk.indisprimary"
        " left join pg_index ri on ri.indrelid = a.attrelid and ri.indisreplident"
        "  and c.relreplident = 'i'"
        " where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped"
        " and a.attgenerated <> 'v' order by a.attnum",
        (f"{schema}.{table}",),
    ).fetchall()
    columns = tuple(
        PgColumn(r[0], r[1], r[2], r[3] if r[1] >= FIRST_USER_OID else None) for r in rows
    )
    keys = tuple(i for i, r in enumerate(rows) if r[4])
    return TableSchema(table, version, columns, keys)


@dataclass(frozen=True)
class _Chunk:
    """One unit of copy work: a table, or a key range of a big one."""

    table: str
    index: int
    where: sql.Composable | None
    size: int


def copy_tables(
    source: Source,
    point: SnapshotPoint,
    schema: str,
    tables: list[str],
    storage: LakeStorage,
    *,
    workers: int,
    op: str,
    on_table_done: Callable[[TableCopy], None],
    versions: Mapping[str, int] | None = None,
) -> list[TableCopy]:
    """Copy ``tables`` in parallel from ``point``; ``on_table_done`` commits each table to the
    manifest once all of its chunks are written (from this thread, one table at a time).
    ``versions``: the schema version a table's copy gets, when it is not its first (1)."""
    with source.connect(options=SESSION_SETTINGS) as conn:
        conn.execute("begin isolation level repeatable read read only")
        conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(point.name)))
        layouts = {t: table_schema(conn, schema, t, (versions or {}).get(t, 1)) for t in tables}
        chunks = [c for t in tables for c in _plan(conn, schema, t, workers)]
        conn.rollback()
    # the biggest pieces first, so the parallel copy finishes as early as it can
    chunks.sort(key=lambda c: -c.size)
    pending = {t: sum(1 for c in chunks if c.table == t) for t in tables}
    files: dict[str, list[LakeFile]] = {t: [] for t in tables}
    done: list[TableCopy] = []
    with (
        _PerThread(source) as connections,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapshot") as pool,
    ):
        futures = {
            pool.submit(copy_chunk, connections, point, schema, layouts[c.table], storage, op, c): c
            for c in chunks
        }
        for future in as_completed(futures):
            chunk = futures[future]
            files[chunk.table].extend(future.result())
            pending[chunk.table] -= 1
            if not pending[chunk.table]:
                table_files = sorted(files[chunk.table], key=lambda f: f.path)
                result = TableCopy(
                    chunk.table, sum(f.rows for f in table_files), table_files, layouts[chunk.table]
                )
                on_table_done(result)
                done.append(result)
    return done


class _PerThread:
    """One source connection per copy worker, reused for all of its chunks: the driver reads
    the server's type catalogue on connect, which costs more than copying a small table."""

    def __init__(self, source: Source):
        self.source = source
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = adbc.connect(self.source.conninfo(options=SESSION_SETTINGS), autocommit=True)
            except adbc.Error as exc:
                raise SourceError(
                    f"snapshot: cannot connect to {self.source.display}: {first_line(exc)}"
                ) from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._all.remove(conn)
            conn.close()

    def __enter__(self) -> _PerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._all:
            conn.close()


SNAPSHOT_SEQ = -(1 << 62)  # first _seq of a snapshot; streamed rows count from 0 (module doc)
SPLIT_ROWS = 200_000  # tables bigger than this are copied as page ranges in parallel


def _plan(conn: Any, schema: str, table: str, workers: int) -> list[_Chunk]:
    """Split a big table into ``workers`` ranges of its pages (ctid), so one large table does not
    leave the other workers idle. A TID range scan (PostgreSQL 14+) reads only its own pages,
    where a key range would have each worker scan the whole table. The first and last ranges are
    open: the table may grow after we count its pages, and no row may be missed."""
    row = conn.execute(
        "select c.reltuples::bigint, pg_relation_size(c.oid),"
        " current_setting('block_size')::int, c.relkind = 'p',"
        " (select coalesce(sum(pg_relation_size(p.relid)), 0)::bigint"
        "  from pg_partition_tree(c.oid) p)"
        " from pg_class c where c.oid = %s::regclass",
        (f"{schema}.{table}",),
    ).fetchone()
    estimate, size, block, partitioned, tree_size = row or (0, 0, 8192, False, 0)
    if partitioned:
        # A partitioned table has no pages of its own (its size is 0) and its ctids repeat
        # across partitions, so a page range would mean nothing: one chunk, the whole table,
        # which reads every partition. Its partitions' size orders it among the chunks.
        return [_Chunk(table, 0, None, tree_size)]
    pages = size // block
    if workers < 2 or estimate < SPLIT_ROWS or pages < workers:
        return [_Chunk(table, 0, None, size)]
    bounds = [pages * i // workers for i in range(1, workers)]
    chunks = []
    for i in range(workers):
        conditions = []
        if i > 0:
            conditions.append(
                sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({bounds[i - 1]},0)"))
            )
        if i < workers - 1:
            conditions.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({bounds[i]},0)")))
        chunks.append(_Chunk(table, i, sql.SQL(" and ").join(conditions), size // workers))
    return chunks


def copy_chunk(
    connections: _PerThread,
    point: SnapshotPoint,
    schema: str,
    layout: TableSchema,
    storage: LakeStorage,
    op: str,
    chunk: _Chunk,
) -> list[LakeFile]:
    """Copy one chunk (a table, or a page range of one) into Parquet files; returns them."""
    as_text: set[str] = set()
    while True:
        query = _select(layout, schema, chunk.where, as_text)
        written: list[LakeFile] = []
        try:
            with _binary_copy(connections.get(), point, query) as reader:
                _write_files(storage, layout, point, op, reader, chunk.index, written)
        except _NeedsText as redo:
            # A value outside what Arrow's native type holds (e.g. 'infinity'): copy the chunk
            # again with that column as PostgreSQL's text, as the stream would carry it.
            as_text.update(redo.columns)
        except (OSError, adbc.Error) as exc:
            if isinstance(exc, OSError) and "[libpq]" not in str(exc):
                raise  # the lake's, not the source's
            if "cannot convert NaN" not in str(exc):
                raise SourceError(
                    f"snapshot of {schema}.{layout.table}: {first_line(exc)}"
                ) from exc
            # 'NaN' in a numeric column selected as a scaled integer: take those as text
            as_text.update(c.name for c in layout.columns if _scaled(c) is not None)
        else:
            return written
        connections.discard()  # mid-COPY, its transaction is in no state to reuse
        for file in written:
            storage.delete(file.path)


# Columns of these types arrive in COPY's binary form and land as Arrow's native type with no
# conversion on our side; every other column is selected as its text (::text), which is what the
# stream carries for it too, and converted by to_arrow exactly as the stream's values are.
_NATIVE = frozenset(
    {
        PgOid.BOOL,
        PgOid.BYTEA,
        PgOid.INT2,
        PgOid.INT4,
        PgOid.INT8,
        PgOid.FLOAT4,
        PgOid.FLOAT8,
        PgOid.DATE,
        PgOid.TIME,
        PgOid.TIMESTAMP,
        PgOid.TIMESTAMPTZ,
    }
)


def _scaled(column: PgColumn) -> int | None:
    """The scale of a numeric column whose values fit an int64 once multiplied by 10**scale.

    Such a column is selected as that integer (exact: its values have at most ``scale``
    decimals and at most 18 digits) and becomes the decimal without parsing any text.
    """
    target = arrow_type(column)
    if column.type_oid != PgOid.NUMERIC or not pa.types.is_decimal128(target):
        return None
    return target.scale if target.precision <= 18 else None


def _select(
    layout: TableSchema, schema: str, where: sql.Composable | None, as_text: set[str]
) -> str:
    columns: list[sql.Composable] = []
    for c in layout.columns:
        name = sql.Identifier(c.name)
        scale = _scaled(c)
        if c.name in as_text:
            columns.append(sql.SQL("{}::text").format(name))
        elif c.type_oid in _NATIVE:
            columns.append(name)
        elif scale is not None:
            columns.append(sql.SQL("({} * {})::int8").format(name, sql.Literal(10**scale)))
        elif c.type_oid == PgOid.BPCHAR:
            # ::text strips char(n)'s padding; the stream sends the output function's text
            columns.append(sql.SQL("textin(bpcharout({}))").format(name))
        else:
            columns.append(sql.SQL("{}::text").format(name))
    return (
        sql.SQL("select {} from {}{}")
        .format(
            sql.SQL(", ").join(columns),
            sql.Identifier(schema, layout.table),
            sql.SQL(" where ") + where if where is not None else sql.SQL(""),
        )
        .as_string(None)
    )


@contextmanager
def _binary_copy(conn: Any, point: SnapshotPoint, query: str) -> Iterator[pa.RecordBatchReader]:
    """The rows of ``query`` as of ``point``, streamed as Arrow record batches.

    The ADBC PostgreSQL driver runs the query as ``COPY ... TO STDOUT (FORMAT binary)`` and
    decodes it in C++ into batches of a few MB: no text formatting on the server, no per-row work
    in Python, bounded memory whatever the table's size.
    """
    with conn.cursor() as cur:
        cur.execute("begin isolation level repeatable read read only")
        cur.execute(f"set transaction snapshot '{point.name}'")
        cur.execute(query)
        yield cur.fetch_record_batch()
        cur.execute("rollback")


class _NeedsText(Exception):
    def __init__(self, *columns: str):
        super().__init__(*columns)
        self.columns = columns


def _write_files(
    storage: LakeStorage,
    layout: TableSchema,
    point: SnapshotPoint,
    op: str,
    reader: pa.RecordBatchReader,
    chunk: int,
    files: list[LakeFile],
) -> None:
    """Write the rows into files of up to ROWS_PER_FILE rows each, appending each to ``files``
    once written. ``_seq`` numbers rows from SNAPSHOT_SEQ + chunk << 40: unique within the
    table's snapshot, and below every streamed row's."""
    seq = SNAPSHOT_SEQ + (chunk << 40)
    batch = _next(reader)
    while batch is not None:
        path = snapshot_file_path(layout.table, point.ts_us, point.lsn, chunk, len(files))
        rows = 0
        with storage.open_atomic(path) as sink:
            counter = CountingSink(sink)
            typed = _typed(batch, layout, point, op, seq)
            with pq.ParquetWriter(
                counter, typed.schema, **writer_options(typed.schema, storage)
            ) as writer:
                while True:
                    writer.write_table(typed, row_group_size=ROW_GROUP_ROWS)
                    rows += typed.num_rows
                    seq += typed.num_rows
                    batch = _next(reader)
                    if batch is None or rows >= ROWS_PER_FILE:
                        break
                    typed = _typed(batch, layout, point, op, seq)
                    if typed.schema != writer.schema:  # a value forced a column to text
                        break
        files.append(
            LakeFile(
                path=path,
                stage="raw",
                table=layout.table,
                rows=rows,
                bytes=counter.written,
                min_lsn=point.lsn,
                max_lsn=point.lsn,
                schema_version=layout.version,
                full_load=True,
                min_commit_ts=point.ts_us,
                max_commit_ts=point.ts_us,
            )
        )


def truncate_file(storage: LakeStorage, layout: TableSchema, point: SnapshotPoint) -> LakeFile:
    """One T row (the table emptied) just before the snapshot rows of ``point``: what the lake
    records when a table it holds was dropped and created again, so that every later stage
    ends the old table's rows before the new table's copy begins."""
    empty = pa.RecordBatch.from_arrays(
        [pa.nulls(1, arrow_type(c)) for c in layout.columns], [c.name for c in layout.columns]
    )
    row = _typed(empty, layout, point, "T", SNAPSHOT_SEQ - 1)
    path = truncate_file_path(layout.table, point.ts_us, point.lsn)
    size = write_table(storage, path, row)
    return LakeFile(
        path=path,
        stage="raw",
        table=layout.table,
        rows=1,
        bytes=size,
        min_lsn=point.lsn,
        max_lsn=point.lsn,
        schema_version=layout.version,
        min_commit_ts=point.ts_us,
        max_commit_ts=point.ts_us,
    )


# The binary form of 'infinity' and of time '24:00' has no Arrow value: the driver wraps it around
# to something absurd. Real values never come near these bounds.
_MIN_TIMESTAMP_US = -(1 << 62)
_MIN_DATE_DAYS = -(1 << 30)
_MAX_TIME_US = 86_400_000_000 - 1


def _checked(column: PgColumn, values: pa.Array) -> pa.Array:
    if values.null_count == len(values):
        return values
    if pa.types.is_timestamp(values.type):
        bad = pc.min(values.cast(pa.int64())).as_py() < _MIN_TIMESTAMP_US
    elif pa.types.is_date32(values.type):
        bad = pc.min(values.cast(pa.int32())).as_py() < _MIN_DATE_DAYS
    elif pa.types.is_time64(values.type):
        bad = pc.max(values.cast(pa.int64())).as_py() > _MAX_TIME_US
    else:
        bad = False
    if bad:
        raise _NeedsText(column.name)
    return values


def _next(reader: Any) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _typed(
    batch: pa.RecordBatch, layout: TableSchema, point: SnapshotPoint, op: str, first_seq: int
) -> pa.Table:
    arrays = []
    fields = []
    for column, values in zip(layout.columns, batch.columns, strict=True):
        target = arrow_type(column)
        if values.type == target:
            array = _checked(column, values)
        elif values.type == pa.int64() and pa.types.is_decimal128(target):
            array = unscaled_to_decimal(values, target)
        else:
            try:
                array = to_arrow(column, values)
            except UnrepresentableValue:
                array = to_arrow(column, values, as_string=True)
        arrays.append(array)
        fields.append(pa.field(column.name, array.type))
    n = batch.num_rows
    cdc = [
        pa.repeat(pa.scalar(op, pa.string()), n),
        pa.array(np.full(n, point.ts_us, dtype=np.int64), pa.timestamp("us", tz="UTC")),
        pa.array(np.full(n, point.lsn, dtype=np.int64), pa.int64()),
        pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64), pa.int64()),
        pa.nulls(n, pa.int64()),
        pa.nulls(n, pa.list_(pa.string())),
    ]
    return pa.Table.from_arrays(arrays + cdc, schema=pa.schema(fields + CDC_FIELDS))
