"""PostgreSQL text values to Arrow, checked against a real server.

The text forms come from the server itself (raw text-format query results, produced by the
same type output functions that pgoutput uses in text mode), and every converted value is
compared with what psycopg 3 decodes for the same row.
"""

from __future__ import annotations

import gc
import json
import math
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from conftest import Database
from riverbed.lake.pgtypes import (
    ARRAY_ELEMENT_OIDS,
    PG_OIDS,
    PgColumn,
    PgOid,
    UnrepresentableValue,
    arrow_type,
    is_supported,
    numeric_precision_scale,
    parse_array,
    to_arrow,
)
from riverbed.source.embedded import EmbeddedServer

SESSION = (
    "set TimeZone = 'UTC'; set DateStyle = 'ISO'; set IntervalStyle = 'postgres';"
    " set extra_float_digits = 3"
)


# --- how a converted value is compared with psycopg's value of the same row ------------------


def same_float32(ours: Any, theirs: Any) -> bool:
    # psycopg reads float4 text into a double; the column holds the float4 that text denotes.
    if math.isnan(theirs):
        return math.isnan(ours)
    return bool(ours == struct.unpack("f", struct.pack("f", theirs))[0])


def same_float(ours: Any, theirs: Any) -> bool:
    if math.isnan(theirs):
        return math.isnan(ours)
    return bool(ours == theirs) and math.copysign(1, ours) == math.copysign(1, theirs)


def same_decimal_text(ours: Any, theirs: Any) -> bool:
    # numeric kept as text must denote exactly psycopg's Decimal (NaN and trailing zeros too)
    return Decimal(ours).compare_total(Decimal(str(theirs))) == 0


def same_json(ours: Any, theirs: Any) -> bool:
    return bool(json.loads(ours) == theirs)


def same_str(ours: Any, theirs: Any) -> bool:
    return bool(ours == str(theirs))


def same_bytes(ours: Any, theirs: Any) -> bool:
    return bool(ours == bytes(theirs))


def equal(ours: Any, theirs: Any) -> bool:
    return bool(ours == theirs)


def raw_text(_ours: Any, _theirs: Any) -> bool:
    """Marker: compared with the server's text itself (psycopg makes other objects of it)."""
    raise AssertionError("compared by _agrees")


Compare = Callable[[Any, Any], bool]


@dataclass(frozen=True)
class Case:
    column: str
    sql_type: str
    arrow: pa.DataType
    compare: Compare
    values: tuple[str | None, ...]  # SQL literals (or None for NULL) for rows 2..n


TSTZ = pa.timestamp("us", tz="UTC")
TEXTS = (
    "'plain'",
    "E'quote '' and \" and back\\\\slash'",
    "E'new\\nline\\ttab'",
    "'unicode ✓ Ωmega 😀 中文'",
    "''",
    "'NULL'",
    "'  padded  '",
)
CASES = [
    Case("c_int2", "int2", pa.int16(), equal, ("-32768", "32767", "0")),
    Case("c_int4", "int4", pa.int32(), equal, ("-2147483648", "2147483647", "-1")),
    Case("c_int8", "int8", pa.int64(), equal, ("-9223372036854775808", "9223372036854775807", "0")),
    Case("c_oid", "oid", pa.int64(), equal, ("0", "4294967295", "1")),
    Case(
        "c_float4",
        "float4",
        pa.float32(),
        same_float32,
        ("'NaN'", "'Infinity'", "'-Infinity'", "'3.4028235e38'", "'1e-45'", "'-0'", "'1.1'"),
    ),
    Case(
        "c_float8",
        "float8",
        pa.float64(),
        same_float,
        (
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'1.7976931348623157e308'",
            "'5e-324'",
            "'-0'",
            "'0.1'",
            "'-1e-300'",
        ),
    ),
    Case(
        "c_num_12_2",
        "numeric(12,2)",
        pa.decimal128(12, 2),
        equal,
        ("-0.01", "9999999999.99", "-9999999999.99", "0", "1.5", "0.005"),
    ),
    Case(
        "c_num_38_10",
        "numeric(38,10)",
        pa.decimal128(38, 10),
        equal,
        (
            "'9999999999999999999999999999.9999999999'",
            "'-0.0000000001'",
            "'12345678901234567890.123456789'",
        ),
    ),
    Case(
        "c_num_free",
        "numeric",
        pa.string(),
        same_decimal_text,
        (
            "'12345678901234567890.123456789'",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'0.000000000000000000000000000000000000000001'",
            "'-5'",
            "1e30",
        ),
    ),
    Case(
        "c_num_50_5",
        "numeric(50,5)",
        pa.decimal256(50, 5),
        equal,
        ("'123456789012345678901234567890123456789012345.12345'", "'-1.5'"),
    ),
    Case("c_num_100_2", "numeric(100,2)", pa.string(), same_decimal_text, ("'1e90'", "'-7.25'")),
    Case("c_num_neg_scale", "numeric(3,-2)", pa.decimal128(5, 0), equal, ("12345", "-99949")),
    Case("c_num_scale_gt_p", "numeric(2,4)", pa.decimal128(4, 4), equal, ("0.0012", "-0.0099")),
    Case("c_bool", "bool", pa.bool_(), equal, ("true", "false")),
    Case("c_text", "text", pa.string(), equal, TEXTS),
    Case("c_varchar", "varchar(40)", pa.string(), equal, TEXTS),
    Case("c_bpchar", "char(5)", pa.string(), equal, ("'ab'", "'abcde'", "'é'")),
    Case("c_name", "name", pa.string(), equal, ("'pg_class'", "'Mixed Case'")),
    Case("c_char", '"char"', pa.string(), equal, ("'x'",)),
    Case(
        "c_date",
        "date",
        pa.date32(),
        equal,
        ("'0001-01-01'", "'9999-12-31'", "'2024-02-29'", "'1969-12-31'"),
    ),
    Case(
        "c_ts",
        "timestamp",
        pa.timestamp("us"),
        equal,
        (
            "'2024-01-01 10:00:00'",
            "'2024-01-01 10:00:00.1'",
            "'2024-01-01 10:00:00.12'",
            "'2024-01-01 10:00:00.123'",
            "'2024-01-01 10:00:00.1234'",
            "'2024-01-01 10:00:00.12345'",
            "'2024-01-01 10:00:00.123456'",
            "'0001-01-01 00:00:00'",
            "'9999-12-31 23:59:59.999999'",
            "'1969-12-31 23:59:59.999999'",
        ),
    ),
    Case(
        "c_ts3",
        "timestamp(3)",
        pa.timestamp("us"),
        equal,
        ("'2024-01-01 10:00:00.123456'", "'2024-01-01 10:00:00.9999'"),
    ),
    Case(
        "c_tstz",
        "timestamptz",
        TSTZ,
        equal,
        (
            "'2024-03-10 02:30:00-08'",
            "'2024-06-01 12:00:00.5+05:30'",
            "'2024-01-01 00:00:00 Europe/Amsterdam'",
            "'2024-07-01 00:00:00 America/St_Johns'",
            "'1850-06-01 12:00:00+00:19:32'",
            "'2024-01-01 00:00:00.000001+00'",
            "'1969-12-31 23:59:59.5+00'",
            "'0001-01-01 00:00:00+00'",
        ),
    ),
    Case(
        "c_time",
        "time",
        pa.time64("us"),
        equal,
        ("'00:00:00'", "'23:59:59.999999'", "'10:00:01.5'", "'12:34:56.000100'"),
    ),
    Case("c_timetz", "timetz", pa.string(), raw_text, ("'10:00:00+05:30'", "'23:59:59-08'")),
    Case(
        "c_interval",
        "interval",
        pa.string(),
        raw_text,
        ("'1 year 2 mons -3 days 04:05:06.7'", "'-00:00:01'", "'0'"),
    ),
    Case(
        "c_uuid",
        "uuid",
        pa.string(),
        same_str,
        ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"),
    ),
    Case(
        "c_json",
        "json",
        pa.string(),
        same_json,
        ("""'{"a": [1, 2.5, null], "b": "ünïcødé \\u00e9 😀"}'""", "'\"just a string\"'"),
    ),
    Case(
        "c_jsonb",
        "jsonb",
        pa.string(),
        same_json,
        ("""'{"a": [1, 2.5, null], "b": "ünïcødé \\u00e9 😀", "c": {"d": "x\\"y"}}'""", "'[]'"),
    ),
    Case(
        "c_bytea",
        "bytea",
        pa.binary(),
        same_bytes,
        ("'\\x000102ff00'::bytea", "''::bytea", "'\\x5c22'::bytea", "convert_to('é', 'UTF8')"),
    ),
    Case("c_money", "money", pa.string(), raw_text, ("1234.56", "-0.01")),
    Case(
        "c_inet",
        "inet",
        pa.string(),
        same_str,
        ("'192.168.0.1/24'", "'10.0.0.1'", "'2001:db8::1'"),
    ),
    Case("c_cidr", "cidr", pa.string(), same_str, ("'10.0.0.0/8'",)),
    Case("c_macaddr", "macaddr", pa.string(), raw_text, ("'08:00:2b:01:02:03'",)),
    Case("c_mood", "mood", pa.string(), equal, ("'happy'", "'so-so'")),
    Case("c_domain", "positive_amount", pa.string(), same_decimal_text, ("12.50",)),
    Case(
        "c_int4_arr",
        "int4[]",
        pa.list_(pa.int32()),
        equal,
        ("'{1,2,NULL}'", "'{}'", "'{-2147483648}'", "'{NULL}'"),
    ),
    Case("c_int2_arr", "int2[]", pa.list_(pa.int16()), equal, ("'{1,-2}'",)),
    Case(
        "c_int8_arr",
        "int8[]",
        pa.list_(pa.int64()),
        equal,
        ("'{9223372036854775807,-9223372036854775808}'",),
    ),
    Case(
        "c_text_arr",
        "text[]",
        pa.list_(pa.string()),
        equal,
        (
            """'{"a b","c\\"d",NULL,"NULL"}'""",
            "ARRAY['a,b', 'c\\d', '{x}', '}', '\"', '', ' ', 'null', E'new\\nline', 'é😀']",
            "'{}'",
            "ARRAY[NULL]::text[]",
        ),
    ),
    Case(
        "c_varchar_arr",
        "varchar(10)[]",
        pa.list_(pa.string()),
        equal,
        ("ARRAY['x', 'y z']",),
    ),
    Case("c_bool_arr", "bool[]", pa.list_(pa.bool_()), equal, ("'{t,f,NULL}'", "'{}'")),
    Case(
        "c_float8_arr",
        "float8[]",
        pa.list_(pa.float64()),
        equal,
        ("'{1.5,-0.25,Infinity}'",),
    ),
    Case("c_float4_arr", "float4[]", pa.list_(pa.float32()), equal, ("'{0.5,-2}'",)),
    Case(
        "c_num_arr",
        "numeric(12,2)[]",
        pa.list_(pa.decimal128(12, 2)),
        equal,
        ("'{1.50,-0.01,NULL,9999999999.99}'",),
    ),
    Case(
        "c_num_free_arr",
        "numeric[]",
        pa.list_(pa.string()),
        same_decimal_text,
        ("'{1.5,NaN,-Infinity,NULL}'",),
    ),
    Case(
        "c_date_arr",
        "date[]",
        pa.list_(pa.date32()),
        equal,
        ("'{2024-01-01,NULL,0001-01-01}'",),
    ),
    Case(
        "c_ts_arr",
        "timestamp[]",
        pa.list_(pa.timestamp("us")),
        equal,
        ("ARRAY['2024-01-01 10:00:00.25'::timestamp, '1999-12-31 23:59:59']",),
    ),
    Case(
        "c_tstz_arr",
        "timestamptz[]",
        pa.list_(TSTZ),
        equal,
        ("ARRAY['2024-01-01 10:00:00.25-08'::timestamptz, NULL]",),
    ),
    Case("c_time_arr", "time[]", pa.list_(pa.time64("us")), equal, ("'{10:00:01.5,00:00}'",)),
    Case(
        "c_uuid_arr",
        "uuid[]",
        pa.list_(pa.string()),
        same_str,
        ("'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'",),
    ),
    Case(
        "c_jsonb_arr",
        "jsonb[]",
        pa.list_(pa.string()),
        same_json,
        ("""ARRAY['{"a": "b\\"c"}'::jsonb, '[1,2]'::jsonb, NULL]""",),
    ),
    Case(
        "c_bytea_arr",
        "bytea[]",
        pa.list_(pa.binary()),
        equal,
        ("ARRAY['\\x00ff'::bytea, ''::bytea, NULL]",),
    ),
]


@dataclass(frozen=True)
class Fetched:
    column: PgColumn
    raw: list[bytes | None]  # the server's text form, exactly as a text-mode result carries it
    decoded: list[Any]  # what psycopg makes of the same rows


def _setup(conn: psycopg.Connection) -> None:
    conn.execute("create type mood as enum ('sad', 'so-so', 'happy')")
    conn.execute("create domain positive_amount as numeric(10,2) check (value > 0)")
    columns = ", ".join(f"{case.column} {case.sql_type}" for case in CASES)
    conn.execute(f"create table sample (id int primary key, {columns})")
    rows = max(len(case.values) for case in CASES)
    conn.execute("insert into sample (id) select g from generate_series(1, %s) g", (rows + 1,))
    for case in CASES:
        for row, literal in enumerate(case.values, start=2):
            conn.execute(f"update sample set {case.column} = {literal} where id = {row}")


def _fetch(conn: psycopg.Connection, case: Case) -> Fetched:
    oid, typmod = conn.execute(
        "select atttypid::int, atttypmod from pg_attribute"
        " where attrelid = 'sample'::regclass and attname = %s",
        (case.column,),
    ).fetchone()  # type: ignore[misc]
    user_type = (
        conn.execute("select %s::oid::regtype::text", (oid,)).fetchone()[0]  # type: ignore[index]
        if oid >= 16384  # FirstNormalObjectId: not a built-in type
        else None
    )
    cursor = conn.execute(f"select {case.column} from sample order by id")
    decoded = [row[0] for row in cursor.fetchall()]
    result = cursor.pgresult
    assert result is not None
    raw = [result.get_value(i, 0) for i in range(result.ntuples)]
    return Fetched(PgColumn(case.column, oid, typmod, user_type), raw, decoded)


@pytest.fixture(scope="module")
def sample(pg_server: EmbeddedServer) -> Iterator[dict[str, Fetched]]:
    """One table with a column of every supported type, filled with edge values."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
            conn.execute(SESSION)
            _setup(conn)
            yield {case.column: _fetch(conn, case) for case in CASES}
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")


def _agrees(case: Case, ours: Any, theirs: Any, raw: bytes | None) -> bool:
    if theirs is None:
        return ours is None
    if case.compare is raw_text:
        return raw is not None and ours == raw.decode()
    if pa.types.is_list(case.arrow):
        return (
            isinstance(ours, list)
            and len(ours) == len(theirs)
            and all(
                (t is None and o is None) or (t is not None and case.compare(o, t))
                for o, t in zip(ours, theirs, strict=True)
            )
        )
    return case.compare(ours, theirs)


@pytest.mark.parametrize("case", CASES, ids=[case.column for case in CASES])
def test_converts_every_value_as_psycopg_reads_it(sample: dict[str, Fetched], case: Case) -> None:
    fetched = sample[case.column]
    assert arrow_type(fetched.column) == case.arrow
    array = to_arrow(fetched.column, fetched.raw)
    assert array.type == case.arrow
    assert len(array) == len(fetched.raw)
    ours = array.to_pylist()
    assert ours[0] is None  # the first row is all NULLs
    for row, (mine, theirs, raw) in enumerate(
        zip(ours, fetched.decoded, fetched.raw, strict=True), start=1
    ):
        assert _agrees(case, mine, theirs, raw), (
            f"row {row}: {raw!r} -> {mine!r}, psycopg {theirs!r}"
        )


@pytest.mark.parametrize("case", CASES, ids=[case.column for case in CASES])
def test_as_string_keeps_the_server_text(sample: dict[str, Fetched], case: Case) -> None:
    fetched = sample[case.column]
    array = to_arrow(fetched.column, fetched.raw, as_string=True)
    assert array.type == pa.string()
    assert array.to_pylist() == [None if v is None else v.decode() for v in fetched.raw]


def same_array(ours: pa.Array, theirs: pa.Array) -> bool:
    # Array.equals treats NaN as unequal to itself; the printed values compare NaN as NaN
    return bool(ours.type == theirs.type and repr(ours.to_pylist()) == repr(theirs.to_pylist()))


@pytest.mark.parametrize("case", CASES, ids=[case.column for case in CASES])
def test_str_and_arrow_inputs_convert_like_bytes(sample: dict[str, Fetched], case: Case) -> None:
    fetched = sample[case.column]
    expected = to_arrow(fetched.column, fetched.raw)
    as_str = [None if v is None else v.decode() for v in fetched.raw]
    assert same_array(to_arrow(fetched.column, as_str), expected)
    assert same_array(to_arrow(fetched.column, pa.array(as_str, pa.string())), expected)
    chunked = pa.chunked_array(
        [pa.array(as_str[:2], pa.string()), pa.array(as_str[2:], pa.string())]
    )
    assert same_array(to_arrow(fetched.column, chunked), expected)
    assert to_arrow(fetched.column, []).type == case.arrow


def test_type_table_matches_the_server(database: Database) -> None:
    with database.connect() as conn:
        catalog = {
            oid: (name, elem, array)
            for oid, name, elem, array in conn.execute(
                "select oid::int, typname::text, typelem::int, typarray::int from pg_type"
            ).fetchall()
        }
    for member in PgOid:
        name, element, _ = catalog[member.value]
        if member.name.endswith("_ARRAY"):
            assert ARRAY_ELEMENT_OIDS[member.value] == element
            assert catalog[element][2] == member.value
            assert name == "_" + catalog[element][0]
        else:
            assert name == member.name.lower(), member
            assert is_supported(member.value)
    assert PG_OIDS["int4"] == 23 and PG_OIDS["int4_array"] == 1007
    assert not is_supported(16384)
    assert arrow_type(PgColumn("c", 99999, -1, "shop.order_status")) == pa.string()


def _values_of(conn: psycopg.Connection, sql: str) -> list[bytes | None]:
    result = conn.execute(sql).pgresult
    assert result is not None
    return [result.get_value(i, 0) for i in range(result.ntuples)]


def _column(conn: psycopg.Connection, table: str, column: str) -> PgColumn:
    oid, typmod = conn.execute(
        "select atttypid::int, atttypmod from pg_attribute"
        " where attrelid = %s::regclass and attname = %s",
        (table, column),
    ).fetchone()  # type: ignore[misc]
    return PgColumn(column, oid, typmod)


def test_numeric_nan_in_a_decimal_column_raises_and_string_keeps_it(database: Database) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute(SESSION)
        conn.execute("create table t (id int, price numeric(12,2), prices numeric(12,2)[])")
        conn.execute(
            "insert into t values (1, 1.5, '{1.5}'), (2, 'NaN', '{2,NaN}'), (3, null, null)"
        )
        price = _column(conn, "t", "price")
        prices = _column(conn, "t", "prices")
        raw = _values_of(conn, "select price from t order by id")
        raw_list = _values_of(conn, "select prices from t order by id")
    assert numeric_precision_scale(price.type_modifier) == (12, 2)
    with pytest.raises(UnrepresentableValue, match=r"column 'price'.*'NaN'") as caught:
        to_arrow(price, raw)
    assert caught.value.column == "price" and caught.value.value == "NaN"
    assert isinstance(caught.value, ValueError)
    assert to_arrow(price, raw, as_string=True).to_pylist() == ["1.50", "NaN", None]
    with pytest.raises(UnrepresentableValue, match=r"column 'prices'.*'NaN'"):
        to_arrow(prices, raw_list)
    assert to_arrow(prices, raw_list, as_string=True).to_pylist() == ["{1.50}", "{2.00,NaN}", None]


def test_numeric_infinity_in_a_decimal_column_raises() -> None:
    # numeric(p,s) refuses infinities on the server, but a decimal must never take one anyway
    column = PgColumn("amount", PgOid.NUMERIC, ((12 << 16) | 2) + 4)
    with pytest.raises(UnrepresentableValue, match="Infinity"):
        to_arrow(column, [b"1.00", b"-Infinity"])


FINE = {
    "timestamp": "2000-01-01 00:00:00",
    "timestamptz": "2000-01-01 00:00:00+00",
    "date": "2000-01-01",
    "time": "10:00:00",
}


@pytest.mark.parametrize(
    ("sql_type", "literal", "why"),
    [
        ("timestamp", "infinity", "infinity"),
        ("timestamp", "-infinity", "infinity"),
        ("timestamptz", "infinity", "infinity"),
        ("timestamptz", "-infinity", "infinity"),
        ("date", "infinity", "infinity"),
        ("date", "-infinity", "infinity"),
        ("date", "0044-03-15 BC", "before the year 1"),
        ("timestamp", "2000-01-01 10:00:00 BC", "before the year 1"),
        ("timestamptz", "0001-01-01 00:00:00+00 BC", "before the year 1"),
        ("date", "10000-01-01", "after 9999"),
        ("timestamp", "10000-01-01 00:00:00", "after 9999"),
        ("time", "24:00:00", "24:00:00"),
    ],
)
def test_values_arrow_cannot_hold_raise(
    database: Database, sql_type: str, literal: str, why: str
) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute(SESSION)
        conn.execute(f"create table t (id int, v {sql_type})")
        conn.execute("insert into t values (1, %s), (2, null), (3, %s)", (FINE[sql_type], literal))
        column = _column(conn, "t", "v")
        raw = _values_of(conn, "select v from t order by id")
    with pytest.raises(UnrepresentableValue, match=why) as caught:
        to_arrow(column, raw)
    assert caught.value.column == "v"
    assert caught.value.value == raw[2].decode()  # type: ignore[union-attr]
    assert to_arrow(column, raw, as_string=True)[2].as_py() == raw[2].decode()  # type: ignore[union-attr]


@pytest.mark.parametrize("literal", ["{{1,2},{3,4}}", "[0:1]={7,8}"])
def test_multidimensional_or_offset_arrays_raise(database: Database, literal: str) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute("create table t (id int, v int4[])")
        conn.execute("insert into t values (1, '{1}'), (2, %s)", (literal,))
        column = _column(conn, "t", "v")
        raw = _values_of(conn, "select v from t order by id")
    assert raw[1] == literal.encode()
    with pytest.raises(UnrepresentableValue, match="one-dimensional"):
        to_arrow(column, raw)
    assert to_arrow(column, raw, as_string=True).to_pylist() == ["{1}", literal]


def test_timestamptz_outside_utc_sessions(database: Database) -> None:
    """Offsets in seconds (local mean time) and half hours still give the right instant."""
    literals = [
        "1850-06-01 12:00:00+00",
        "2024-06-01 12:00:00.25+00",
        "1900-01-01 00:00:00+00",
        "2024-01-01 00:00:00+00",
    ]
    offsets: set[bytes] = set()
    for zone in ("Europe/Amsterdam", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu"):
        with database.connect(autocommit=True) as conn:
            conn.execute(f"set TimeZone = '{zone}'")
            sql = "select v::timestamptz from unnest(%s::text[]) with ordinality u(v, n) order by n"
            cursor = conn.execute(sql, (literals,))
            theirs = [row[0] for row in cursor.fetchall()]
            raw = [cursor.pgresult.get_value(i, 0) for i in range(len(literals))]  # type: ignore[union-attr]
        ours = to_arrow(PgColumn("at", PgOid.TIMESTAMPTZ, -1), raw).to_pylist()
        assert ours == theirs, (zone, raw)
        offsets.update(value[19:].lstrip(b".0123456789") for value in raw if value)
    # local mean time (offsets in seconds) for old dates, half and quarter hours for others
    assert {b"+05:30", b"-02:30", b"+05:45"} <= offsets, offsets
    assert any(len(offset) == len(b"+00:17:30") for offset in offsets), offsets


def test_bytea_escape_output(database: Database) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute("set bytea_output = 'escape'")
        sql = "select '\\x00015c22ff41e9'::bytea union all select ''::bytea"
        cursor = conn.execute(sql)
        theirs = [row[0] for row in cursor.fetchall()]
        raw = [cursor.pgresult.get_value(i, 0) for i in range(2)]  # type: ignore[union-attr]
    assert not raw[0].startswith(b"\\x")  # type: ignore[union-attr]
    assert to_arrow(PgColumn("b", PgOid.BYTEA, -1), raw).to_pylist() == theirs


def test_invalid_utf8_raises() -> None:
    with pytest.raises(UnrepresentableValue, match="UTF"):
        to_arrow(PgColumn("name", PgOid.TEXT, -1), [b"ok", b"\xff\xfe"])


@pytest.mark.parametrize(
    ("text", "elements"),
    [
        ("{}", []),
        ("{1,2,NULL}", ["1", "2", None]),
        ('{"a b","c\\"d",NULL,"NULL"}', ["a b", 'c"d', None, "NULL"]),
        ('{""," ","\\\\","{x}","a,b","}"}', ["", " ", "\\", "{x}", "a,b", "}"]),
        ('{"new\nline"}', ["new\nline"]),
    ],
)
def test_parse_array(text: str, elements: list[str | None]) -> None:
    assert parse_array(text) == elements


@pytest.mark.parametrize("text", ["{{1},{2}}", "[0:1]={1,2}", "{1,,2}", "{a}b}", "1,2", '{"a}'])
def test_parse_array_refuses_what_is_not_one_dimensional(text: str) -> None:
    with pytest.raises(ValueError):
        parse_array(text)


def test_numeric_typmods() -> None:
    assert numeric_precision_scale(-1) is None
    assert arrow_type(PgColumn("n", PgOid.NUMERIC, -1)) == pa.string()
    assert arrow_type(PgColumn("n", PgOid.NUMERIC, ((76 << 16) | 3) + 4)) == pa.decimal256(76, 3)
    assert arrow_type(PgColumn("n", PgOid.NUMERIC, ((77 << 16) | 3) + 4)) == pa.string()
    assert arrow_type(PgColumn("n", PgOid.NUMERIC_ARRAY, ((9 << 16) | 1) + 4)) == pa.list_(
        pa.decimal128(9, 1)
    )


# --- the hot path stays in Arrow --------------------------------------------------------------

HOT = {
    "int8": (PgOid.INT8, -1, lambda i: str(i * 7919 - 10**9)),
    "numeric(12,2)": (PgOid.NUMERIC, ((12 << 16) | 2) + 4, lambda i: f"{i}.{i % 100:02d}"),
    "timestamptz": (
        PgOid.TIMESTAMPTZ,
        -1,
        lambda i: f"2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:07.{i % 10**6:06d}+00",
    ),
    "timestamp": (PgOid.TIMESTAMP, -1, lambda i: f"2024-01-01 10:{i % 60:02d}:07.{i % 999}"),
    "date": (PgOid.DATE, -1, lambda i: f"2024-01-{1 + i % 28:02d}"),
    "time": (PgOid.TIME, -1, lambda i: f"10:{i % 60:02d}:07.{i % 999}"),
    "bool": (PgOid.BOOL, -1, lambda i: "tf"[i % 2]),
    "float8": (PgOid.FLOAT8, -1, lambda i: f"{i / 7}"),
    "text": (PgOid.TEXT, -1, lambda i: f"name {i}"),
}


def _python_calls(column: PgColumn, values: list[bytes | str | None]) -> int:
    calls = 0

    def count(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    # a garbage collection in the middle would run other tests' finalizers: not ours to count
    gc.collect()
    gc.disable()
    sys.setprofile(count)
    try:
        to_arrow(column, values)
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


@pytest.mark.parametrize("kind", list(HOT))
def test_common_types_convert_without_python_per_value(kind: str) -> None:
    """The work done in Python does not grow with the number of values: Arrow does it all.

    A structural check instead of a timing one: count Python-level calls for 1,000 and for
    100,000 values; ``python -m riverbed.lake.pgtypes`` prints the throughput.
    """
    oid, typmod, make = HOT[kind]
    column = PgColumn("c", oid, typmod)
    small: list[bytes | str | None] = [make(i).encode() for i in range(1_000)]
    large: list[bytes | str | None] = [make(i).encode() for i in range(100_000)]
    small[3] = large[3] = None
    to_arrow(column, small)  # load the compute kernels first
    assert _python_calls(column, large) == _python_calls(column, small)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-01-01 10:00:00+00", datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ("2024-01-01 10:00:00.5+05:30", datetime(2024, 1, 1, 4, 30, 0, 500000, UTC)),
        ("2024-01-01 10:00:00-08", datetime(2024, 1, 1, 18, tzinfo=UTC)),
        ("2024-01-01 10:00:00+0530", datetime(2024, 1, 1, 4, 30, tzinfo=UTC)),
        ("1850-01-01 00:19:32.25+00:19:32", datetime(1850, 1, 1, 0, 0, 0, 250000, UTC)),
        ("1850-01-01 00:00:00-00:25:21", datetime(1850, 1, 1, 0, 25, 21, tzinfo=UTC)),
    ],
)
def test_timestamptz_offset_forms(text: str, utc: datetime) -> None:
    column = PgColumn("at", PgOid.TIMESTAMPTZ, -1)
    assert to_arrow(column, [text, None]).to_pylist() == [utc, None]
