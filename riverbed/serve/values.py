"""Query result values as every output writes them: `riverbed query --format csv|json`, the
web app's tables, the JSON API and CSV exports, so one value reads the same everywhere.

A value becomes what JSON holds (``plain``); a CSV cell is bare for numbers, booleans and NULL
(empty) and quoted for everything else, nested values as JSON text (``csv_cell``);
``write_csv`` and ``write_json`` stream record batches as they come.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded by whoever has rows; the command line starts without it
    import pyarrow as pa


def plain(value: Any) -> Any:
    """A query result value as JSON holds it, the same in every format: a non-finite float as
    the string "NaN", "Infinity" or "-Infinity" (bare, they break every strict JSON parser),
    bytes as bytea's hex form, an interval as PostgreSQL writes it, lists and structs (maps)
    as JSON arrays and objects, timestamps, dates, times and decimals as their text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, tuple):
        import pyarrow as pa  # loaded already: the rows came through it

        if isinstance(value, pa.MonthDayNano):  # a named tuple: before the lists
            return interval_text(value.months, value.days, value.nanoseconds)
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def interval_text(months: int, days: int, nanoseconds: int) -> str:
    """An interval as PostgreSQL writes it: ``1 year 2 mons 3 days 04:05:06.5``."""
    parts = []
    years, mons = divmod(abs(months), 12)
    sign = -1 if months < 0 else 1
    for count, unit in ((sign * years, "year"), (sign * mons, "mon"), (days, "day")):
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")  # "-1 days", as PG
    if nanoseconds or not parts:
        seconds, micros = divmod(abs(nanoseconds) // 1000, 1_000_000)
        hours, rest = divmod(seconds, 3600)
        clock = f"{'-' if nanoseconds < 0 else ''}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        parts.append(clock + (f".{micros:06d}".rstrip("0") if micros else ""))
    return " ".join(parts)


def cell_text(value: Any) -> str | None:
    """A value's text in a CSV cell or a table: None for NULL; nested values as JSON text."""
    value = plain(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, allow_nan=False)
    return str(value)


def csv_cell(value: Any) -> str:
    # bare: numbers, booleans, NULL (empty); quoted: everything else, as pyarrow's writer did
    if value is None:
        return ""
    if _number(value):
        return str(value)
    text = cell_text(value)
    if isinstance(value, bool) or text is None:
        return text or ""
    return '"' + text.replace('"', '""') + '"'


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, (int, float)) and math.isfinite(value)


def batch_columns(batch: pa.RecordBatch) -> list[list[Any]]:
    return [column.to_pylist(maps_as_pydicts="lossy") for column in batch.columns]


def write_csv(names: list[str], batches: Iterator[pa.RecordBatch], out: IO[str]) -> None:
    """A header line, then each batch's rows as it comes."""
    out.write(",".join(csv_cell(name) for name in names) + "\n")
    for batch in batches:
        out.write(
            "".join(",".join(map(csv_cell, row)) + "\n" for row in zip(*batch_columns(batch)))
        )
        out.flush()  # a batch's rows reach a pipe now, not when its buffer fills


def write_json(names: list[str], batches: Iterator[pa.RecordBatch], out: IO[str]) -> None:
    """One JSON array of objects, written element by element as the batches come."""
    out.write("[")
    separator = ""
    for batch in batches:
        for row in zip(*batch_columns(batch)):
            record = {name: plain(value) for name, value in zip(names, row, strict=True)}
            out.write(separator + json.dumps(record, allow_nan=False))
            separator = ", "
        out.flush()
    out.write("]\n")
