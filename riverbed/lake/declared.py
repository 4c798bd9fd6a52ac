"""Raw files read as the types their schema version declares.

Capture keeps one file's column as PostgreSQL's text when a value in it has no exact Arrow
equivalent ('infinity' in a timestamp, 'NaN' in a numeric(p, s), a BC date, time 24:00): the
lake never shows a wrong value. Read beside the files that hold the column typed, that text
would make the column text for every row, and every rule and load written for its real type
would fail on it, run after run, since the file stays in the lake. So a stage reads such a
column back as its declared type: each value that converts gets that type, each one that
does not becomes null, and its row comes back with the reason, for the stage to set aside.

Array columns are left as they are: a multi-dimensional array is kept as text on purpose
(see ``riverbed.lake.pgtypes``), and nothing compares arrays with typed values.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.lake.pgtypes import PgColumn, UnrepresentableValue, arrow_type, to_arrow
from riverbed.state import StateStore

Declared = dict[int, dict[str, PgColumn]]  # schema version -> column name -> its description
SLICE = 1024  # rows converted at once while looking for the values that do not convert


def declared_columns(manifest: StateStore, table: str) -> Declared:
    """Per schema version of ``table``: its columns by name, as capture described them."""
    return {
        version.version: {
            c["name"]: PgColumn(c["name"], c["type_oid"], c["type_modifier"], c["type_name"])
            for c in version.columns
        }
        for version in manifest.lake.schema_versions(table)
    }


def as_declared(
    part: pa.Table, columns: dict[str, PgColumn]
) -> tuple[pa.Table, list[str | None] | None]:
    """``part`` with each column that capture kept as text converted to its declared type.

    Returns the table and, per row, why it lost a value (None where it lost none); or None
    instead of the list when no value was lost.
    """
    reasons: list[str | None] | None = None
    for index, field in enumerate(part.schema):
        column = columns.get(field.name)
        if column is None or field.type != pa.string():
            continue
        target = arrow_type(column)
        if target == pa.string() or pa.types.is_list(target):
            continue
        typed, lost = _convert(column, part.column(index).combine_chunks())
        part = part.set_column(index, pa.field(field.name, typed.type), typed)
        for row, why in lost:
            if reasons is None:
                reasons = [None] * part.num_rows
            reasons[row] = why if reasons[row] is None else f"{reasons[row]}; {why}"
    return part, reasons


def _convert(column: PgColumn, text: pa.Array) -> tuple[pa.Array, list[tuple[int, str]]]:
    """The values of ``text`` in ``column``'s type; those that do not convert null, listed
    with their reason. A whole slice converts at once, so only a failing one goes value by
    value (a file of a million rows with one 'infinity' costs a thousand single conversions)."""
    pieces: list[pa.Array] = []
    lost: list[tuple[int, str]] = []
    for start in range(0, max(len(text), 1), SLICE):
        chunk = text.slice(start, SLICE)
        try:
            pieces.append(to_arrow(column, chunk))
            continue
        except UnrepresentableValue:
            pass
        for offset in range(len(chunk)):
            value = chunk.slice(offset, 1)
            try:
                pieces.append(to_arrow(column, value))
            except UnrepresentableValue as exc:
                pieces.append(pa.nulls(1, arrow_type(column)))
                lost.append((start + offset, f"{column.name} = {exc.shown!r}: {exc.reason}"))
    typed = pa.concat_arrays(pieces) if pieces else pa.array([], arrow_type(column))
    return pc.cast(typed, arrow_type(column)), lost
