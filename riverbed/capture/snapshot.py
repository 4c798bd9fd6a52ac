"""The initial snapshot: every captured table copied from the snapshot the slot exported.

When the slot is created it exports a snapshot that sees exactly the transactions committed
before the slot's consistent point; the stream then delivers exactly the transactions committed
after it. Each copy worker imports that snapshot (SET TRANSACTION SNAPSHOT) in its own REPEATABLE
READ transaction, so snapshot and stream meet with nothing lost and nothing doubled, even while
the source keeps writing. Tables are copied in parallel; each streams COPY's CSV through Arrow's
incremental CSV reader into Parquet in bounded memory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from riverbed.capture.changes import CDC_FIELDS, TableSchema, partition_of
from riverbed.capture.pgtypes import PgColumn, UnrepresentableValue, to_arrow
from riverbed.lake.manifest import LakeFile
from riverbed.lake.parquet import COMPRESSION, ROW_GROUP_ROWS, CountingSink
from riverbed.lake.storage import LakeStorage
from riverbed.source.connection import Source

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
    """The table's columns as the stream's Relation message will describe them."""
    rows = conn.execute(
        "select a.attname, a.atttypid, a.atttypmod, tn.nspname || '.' || t.typname,"
        " coalesce(a.attnum = any(i.indkey), false)"
        " from pg_attribute a join pg_type t on t.oid = a.atttypid"
        " join pg_namespace tn on tn.oid = t.typnamespace"
        " left join pg_index i on i.indrelid = a.attrelid and i.indisprimary"
        " where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped"
        " order by a.attnum",
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
) -> list[TableCopy]:
    """Copy ``tables`` in parallel from ``point``; ``on_table_done`` commits each table to the
    manifest once all of its chunks are written (from this thread, one table at a time)."""
    with source.connect(autocommit=True) as conn:
        chunks = [c for t in tables for c in _plan(conn, schema, t, workers)]
    # the biggest pieces first, so the parallel copy finishes as early as it can
    chunks.sort(key=lambda c: -c.size)
    pending = {t: sum(1 for c in chunks if c.table == t) for t in tables}
    files: dict[str, list[LakeFile]] = {t: [] for t in tables}
    layouts: dict[str, TableSchema] = {}
    done: list[TableCopy] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapshot") as pool:
        futures = {
            pool.submit(
                copy_table,
                source,
                point,
                schema,
                c.table,
                storage,
                op=op,
                where=c.where,
                chunk=c.index,
            ): c
            for c in chunks
        }
        for future in as_completed(futures):
            chunk = futures[future]
            copy = future.result()
            files[chunk.table].extend(copy.files)
            layouts[chunk.table] = copy.schema
            pending[chunk.table] -= 1
            if not pending[chunk.table]:
                table_files = sorted(files[chunk.table], key=lambda f: f.path)
                result = TableCopy(
                    chunk.table, sum(f.rows for f in table_files), table_files, layouts[chunk.table]
                )
                on_table_done(result)
                done.append(result)
    return done


SPLIT_ROWS = 200_000  # tables bigger than this are copied as key ranges in parallel


def _plan(conn: Any, schema: str, table: str, workers: int) -> list[_Chunk]:
    """Split a big table with a single integer primary key into ``workers`` key ranges, so one
    large table does not leave the other workers idle. Ranges are open at both ends: the
    bounds come from outside the snapshot and must not miss a row."""
    row = conn.execute(
        "select c.reltuples::bigint, pg_relation_size(c.oid),"
        " (select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
        "   and a.attnum = i.indkey[0]"
        "   where i.indrelid = c.oid and i.indisprimary and i.indnkeyatts = 1"
        "   and a.atttypid in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype))"
        " from pg_class c where c.oid = %s::regclass",
        (f"{schema}.{table}",),
    ).fetchone()
    estimate, size, key = row or (0, 0, None)
    if workers < 2 or key is None or estimate < SPLIT_ROWS:
        return [_Chunk(table, 0, None, size)]
    column = sql.Identifier(key)
    low, high = conn.execute(
        sql.SQL("select min({k}), max({k}) from {t}").format(
            k=column, t=sql.Identifier(schema, table)
        )
    ).fetchone()
    if low is None or high - low < workers:
        return [_Chunk(table, 0, None, size)]
    bounds = [low + (high - low) * i // workers for i in range(1, workers)]
    chunks = []
    for i in range(workers):
        conditions = []
        if i > 0:
            conditions.append(sql.SQL("{} >= {}").format(column, sql.Literal(bounds[i - 1])))
        if i < workers - 1:
            conditions.append(sql.SQL("{} < {}").format(column, sql.Literal(bounds[i])))
        chunks.append(_Chunk(table, i, sql.SQL(" and ").join(conditions), size // workers))
    return chunks


def copy_table(
    source: Source,
    point: SnapshotPoint,
    schema: str,
    table: str,
    storage: LakeStorage,
    *,
    op: str,
    where: sql.Composable | None = None,
    chunk: int = 0,
) -> TableCopy:
    with source.connect(options=SESSION_SETTINGS) as conn:
        conn.execute("begin isolation level repeatable read read only")
        conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(point.name)))
        layout = table_schema(conn, schema, table)
        query = (
            sql.SQL("copy (select {} from {}{}) to stdout with (format csv)")
            .format(
                sql.SQL(", ").join(map(sql.Identifier, (c.name for c in layout.columns))),
                sql.Identifier(schema, table),
                sql.SQL(" where ") + where if where is not None else sql.SQL(""),
            )
            .as_string(conn)
        )
        conn.rollback()
    files = _copy_through_pipe(source, point, query, layout, storage, op, chunk)
    return TableCopy(table, sum(f.rows for f in files), files, layout)


def _copy_through_pipe(
    source: Source,
    point: SnapshotPoint,
    query: str,
    layout: TableSchema,
    storage: LakeStorage,
    op: str,
    chunk: int,
) -> list[LakeFile]:
    """COPY ... TO STDOUT into a pipe (psycopg2's copy loop runs in C, a row at a time is
    cheap there), while Arrow's CSV reader parses the other end in blocks and the rows go to
    Parquet: the table streams through in bounded memory, never as a whole."""
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with (
                os.fdopen(write_end, "wb") as sink,
                psycopg2.connect(source.conninfo(options=SESSION_SETTINGS)) as conn,
            ):
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with conn.cursor() as cur:
                    cur.execute("set transaction snapshot %s", (point.name,))
                    cur.copy_expert(query, sink, size=1 << 20)
                conn.rollback()
        except BrokenPipeError:
            pass  # the reader gave up first; its error is the one to report
        except BaseException as exc:
            failure.append(exc)

    producer = threading.Thread(target=produce, name=f"copy-{layout.table}")
    producer.start()
    names = [c.name for c in layout.columns]
    try:
        with os.fdopen(read_end, "rb") as pipe:
            try:
                reader = pacsv.open_csv(
                    pipe,
                    read_options=pacsv.ReadOptions(
                        column_names=names, block_size=4 << 20, use_threads=False
                    ),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types={n: pa.string() for n in names},
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                        null_values=[""],
                    ),
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV" not in str(exc) or failure:
                    raise
                return []  # an empty table: nothing to write
            return _write_files(storage, layout, point, op, reader, chunk)
    finally:
        producer.join()
        if failure:
            raise failure[0]


def _write_files(
    storage: LakeStorage,
    layout: TableSchema,
    point: SnapshotPoint,
    op: str,
    reader: Any,
    chunk: int,
) -> list[LakeFile]:
    """Write the rows into files of up to ROWS_PER_FILE rows each. ``_seq`` numbers rows from
    chunk << 40, unique within the table's snapshot."""
    partition = partition_of(point.ts_us)
    files: list[LakeFile] = []
    seq = chunk << 40
    batch = _next(reader)
    while batch is not None:
        path = f"raw/{layout.table}/{partition}/snapshot_{point.lsn:016X}_{chunk:02d}_{len(files):04d}.parquet"
        rows = 0
        with storage.open_atomic(path) as sink:
            counter = CountingSink(sink)
            typed = _typed(batch, layout, point, op, seq)
            with pq.ParquetWriter(counter, typed.schema, compression=COMPRESSION) as writer:
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
                path,
                "raw",
                layout.table,
                rows,
                counter.written,
                point.lsn,
                point.lsn,
                layout.version,
                True,
            )
        )
    return files


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
    for column, strings in zip(layout.columns, batch.columns, strict=True):
        try:
            array = to_arrow(column, strings)
        except UnrepresentableValue:
            array = to_arrow(column, strings, as_string=True)
        arrays.append(array)
        fields.append(pa.field(column.name, array.type))
    n = batch.num_rows
    cdc = [
        pa.array([op] * n, pa.string()),
        pa.array(np.full(n, point.ts_us, dtype=np.int64), pa.timestamp("us", tz="UTC")),
        pa.array(np.full(n, point.lsn, dtype=np.int64), pa.int64()),
        pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64), pa.int64()),
        pa.nulls(n, pa.int64()),
        pa.nulls(n, pa.list_(pa.string())),
    ]
    return pa.Table.from_arrays(arrays + cdc, schema=pa.schema(fields + CDC_FIELDS))
