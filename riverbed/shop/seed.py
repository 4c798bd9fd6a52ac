"""Loading generated history into the source database through COPY.

Generation (numpy + Arrow's CSV writer, which release the GIL) runs in a producer thread while
the main thread streams the previous chunk into PostgreSQL with COPY, so on two cores the
generator and the server's COPY work at the same time. The queue between them is bounded, so
memory stays at a few months of history whatever the size.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from riverbed.errors import RiverbedError
from riverbed.shop import schema
from riverbed.shop.history import HistoryGenerator, HistorySpec

_CSV = pacsv.WriteOptions(include_header=False, batch_size=65_536)
_DONE = object()


class AlreadySeeded(RiverbedError):
    """The shop schema already holds data."""


@dataclass(frozen=True)
class SeedResult:
    rows: dict[str, int]
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def to_csv(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, _CSV)
    return sink.getvalue()


def copy_csv(conn: psycopg.Connection[Any], schema_name: str, table: str, payload: bytes) -> None:
    """COPY one CSV chunk into ``schema.table`` with the shop's column order."""
    columns = schema.COLUMNS[table][0]
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(
        sql.Identifier(schema_name, table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        view = memoryview(payload)
        for start in range(0, len(view), 1 << 20):
            copy.write(view[start : start + (1 << 20)])


def seed(
    conn: psycopg.Connection[Any],
    spec: HistorySpec,
    *,
    reset: bool = False,
    schema_name: str = schema.SCHEMA,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SeedResult:
    """Create the shop schema and load ``spec``'s history. ``on_progress(table, rows, orders)``.

    Runs in one transaction: an interrupted seed leaves no half-loaded schema behind.
    """
    import time

    started = time.perf_counter()
    counts = schema.seeded_counts(conn, schema_name)
    if counts is not None and not reset:
        summary = ", ".join(f"{n:,} {t}" for t, n in counts.items()) or "no tables"
        raise AlreadySeeded(
            f"schema {schema_name} is already seeded ({summary}); "
            "pass --reset to drop it and seed again"
        )
    rows = {table: 0 for table in schema.TABLES}
    with conn.transaction():
        if counts is not None:
            schema.drop_schema(conn, schema_name)
        schema.create_tables(conn, schema_name)
        for table, payload, n in _produce(HistoryGenerator(spec)):
            copy_csv(conn, schema_name, table, payload)
            rows[table] += n
            if on_progress:
                on_progress(table, n, rows["orders"])
        if on_progress:
            on_progress("constraints", 0, rows["orders"])
        schema.add_constraints(conn, schema_name)
    return SeedResult(rows, time.perf_counter() - started)


def _produce(generator: HistoryGenerator) -> Any:
    """Iterate ``(table, csv_bytes, rows)`` made in a background thread, two chunks ahead."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=3)
    failure: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            for table, arrow_table in generator.chunks():
                if stop.is_set():
                    return
                chunks.put((table, to_csv(arrow_table), arrow_table.num_rows))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            failure.append(exc)
        finally:
            chunks.put(_DONE)

    thread = threading.Thread(target=work, name="shop-history", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                chunks.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def table_checksums(
    conn: psycopg.Connection[Any], schema_name: str = schema.SCHEMA
) -> dict[str, str]:
    """md5 of every row's text form in primary-key order, per table: equal iff contents equal."""
    result = {}
    for table, (_, key) in schema.COLUMNS.items():
        row = conn.execute(
            sql.SQL(
                "select md5(coalesce(string_agg(t::text, E'\\n' order by {key}), '')) from {table} t"
            ).format(key=sql.Identifier(key), table=sql.Identifier(schema_name, table))
        ).fetchone()
        result[table] = row[0] if row else ""
    return result
