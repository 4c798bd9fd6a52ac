"""Binary send-format values land exactly as their text form does: for every type Riverbed reads
in binary, PostgreSQL's own send function and output function give the two forms of the same
values, and ``binary_to_arrow`` must give what ``to_arrow`` gives (the text path, which the
capture tests check against the source), value for value, type for type, refusals included."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from conftest import Database
from riverbed.capture.snapshot import SESSION_SETTINGS
from riverbed.lake.pgbinary import MalformedBinary, binary_to_arrow
from riverbed.lake.pgtypes import PgColumn, PgOid, UnrepresentableValue, to_arrow

NUMERIC_12_2 = ((12 << 16) | 2) + 4
NUMERIC_38_10 = ((38 << 16) | 10) + 4
NUMERIC_18_0 = ((18 << 16) | 0) + 4

# (type as SQL, OID, typmod, send function, values as SQL literals)
CASES: list[tuple[str, int, int, str, list[str | None]]] = [
    ("int2", PgOid.INT2, -1, "int2send", ["0", "-32768", "32767", "-1", None]),
    ("int4", PgOid.INT4, -1, "int4send", ["0", "-2147483648", "2147483647", "42", None]),
    ("int8", PgOid.INT8, -1, "int8send",
     ["0", "-9223372036854775808", "9223372036854775807", "-7", None]),
    ("float4", PgOid.FLOAT4, -1, "float4send",
     ["0", "-0", "1.5", "3.4028235e38", "1e-45", "NaN", "Infinity", "-Infinity", None]),
    ("float8", PgOid.FLOAT8, -1, "float8send",
     ["0", "-0", "0.1", "-1.7976931348623157e308", "5e-324", "NaN", "Infinity", "-Infinity",
      None]),
    ("numeric(12,2)", PgOid.NUMERIC, NUMERIC_12_2, "numeric_send",
     ["0", "12.34", "-0.01", "-9999999999.99", "9999999999.99", "0.5", "100", "10000.01",
      "-1234.5", None]),
    ("numeric(12,2)", PgOid.NUMERIC, NUMERIC_12_2, "numeric_send", ["1.5", "NaN", None]),
    ("numeric(18,0)", PgOid.NUMERIC, NUMERIC_18_0, "numeric_send",
     ["999999999999999999", "-999999999999999999", "100000000", "0"]),
    ("numeric(38,10)", PgOid.NUMERIC, NUMERIC_38_10, "numeric_send",
     ["-9999999999999999999999999999.9999999999", "0.0000000001", "1", None]),
    ("numeric", PgOid.NUMERIC, -1, "numeric_send",
     ["-123456789012345678901234567890.123456789012345678901234567890", "1e-50", "0.000",
      "10000", "1.10", "NaN", "Infinity", "-Infinity", "0", "-0.00012", None]),
    ("numeric", PgOid.NUMERIC, -1, "numeric_send",
     ["0", "0.000", "10000", "1.10", "-0.00012", "NaN", "Infinity", "-Infinity", None,
      "123456789.123456789", "-5", "1e-10", "99999999999999.9999", "-100000000", "0.5"]),
    ("numeric(38,10)", PgOid.NUMERIC, NUMERIC_38_10, "numeric_send",
     ["-12345678.0000000001", "0", "1.5", None]),
    ("bool", PgOid.BOOL, -1, "boolsend", ["true", "false", None]),
    ("date", PgOid.DATE, -1, "date_send",
     ["2024-02-29", "1999-12-31", "2000-01-01", "1970-01-01", "0001-01-01", "9999-12-31",
      "1900-03-01", None]),
    ("date", PgOid.DATE, -1, "date_send",
     ["2024-01-01", "infinity", "-infinity", "0044-03-15 BC", "10000-01-01", "4713-11-24 BC"]),
    ("time", PgOid.TIME, -1, "time_send",
     ["00:00:00", "23:59:59.999999", "12:00:00.000001", "12:34:56.5", None]),
    ("time", PgOid.TIME, -1, "time_send", ["01:00:00", "24:00:00"]),
    ("timestamp", PgOid.TIMESTAMP, -1, "timestamp_send",
     ["2024-02-29 12:34:56.789", "1999-12-31 23:59:59", "1970-01-01", "0001-01-01",
      "9999-12-31 23:59:59.999999", "1901-12-13 20:45:52.000001", None]),
    ("timestamp", PgOid.TIMESTAMP, -1, "timestamp_send",
     ["2024-01-01", "infinity", "-infinity", "0044-03-15 12:00:00.25 BC", "10000-01-01"]),
    ("timestamptz", PgOid.TIMESTAMPTZ, -1, "timestamptz_send",
     ["2024-02-29 12:34:56.789+01", "1999-12-31 23:59:59-08", "1850-06-01 00:00:00+00",
      "0001-01-01 00:00:00+00", None]),
    ("timestamptz", PgOid.TIMESTAMPTZ, -1, "timestamptz_send",
     ["2024-01-01 00:00:00+00", "infinity", "-infinity", "0001-01-01 00:00:00+00 BC"]),
    ("uuid", PgOid.UUID, -1, "uuid_send",
     ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000",
      "ffffffff-ffff-ffff-ffff-ffffffffffff", None]),
    ("bytea", PgOid.BYTEA, -1, "byteasend", ["'\\xdeadbeef'", "''", "'\\x00ff5c'", None]),
    ("jsonb", PgOid.JSONB, -1, "jsonb_send",
     ["'{\"a\": [1, 2.5e300, null]}'", "'\"é\"'", "'null'", "'[]'", None]),
    ("json", PgOid.JSON, -1, "json_send", ["'{\"a\":  1}'", "'[1, \"two\"]'", None]),
    ("text", PgOid.TEXT, -1, "textsend", ["'ünïcødé 🚀\ttab'", "''", "'NULL'", None]),
    ("varchar(20)", PgOid.VARCHAR, -1, "varcharsend", ["'x'", "''", None]),
    ("char(3)", PgOid.BPCHAR, -1, "bpcharsend", ["'a'", "'   '", "'é'", None]),
]  # fmt: skip


def _literal(value: str | None, sql_type: str) -> str:
    if value is None:
        return f"null::{sql_type}"
    quoted = value if value.startswith("'") else "'" + value + "'"
    return f"{quoted}::{sql_type}"


def _forms(database: Database, sql_type: str, send: str, values: list[str | None]) -> Any:
    import psycopg

    with psycopg.connect(database.dsn, options=SESSION_SETTINGS) as conn:
        # the output function itself: a cast to text can differ (bool, char(n))
        row = conn.execute(f"select typoutput::text from pg_type where oid = '{sql_type}'::regtype")
        output = row.fetchone()[0]  # type: ignore[index]
        rows = [
            conn.execute(
                f"select {send}(v), textin({output}(v)) from (select {_literal(v, sql_type)} v) s"
            ).fetchone()
            for v in values
        ]
    binary = pa.array([r[0] for r in rows], pa.binary())  # type: ignore[index]
    text = pa.array([None if r[1] is None else r[1].encode() for r in rows], pa.binary())  # type: ignore[index]
    return binary, text


def _landed(convert: Any, column: PgColumn, values: pa.Array) -> tuple[pa.Array, str | None]:
    """What the capture lands: typed, or the column as text when a value has no Arrow form."""
    try:
        return convert(column, values), None
    except UnrepresentableValue as exc:
        return convert(column, values, as_string=True), exc.value


def _canon(values: pa.Array) -> list[Any]:
    return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values.to_pylist()]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_binary_values_land_as_their_text_does(
    database: Database, case: tuple[str, int, int, str, list[str | None]]
) -> None:
    sql_type, oid, typmod, send, values = case
    binary, text = _forms(database, sql_type, send, values)
    column = PgColumn("c", oid, typmod)
    from_text, text_refused = _landed(to_arrow, column, text)
    from_binary, binary_refused = _landed(binary_to_arrow, column, binary)
    assert from_binary.type == from_text.type
    assert _canon(from_binary) == _canon(from_text)
    assert binary_refused == text_refused  # the same value named, as PostgreSQL prints it
    if oid in (PgOid.FLOAT4, PgOid.FLOAT8):  # -0.0 and NaN kept bit for bit
        assert [str(v) for v in from_binary.to_pylist()] == [str(v) for v in from_text.to_pylist()]


def test_a_binary_value_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(MalformedBinary):
        binary_to_arrow(PgColumn("c", PgOid.INT8, -1), pa.array([b"\x00\x01"], pa.binary()))
