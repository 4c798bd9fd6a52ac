"""PostgreSQL column types to Arrow types, and PostgreSQL *text-format* values to Arrow arrays.

The values are what the type's output function prints, which is exactly what pgoutput sends
in text mode and what ``COPY ... TO STDOUT`` gives, for a session with ``TimeZone = 'UTC'``,
``DateStyle = ISO`` and ``IntervalStyle = postgres``. Conversion is column-at-a-time: one
``pa.array`` over the raw values, then Arrow casts, so the common types (integers, floats,
numeric, text, bool, date, time, timestamp[tz]) never run Python per value. Only bytea and
arrays are parsed value by value, and their array elements are then converted vectorized.

Decisions worth knowing:

* A lake must never show a wrong value. A value that the mapped Arrow type cannot hold
  raises :class:`UnrepresentableValue` naming the column and the value, instead of becoming
  null or being rounded: numeric ``NaN``/``Infinity`` in a decimal column, timestamps and
  dates ``infinity``/``-infinity``, BC or after year 9999, ``time '24:00:00'``,
  multi-dimensional arrays or arrays with explicit bounds (``[0:1]={1,2}``). The caller may
  then convert the column again with ``to_arrow(col, values, as_string=True)``, which keeps
  the exact PostgreSQL text of every value.
* Float ``NaN``/``Infinity``/``-Infinity`` are real IEEE values and are kept as such.
* ``numeric`` without a typmod has no fixed scale, so no decimal type holds all its values
  without rounding: it stays a string, which is lossless. ``numeric(p, s)`` becomes
  ``decimal128`` (p <= 38), ``decimal256`` (p <= 76), or a string beyond that.
* Timestamps with an offset in seconds (``+00:19:32``, local mean time in non-UTC sessions)
  take a slower, still vectorized, path; everything else is a single Arrow cast.
* Enums, domains over unknown types, extension types (citext, hstore...) and any unknown
  OID become strings, as do interval, money, inet/cidr/macaddr, uuid and json.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.errors import RiverbedError


class PgOid(IntEnum):
    """Built-in type OIDs (``src/include/catalog/pg_type.dat``); stable across versions."""

    BOOL = 16
    BYTEA = 17
    CHAR = 18
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    OID = 26
    XID = 28
    CID = 29
    JSON = 114
    XML = 142
    CIDR = 650
    FLOAT4 = 700
    FLOAT8 = 701
    UNKNOWN = 705
    MACADDR8 = 774
    MONEY = 790
    MACADDR = 829
    INET = 869
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIME = 1083
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    TIMETZ = 1266
    BIT = 1560
    VARBIT = 1562
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802
    JSONPATH = 4072
    # One-dimensional arrays of the types above ("_int4" and so on).
    BOOL_ARRAY = 1000
    BYTEA_ARRAY = 1001
    CHAR_ARRAY = 1002
    NAME_ARRAY = 1003
    INT2_ARRAY = 1005
    INT4_ARRAY = 1007
    TEXT_ARRAY = 1009
    BPCHAR_ARRAY = 1014
    VARCHAR_ARRAY = 1015
    INT8_ARRAY = 1016
    FLOAT4_ARRAY = 1021
    FLOAT8_ARRAY = 1022
    OID_ARRAY = 1028
    XID_ARRAY = 1011
    CID_ARRAY = 1012
    JSON_ARRAY = 199
    XML_ARRAY = 143
    CIDR_ARRAY = 651
    MACADDR8_ARRAY = 775
    MONEY_ARRAY = 791
    MACADDR_ARRAY = 1040
    INET_ARRAY = 1041
    DATE_ARRAY = 1182
    TIME_ARRAY = 1183
    TIMESTAMP_ARRAY = 1115
    TIMESTAMPTZ_ARRAY = 1185
    INTERVAL_ARRAY = 1187
    TIMETZ_ARRAY = 1270
    BIT_ARRAY = 1561
    VARBIT_ARRAY = 1563
    NUMERIC_ARRAY = 1231
    UUID_ARRAY = 2951
    JSONB_ARRAY = 3807
    JSONPATH_ARRAY = 4073


PG_OIDS: dict[str, int] = {member.name.lower(): member.value for member in PgOid}
"""Type name (``'int4'``, ``'int4_array'``...) to OID, for callers that prefer a mapping."""

ARRAY_ELEMENT_OIDS: dict[int, int] = {
    member.value: PgOid[member.name.removesuffix("_ARRAY")].value
    for member in PgOid
    if member.name.endswith("_ARRAY")
}
"""Array type OID to its element type OID."""

_TIMESTAMPTZ = pa.timestamp("us", tz="UTC")

# Types with a fixed Arrow type; numeric depends on its typmod, and everything else is a string.
_FIXED_TYPES: dict[int, pa.DataType] = {
    PgOid.BOOL: pa.bool_(),
    PgOid.BYTEA: pa.binary(),
    PgOid.INT2: pa.int16(),
    PgOid.INT4: pa.int32(),
    PgOid.INT8: pa.int64(),
    # oid, xid and cid are unsigned 32-bit: int64 holds them all and joins with plain integers.
    PgOid.OID: pa.int64(),
    PgOid.XID: pa.int64(),
    PgOid.CID: pa.int64(),
    PgOid.FLOAT4: pa.float32(),
    PgOid.FLOAT8: pa.float64(),
    PgOid.DATE: pa.date32(),
    PgOid.TIME: pa.time64("us"),
    PgOid.TIMESTAMP: pa.timestamp("us"),
    PgOid.TIMESTAMPTZ: _TIMESTAMPTZ,
}

_STRING_TYPES = frozenset(
    {
        PgOid.CHAR,
        PgOid.NAME,
        PgOid.TEXT,
        PgOid.JSON,
        PgOid.XML,
        PgOid.CIDR,
        PgOid.UNKNOWN,
        PgOid.MACADDR8,
        PgOid.MONEY,  # locale-dependent text ('$1,000.00'): only the string is safe
        PgOid.MACADDR,
        PgOid.INET,
        PgOid.BPCHAR,
        PgOid.VARCHAR,
        PgOid.INTERVAL,  # '1 year 2 mons -3 days 04:05:06.7': kept as PostgreSQL prints it
        PgOid.TIMETZ,  # Arrow has no time-of-day with an offset
        PgOid.BIT,
        PgOid.VARBIT,
        PgOid.UUID,
        PgOid.JSONB,
        PgOid.JSONPATH,
    }
)

_MAX_DECIMAL128_PRECISION = 38
_MAX_DECIMAL256_PRECISION = 76


@dataclass(frozen=True)
class PgColumn:
    """One column as described by a pgoutput Relation message (plus its Type message, if any)."""

    name: str
    type_oid: int
    type_modifier: int  # atttypmod as sent in the Relation message, -1 when none
    type_name: str | None = None  # e.g. 'shop.order_status' for enums and user types


class UnrepresentableValue(RiverbedError, ValueError):
    """A PostgreSQL value has no exact equivalent in the column's Arrow type.

    Terminal for that conversion only: the caller can keep the data by converting the column
    again with ``as_string=True``.
    """

    def __init__(self, column: str, value: str, arrow_type: pa.DataType, reason: str):
        self.column = column
        self.value = value
        self.arrow_type = arrow_type
        self.reason = reason
        self.shown = shown = value if len(value) <= 100 else value[:100] + "..."
        super().__init__(
            f"column {column!r}: PostgreSQL value {shown!r} cannot be stored as Arrow "
            f"{arrow_type} ({reason}); convert the column with as_string=True to keep its text"
        )


def is_supported(oid: int) -> bool:
    """Whether ``oid`` has a dedicated mapping; any other type is carried as its text."""
    known = oid in _FIXED_TYPES or oid in _STRING_TYPES or oid in ARRAY_ELEMENT_OIDS
    return known or oid == PgOid.NUMERIC


def numeric_precision_scale(type_modifier: int) -> tuple[int, int] | None:
    """The declared ``(precision, scale)`` of a numeric typmod, or None when unconstrained.

    The scale is an 11-bit signed field: PostgreSQL 15 allows negative scales and scales
    larger than the precision (``numeric(2, -3)``, ``numeric(2, 5)``).
    """
    if type_modifier < 4:  # VARHDRSZ; -1 means no typmod
        return None
    packed = type_modifier - 4
    return (packed >> 16) & 0xFFFF, ((packed & 0x7FF) ^ 1024) - 1024


def _numeric_type(type_modifier: int) -> pa.DataType:
    declared = numeric_precision_scale(type_modifier)
    if declared is None:
        # Unconstrained numeric keeps any scale per value (up to 16383 digits after the point),
        # so every fixed-scale decimal would have to round some value: a string is lossless.
        return pa.string()
    precision, scale = declared
    # Parquet needs 0 <= scale <= precision; widen so that every value the column allows fits.
    if scale < 0:
        precision, scale = precision - scale, 0
    elif scale > precision:
        precision = scale
    if precision <= _MAX_DECIMAL128_PRECISION:
        return pa.decimal128(precision, scale)
    if precision <= _MAX_DECIMAL256_PRECISION:
        return pa.decimal256(precision, scale)
    return pa.string()  # numeric(1000, s) is legal; no Arrow decimal is that wide


def _scalar_type(oid: int, type_modifier: int) -> pa.DataType:
    fixed = _FIXED_TYPES.get(oid)
    if fixed is not None:
        return fixed
    if oid == PgOid.NUMERIC:
        return _numeric_type(type_modifier)
    return pa.string()


def arrow_type(col: PgColumn) -> pa.DataType:
    """The Arrow type that :func:`to_arrow` produces for ``col``."""
    element = ARRAY_ELEMENT_OIDS.get(col.type_oid)
    if element is not None:
        # An array column's typmod is its element's (numeric(12,2)[] carries (12,2)).
        return pa.list_(_scalar_type(element, col.type_modifier))
    return _scalar_type(col.type_oid, col.type_modifier)


Values: TypeAlias = Sequence[bytes | str | None] | pa.Array | pa.ChunkedArray
"""Text-format values: Python bytes/str (None for NULL), or an Arrow string/binary array."""


def to_arrow(col: PgColumn, values: Values, *, as_string: bool = False) -> pa.Array:
    """Convert text-format values of ``col`` (None for SQL NULL) to an array of ``arrow_type(col)``.

    ``values`` may also be an Arrow string or binary array, such as a column of
    ``COPY ... (FORMAT csv)`` read by pyarrow's CSV reader, which skips a round trip through
    Python objects. (Text-format ``COPY`` escapes backslashes and control characters: unescape
    it first.) With ``as_string=True`` the result is the values'
    PostgreSQL text, as a string array, whatever the column's type. Raises
    :class:`UnrepresentableValue` for a value the mapped type cannot hold exactly.
    """
    target = pa.string() if as_string else arrow_type(col)
    if col.type_oid in ARRAY_ELEMENT_OIDS and not as_string:
        return _array_column(col, _pylist(values), target)
    if target == pa.binary():
        return _bytea_column(col, _pylist(values))
    text = _text(col, values)
    if target == pa.string():
        return text
    convert = _converter(col.type_oid)
    try:
        return convert(text, target)
    except pa.ArrowInvalid:
        raise _unrepresentable(col, text, target, convert) from None


# --- text ----------------------------------------------------------------------------------


def _pylist(values: Values) -> Sequence[bytes | str | None]:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.to_pylist()  # type: ignore[no-any-return]
    return values


def _text(col: PgColumn, values: Values) -> pa.StringArray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    # Building a binary array and validating it as UTF-8 in one cast is ~2.5x faster than
    # letting pa.array decode each bytes object into a string.
    raw = values if isinstance(values, pa.Array) else pa.array(values, pa.binary())
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        for value in _pylist(raw):
            if isinstance(value, bytes):
                try:
                    value.decode()
                except UnicodeDecodeError:
                    raise UnrepresentableValue(
                        col.name,
                        repr(value),
                        pa.string(),
                        "not UTF-8: the source database or client_encoding must be UTF8",
                    ) from None
        raise


# --- vectorized converters: each takes the text array and the target type and raises
# --- pa.ArrowInvalid if any value does not convert, so the culprit can be searched for.

Converter: TypeAlias = Callable[[pa.StringArray, pa.DataType], pa.Array]


def _cast(text: pa.StringArray, target: pa.DataType) -> pa.Array:
    # Covers integers, floats ('NaN', 'Infinity' parse), decimals (rescaling that would lose
    # digits is an error, never a rounding), date and timestamp without time zone.
    return pc.cast(text, target)


def _bool(text: pa.StringArray, _target: pa.DataType) -> pa.Array:
    # PostgreSQL prints exactly 't' or 'f'; Arrow's own bool parser does not accept 'f'.
    true = pc.equal(text, "t")
    if pc.any(pc.and_(pc.invert(true), pc.not_equal(text, "f"))).as_py():
        raise pa.ArrowInvalid("boolean text is neither 't' nor 'f'")
    return true


def _time(text: pa.StringArray, target: pa.DataType) -> pa.Array:
    # Arrow cannot cast a string to time64: parse '1970-01-01 <time>' as a timestamp instead.
    stamps = pc.cast(pc.binary_join_element_wise("1970-01-01 ", text, ""), pa.timestamp("us"))
    return stamps.cast(pa.int64()).cast(target)


_OFFSET_FORM = re.compile(
    r"^(?P<local>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?)"
    r"(?P<sign>[+-])(?P<hh>\d\d)(?::(?P<mm>\d\d))?(?::(?P<ss>\d\d))?$"
)


def _timestamptz(text: pa.StringArray, target: pa.DataType) -> pa.Array:
    try:
        return pc.cast(text, target)  # '+00', '+05:30', '-08', '+0530', 'Z' all parse
    except pa.ArrowInvalid:
        return _timestamptz_seconds_offset(text, target)


def _timestamptz_seconds_offset(text: pa.StringArray, target: pa.DataType) -> pa.Array:
    # Outside TimeZone=UTC, old dates carry local mean time offsets such as '+00:19:32' that
    # Arrow does not parse: split the offset off and apply it in integer microseconds.
    parts = pc.extract_regex(text, _OFFSET_FORM.pattern)
    if parts.null_count != text.null_count:
        raise pa.ArrowInvalid("timestamp with time zone in an unknown form")
    local, sign, hours, minutes, seconds = parts.flatten()

    def number(digits: pa.Array) -> pa.Array:
        return pc.cast(pc.binary_join_element_wise("0", digits, ""), pa.int64())  # '' -> 0

    offset = pc.add(
        pc.add(pc.multiply(number(hours), 3600), pc.multiply(number(minutes), 60)),
        number(seconds),
    )
    offset_us = pc.multiply(pc.if_else(pc.equal(sign, "-"), -1, 1), pc.multiply(offset, 10**6))
    local_us = pc.cast(local, pa.timestamp("us")).cast(pa.int64())
    return pc.subtract_checked(local_us, offset_us).cast(target)


_CONVERTERS: dict[int, Converter] = {
    PgOid.BOOL: _bool,
    PgOid.TIME: _time,
    PgOid.TIMESTAMPTZ: _timestamptz,
}


def _converter(oid: int) -> Converter:
    return _CONVERTERS.get(oid, _cast)


def _unrepresentable(
    col: PgColumn, text: pa.StringArray, target: pa.DataType, convert: Converter
) -> UnrepresentableValue:
    """Find the first value that does not convert (bisecting with vectorized conversions)."""
    low, high = 0, len(text)  # a failing value lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            convert(text.slice(low, middle - low), target)
        except pa.ArrowInvalid:
            high = middle
        else:
            low = middle
    value = str(text[low].as_py())
    return UnrepresentableValue(col.name, value, target, unrepresentable_reason(value, target))


def unrepresentable_reason(value: str, target: pa.DataType) -> str:
    """Why ``value`` (PostgreSQL's text) has no ``target`` equivalent, in a few words."""
    lowered = value.lower()
    if lowered in ("nan", "infinity", "-infinity"):
        return f"{value} has no {target} equivalent"
    if lowered.endswith(" bc"):
        return "dates before the year 1 are not converted"
    if value.startswith("24:00:00"):
        return "Arrow times stop before 24:00:00"
    if re.match(r"^\d{5,}-", value):
        return "years after 9999 are not converted"
    return "not in the ISO text form expected with DateStyle ISO and TimeZone UTC"


# --- per-value types: bytea and arrays ---------------------------------------------------


def _bytea_column(col: PgColumn, values: Sequence[bytes | str | None]) -> pa.Array:
    decoded: list[bytes | None] = []
    for value in values:
        if value is None:
            decoded.append(None)
            continue
        raw = value.encode() if isinstance(value, str) else value
        try:
            decoded.append(_bytea(raw))
        except (binascii.Error, ValueError):
            raise UnrepresentableValue(
                col.name, raw.decode(errors="replace"), pa.binary(), "not bytea text"
            ) from None
    return pa.array(decoded, pa.binary())


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-3][0-7]{2})")


def _bytea(raw: bytes) -> bytes:
    if raw.startswith(b"\\x"):  # bytea_output = hex, the default
        return binascii.unhexlify(raw[2:])
    # bytea_output = escape: '\\' is a backslash, '\ooo' an octal byte, the rest is literal.
    if b"\\" in _BYTEA_ESCAPE.sub(b"", raw):
        raise ValueError("bad escape")
    return _BYTEA_ESCAPE.sub(
        lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1), 8)]), raw
    )


# A one-dimensional array literal as PostgreSQL prints it: elements are quoted (with backslash
# escapes) when they are empty, contain delimiters, quotes, backslashes or spaces, or spell NULL.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_BARE = r'[^",{}\\]+'
_ARRAY_1D = re.compile(rf"\{{(?:(?:{_QUOTED}|{_BARE}),)*(?:{_QUOTED}|{_BARE})\}}", re.DOTALL)
_ELEMENT = re.compile(r'"((?:[^"\\]|\\.)*)"|([^",{}\\]+)', re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def parse_array(text: str) -> list[str | None]:
    """The elements of a one-dimensional PostgreSQL array literal, None for NULL elements.

    Raises ValueError for anything else, including multi-dimensional arrays and arrays
    printed with explicit bounds (``[0:1]={1,2}``).
    """
    if text == "{}":
        return []
    inner = text[1:-1]
    if (
        text[0] == "{"
        and text[-1] == "}"
        and '"' not in inner
        and "\\" not in inner
        and "{" not in inner
        and "}" not in inner
    ):
        # Fast path: nothing is quoted, so no element holds a comma.
        items = inner.split(",")
        if "" not in items:
            return [None if item == "NULL" else item for item in items]
    if _ARRAY_1D.fullmatch(text) is None:
        raise ValueError(f"not a one-dimensional array: {text!r}")
    # The structure is valid, so scanning left to right meets exactly the elements; a bare
    # NULL is a null element (the string 'NULL' is always printed quoted).
    elements: list[str | None] = []
    for quoted, bare in _ELEMENT.findall(text):
        if bare:
            elements.append(None if bare == "NULL" else bare)
        else:
            elements.append(_ESCAPED.sub(r"\1", quoted) if "\\" in quoted else quoted)
    return elements


def _array_column(
    col: PgColumn, values: Sequence[bytes | str | None], target: pa.DataType
) -> pa.Array:
    element_col = PgColumn(col.name, ARRAY_ELEMENT_OIDS[col.type_oid], col.type_modifier)
    flat: list[str | None] = []
    offsets = [0]
    nulls: list[bool] = []
    for value in values:
        if value is None:
            nulls.append(True)
        else:
            text = value.decode() if isinstance(value, bytes) else value
            try:
                flat.extend(parse_array(text))
            except ValueError:
                raise UnrepresentableValue(
                    col.name,
                    text,
                    target,
                    "only one-dimensional arrays with default bounds map to a list",
                ) from None
            nulls.append(False)
        offsets.append(len(flat))
    elements = to_arrow(element_col, flat)
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), elements, type=target, mask=pa.array(nulls, pa.bool_())
    )


if __name__ == "__main__":  # throughput figures: python -m riverbed.lake.pgtypes
    import time

    count = 1_000_000
    samples: dict[str, tuple[PgColumn, list[bytes | str | None]]] = {
        "int8": (PgColumn("c", PgOid.INT8, -1), [str(i * 7919).encode() for i in range(count)]),
        "numeric(12,2)": (
            PgColumn("c", PgOid.NUMERIC, ((12 << 16) | 2) + 4),
            [f"{i}.{i % 100:02d}".encode() for i in range(count)],
        ),
        "text": (PgColumn("c", PgOid.TEXT, -1), [f"name {i} é".encode() for i in range(count)]),
        "bool": (PgColumn("c", PgOid.BOOL, -1), [b"t" if i % 3 else b"f" for i in range(count)]),
        "float8": (PgColumn("c", PgOid.FLOAT8, -1), [f"{i / 7}".encode() for i in range(count)]),
        "date": (
            PgColumn("c", PgOid.DATE, -1),
            [f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}".encode() for i in range(count)],
        ),
        "timestamptz": (
            PgColumn("c", PgOid.TIMESTAMPTZ, -1),
            [
                f"2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:07.{i:06d}+00".encode()
                for i in range(count)
            ],
        ),
        "time": (
            PgColumn("c", PgOid.TIME, -1),
            [f"10:{i % 60:02d}:07.{i:06d}".encode() for i in range(count)],
        ),
        "bytea": (PgColumn("c", PgOid.BYTEA, -1), [b"\\x%08x" % i for i in range(count)]),
        "int4[]": (
            PgColumn("c", PgOid.INT4_ARRAY, -1),
            [f"{{{i},{i + 1},NULL}}".encode() for i in range(count)],
        ),
        "text[]": (
            PgColumn("c", PgOid.TEXT_ARRAY, -1),
            [f'{{"a b",c{i},"q\\"x"}}'.encode() for i in range(count)],
        ),
    }
    for label, (column, raw_values) in samples.items():
        to_arrow(column, raw_values[:1000])  # load the compute kernels first
        started = time.perf_counter()
        to_arrow(column, raw_values)
        elapsed = time.perf_counter() - started
        print(f"{label:>14}: {count / elapsed:>14,.0f} values/s")
