"""PostgreSQL values in their *binary send format* to Arrow arrays, as pgoutput's ``binary``
option (PostgreSQL 14+) carries them.

The server produces the binary form more cheaply than the text one (no int8out, numeric_out or
timestamptz_out per value), and most of it maps onto Arrow columns with a reinterpretation of
bytes: integers and floats are big-endian fixed width, date is int32 days and time/timestamp
int64 microseconds since 2000-01-01, bool one byte, bytea its raw bytes. The lake must hold
exactly what text mode would have put there, value for value and type for type
(``pgtypes.to_arrow`` is the reference), so:

* The same Arrow types (``pgtypes.arrow_type``) and the same refusals: a value the Arrow type
  cannot hold (numeric NaN/Infinity in a decimal column, infinite, BC or post-9999 dates and
  timestamps, time 24:00) raises :class:`UnrepresentableValue`, and ``as_string=True`` gives
  the column as the text PostgreSQL would have printed (``binary_text``), which is what text
  mode keeps in that case.
* numeric: ``numeric(p, s)`` with p <= 18 is computed vectorized from its base-10000 digit
  groups as the scaled int64. Everything else (wider decimals, unconstrained numeric kept as
  text) is printed as numeric_out prints it and converted by the text path, so no rule of the
  text path is re-implemented here: vectorized too (each value as an int64 of its own display
  scale) unless a value has more than 18 digits, then value by value. Printing costs capture
  more than text mode, where the server prints, but less than the binary form saves on the
  other columns of a row.
* Types whose binary form is their text (text, varchar, char(n), name, json, enums) go through
  the text path unchanged; jsonb is its text behind a version byte.

Types not listed in :data:`BINARY_TYPES` (arrays, interval, inet, composites, domains...) are
not decoded: a stream that would carry them runs in text mode (``capture.binary_mode``).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riverbed.lake.pgtypes import (
    PgColumn,
    PgOid,
    UnrepresentableValue,
    arrow_type,
    to_arrow,
    unrepresentable_reason,
)

PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since the Unix epoch
PG_EPOCH_US = PG_EPOCH_DAYS * 86_400_000_000
_POSTGRES_EPOCH_JDATE = 2_451_545  # 2000-01-01 as a Julian day
_DAY_US = 86_400_000_000
# what Arrow's text parsing accepts, and so what text mode lands typed: years 1 to 9999
_MIN_DAYS, _MAX_DAYS = -719_162 - PG_EPOCH_DAYS, 2_932_896 - PG_EPOCH_DAYS
_MIN_US = -62_135_596_800_000_000 - PG_EPOCH_US
_MAX_US = 253_402_300_799_999_999 - PG_EPOCH_US
_NUMERIC_HEAD = struct.Struct(">hhHh")  # ndigits, weight, sign, dscale
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000
_NUMERIC_SPECIAL = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
_MAX_SCALED_PRECISION = 18  # digits that always fit an int64

# Binary form identical to the text form: the text path reads the bytes as they are.
SAME_AS_TEXT: frozenset[int] = frozenset(
    {PgOid.TEXT, PgOid.VARCHAR, PgOid.BPCHAR, PgOid.NAME, PgOid.JSON}
)


class MalformedBinary(ValueError):
    """A value whose length does not match its type's binary form."""


Decoder: TypeAlias = Callable[[PgColumn, pa.BinaryArray], pa.Array]


def binary_to_arrow(col: PgColumn, values: pa.BinaryArray, *, as_string: bool = False) -> pa.Array:
    """Convert binary-format values of ``col`` (null for SQL NULL) to ``arrow_type(col)``, or
    with ``as_string=True`` to the text PostgreSQL prints for them. Raises
    :class:`UnrepresentableValue` as ``pgtypes.to_arrow`` does for the same values."""
    values = _plain(values)
    decode = _DECODERS.get(col.type_oid)
    if decode is None:  # the same bytes as the text form (text-like types, enums)
        return to_arrow(col, values, as_string=as_string)
    if as_string:
        return to_arrow(col, binary_text(col, values), as_string=True)
    return decode(col, values)


def _plain(values: pa.Array) -> pa.BinaryArray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pa.concat_arrays([values]) if values.offset else values


def _layout(values: pa.BinaryArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value offsets, validity, data bytes) of an unsliced binary array."""
    n = len(values)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=n + 1).astype(np.int64)
    valid = np.ones(n, dtype=bool) if not values.null_count else values.is_valid().to_numpy(False)
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, np.uint8)
    )
    return offsets, valid, data


def _fixed(values: pa.BinaryArray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-width big-endian values: (every row's value in native order, 0 where null;
    validity)."""
    offsets, valid, data = _layout(values)
    width = np.dtype(dtype).itemsize
    lengths = np.diff(offsets)
    if (lengths[valid] != width).any():
        raise MalformedBinary(f"a {dtype} value that is not {width} bytes long")
    count = int(valid.sum())
    start = int(offsets[0])
    present = np.frombuffer(data[start : start + count * width].tobytes(), dtype=dtype)
    full = np.zeros(len(values), dtype=np.dtype(dtype).newbyteorder("="))
    full[valid] = present
    return full, valid


def _with_validity(target: pa.DataType, full: np.ndarray, values: pa.BinaryArray) -> pa.Array:
    return pa.Array.from_buffers(
        target, len(values), [values.buffers()[0], pa.py_buffer(full)], values.null_count
    )


def _unrepresentable(
    col: PgColumn, values: pa.BinaryArray, bad: np.ndarray
) -> UnrepresentableValue:
    row = int(np.flatnonzero(bad)[0])
    text = _TEXT[col.type_oid](values[row].as_py())
    target = arrow_type(col)
    return UnrepresentableValue(col.name, text, target, unrepresentable_reason(text, target))


def _fixed_width(dtype: str) -> Decoder:
    def decode(col: PgColumn, values: pa.BinaryArray) -> pa.Array:
        full, _ = _fixed(values, dtype)
        return _with_validity(arrow_type(col), full, values)

    return decode


def _bool(_col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    full, valid = _fixed(values, "u1")
    return pa.array(full != 0, pa.bool_(), mask=~valid if values.null_count else None)


def _date(col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    full, valid = _fixed(values, ">i4")
    bad = valid & ((full < _MIN_DAYS) | (full > _MAX_DAYS))
    if bad.any():
        raise _unrepresentable(col, values, bad)
    return _with_validity(pa.date32(), full + np.int32(PG_EPOCH_DAYS), values)


def _time(col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    full, valid = _fixed(values, ">i8")
    bad = valid & ((full < 0) | (full >= _DAY_US))
    if bad.any():
        raise _unrepresentable(col, values, bad)
    return _with_validity(pa.time64("us"), full, values)


def _timestamp(col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    full, valid = _fixed(values, ">i8")
    bad = valid & ((full < _MIN_US) | (full > _MAX_US))  # infinity is INT64_MIN / INT64_MAX
    if bad.any():
        raise _unrepresentable(col, values, bad)
    return _with_validity(arrow_type(col), full + np.int64(PG_EPOCH_US), values)


def _bytea(_col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    return values  # the bytes themselves


def _jsonb(col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    offsets, valid, data = _layout(values)
    lengths = np.diff(offsets)
    firsts = offsets[:-1][valid]
    if (lengths[valid] < 1).any() or (data[firsts] != 1).any():
        raise MalformedBinary("a jsonb value of an unknown format version")
    # the text behind each value's version byte
    keep = np.ones(int(offsets[-1]), dtype=bool)
    keep[: offsets[0]] = False
    keep[firsts] = False
    text_offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths - valid, out=text_offsets[1:])
    text = pa.BinaryArray.from_buffers(
        pa.binary(),
        len(values),
        [values.buffers()[0], pa.py_buffer(text_offsets), pa.py_buffer(data[: len(keep)][keep])],
        values.null_count,
    )
    return to_arrow(col, text)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# where each of the 36 characters of '8-4-4-4-12' comes from in the 32 hex digits (-1: a dash)
_UUID_SOURCE = np.array(
    [
        i - (i > 8) - (i > 13) - (i > 18) - (i > 23) if i not in (8, 13, 18, 23) else -1
        for i in range(36)
    ]
)


def _uuid(_col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    offsets, valid, data = _layout(values)
    if (np.diff(offsets)[valid] != 16).any():
        raise MalformedBinary("a uuid value that is not 16 bytes long")
    count = int(valid.sum())
    start = int(offsets[0])
    raw = data[start : start + 16 * count].reshape(count, 16)
    digits = np.empty((count, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    keep = _UUID_SOURCE >= 0
    text[:, keep] = digits[:, _UUID_SOURCE[keep]]
    lengths = np.where(valid, 36, 0)
    text_offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=text_offsets[1:])
    return pa.StringArray.from_buffers(
        len(values),
        pa.py_buffer(text_offsets),
        pa.py_buffer(text.tobytes()),
        values.buffers()[0],
        values.null_count,
    )


def _numeric(col: PgColumn, values: pa.BinaryArray) -> pa.Array:
    target = arrow_type(col)
    if pa.types.is_decimal128(target) and target.precision <= _MAX_SCALED_PRECISION:
        scaled = _numeric_scaled(values, target.scale, target.precision)
        if scaled is not None:
            return unscaled_to_decimal(_with_validity(pa.int64(), scaled, values), target)
    # wider decimals, unconstrained numeric (a string), or a value a decimal cannot hold:
    # the text numeric_out prints, converted as text mode converts it
    text = _numeric_strings(values)
    return to_arrow(col, text if text is not None else binary_text(col, values))


class _Numerics:
    """The headers of a column's numeric values in binary form (NULLs left out)."""

    def __init__(self, values: pa.BinaryArray):
        offsets, self.valid, self.data = _layout(values)
        self.starts = offsets[:-1][self.valid]
        self.ndigits, self.weight = self._u16(self.starts), self._i16(self.starts + 2)
        self.sign, self.dscale = self._u16(self.starts + 4), self._i16(self.starts + 6)
        if (np.diff(offsets)[self.valid] != 8 + 2 * self.ndigits).any():
            raise MalformedBinary("a numeric value whose length does not match its digit count")

    def _u16(self, at: np.ndarray) -> np.ndarray:
        return (self.data[at].astype(np.int64) << 8) | self.data[at + 1]

    def _i16(self, at: np.ndarray) -> np.ndarray:
        return (self._u16(at) ^ 0x8000) - 0x8000

    def scaled(self, scale: int | np.ndarray, limit: int) -> np.ndarray | None:
        """Each value's absolute value times 10**scale (one scale, or one per value) as an
        int64, or None when one is not an exact fit below ``limit``. NaN and the infinities,
        which have no digits, count as 0."""
        first = np.zeros(len(self.starts), dtype=np.int64)
        np.cumsum(self.ndigits[:-1], out=first[1:])
        owner = np.repeat(np.arange(len(self.starts)), self.ndigits)
        k = np.arange(len(owner)) - first[owner]
        digit = self._u16(self.starts[owner] + 8 + 2 * k)
        per_value = scale[owner] if isinstance(scale, np.ndarray) else scale
        exponent = 4 * (self.weight[owner] - k) + per_value  # of 10 for this digit group
        used = digit != 0
        if (used & ((exponent > 14) | (exponent < -3))).any():
            return None  # beyond an int64, or digits past the scale
        power = 10 ** np.abs(np.clip(exponent, -3, 14))
        if (used & (exponent < 0) & (digit % power != 0)).any():
            return None
        parts = np.where(exponent >= 0, digit * power, digit // power)
        scaled = np.zeros(len(self.starts), dtype=np.int64)
        nonzero = self.ndigits > 0
        if nonzero.any():
            scaled[nonzero] = np.add.reduceat(parts, first[nonzero])
        return None if (scaled >= limit).any() else scaled


def _numeric_scaled(values: pa.BinaryArray, scale: int, precision: int) -> np.ndarray | None:
    """Every value times 10**scale as an int64 (0 where null), or None when one is not an
    exact fit (NaN, infinities, digits past the scale or the precision)."""
    numerics = _Numerics(values)
    sign = numerics.sign
    if ((sign != _NUMERIC_POS) & (sign != _NUMERIC_NEG)).any():
        return None
    scaled = numerics.scaled(scale, 10**precision)
    if scaled is None:
        return None
    full = np.zeros(len(values), dtype=np.int64)
    full[numerics.valid] = np.where(sign == _NUMERIC_NEG, -scaled, scaled)
    return full


def _numeric_strings(values: pa.BinaryArray) -> pa.Array | None:
    """numeric_out of every value, vectorized: each value as an int64 of its own display
    scale (dscale) printed with the point put back; None when one has more than 18 digits
    (binary_text prints those one by one)."""
    numerics = _Numerics(values)
    scaled = numerics.scaled(numerics.dscale, 10**_MAX_SCALED_PRECISION)
    if scaled is None:
        return None
    pieces: list[pa.Array] = [pa.nulls(len(values) - len(scaled), pa.string())]
    rows = [np.flatnonzero(~numerics.valid)]
    where = np.flatnonzero(numerics.valid)
    special = (numerics.sign != _NUMERIC_POS) & (numerics.sign != _NUMERIC_NEG)
    for sign, text in _NUMERIC_SPECIAL.items():
        chosen = numerics.sign == sign
        pieces.append(pa.array([text] * int(chosen.sum()), pa.string()))
        rows.append(where[chosen])
    negative = numerics.sign == _NUMERIC_NEG
    for dscale in np.unique(numerics.dscale[~special]):
        chosen = ~special & (numerics.dscale == dscale)
        whole, fraction = np.divmod(scaled[chosen], 10 ** int(dscale))
        text = pa.array(whole).cast(pa.string())
        if dscale > 0:
            digits = pc.utf8_lpad(pa.array(fraction).cast(pa.string()), int(dscale), "0")
            text = pc.binary_join_element_wise(text, digits, ".")
        minus = pa.array(np.where(negative[chosen], "-", ""), pa.string())
        pieces.append(pc.binary_join_element_wise(minus, text, ""))
        rows.append(where[chosen])
    order = np.argsort(np.concatenate(rows), kind="stable")
    return pa.concat_arrays(pieces).take(pa.array(order))


def unscaled_to_decimal(values: pa.Array, target: pa.DataType) -> pa.Array:
    """int64 unscaled values -> decimal128 of the same digits: the 16-byte little-endian
    integer is the int64 and its sign extension."""
    if values.offset:
        values = pa.concat_arrays([values])
    low = np.frombuffer(values.buffers()[1], dtype=np.int64, count=len(values))
    wide = np.empty((len(values), 2), dtype=np.int64)
    wide[:, 0] = low
    wide[:, 1] = low >> 63
    return pa.Array.from_buffers(
        target, len(values), [values.buffers()[0], pa.py_buffer(wide)], values.null_count
    )


# --- the text PostgreSQL prints for a binary value (DateStyle ISO, TimeZone UTC) ----------


def binary_text(col: PgColumn, values: pa.BinaryArray) -> list[str | None]:
    """Each value as the type's output function prints it, None for NULL."""
    text = _TEXT[col.type_oid]
    return [None if v is None else text(v) for v in values.to_pylist()]


def numeric_text(raw: bytes) -> str:
    """numeric_out of a numeric's binary form: integer part, then exactly dscale decimals."""
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(raw)
    if sign in _NUMERIC_SPECIAL:
        return _NUMERIC_SPECIAL[sign]
    digits = struct.unpack_from(f">{ndigits}h", raw, 8)

    def group(i: int) -> int:
        return digits[i] if 0 <= i < ndigits else 0

    whole = "0" if weight < 0 else str(int("".join(f"{group(i):04d}" for i in range(weight + 1))))
    text = whole
    if dscale > 0:
        fraction = "".join(f"{group(weight + j):04d}" for j in range(1, (dscale + 3) // 4 + 1))
        text = f"{whole}.{fraction[:dscale]}"
    return "-" + text if sign == _NUMERIC_NEG else text


def _j2date(julian_day: int) -> tuple[int, int, int]:
    """PostgreSQL's j2date: a Julian day to (year, month, day); year 0 is 1 BC."""
    julian = julian_day + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = ((julian + 305) % 365 if y != 0 else (julian + 306) % 366) + 123
    y += quad * 4
    quad = julian * 2141 // 65536
    return y - 4800, (quad + 10) % 12 + 1, julian - 7834 * quad // 256


def _ymd(days: int) -> tuple[str, bool]:
    """'YYYY-MM-DD' of days since 2000-01-01, and whether it is BC."""
    year, month, day = _j2date(days + _POSTGRES_EPOCH_JDATE)
    bc = year <= 0
    return f"{1 - year if bc else year:04d}-{month:02d}-{day:02d}", bc


def _clock(us: int) -> str:
    seconds, fraction = divmod(us, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction:06d}".rstrip("0") if fraction else text


def date_text(raw: bytes) -> str:
    days = struct.unpack(">i", raw)[0]
    if days in (-(2**31), 2**31 - 1):
        return "-infinity" if days < 0 else "infinity"
    ymd, bc = _ymd(days)
    return ymd + " BC" if bc else ymd


def time_text(raw: bytes) -> str:
    return _clock(struct.unpack(">q", raw)[0])


def _timestamp_text(raw: bytes, zone: str) -> str:
    us = struct.unpack(">q", raw)[0]
    if us in (-(2**63), 2**63 - 1):
        return "-infinity" if us < 0 else "infinity"
    days, rest = divmod(us, _DAY_US)
    ymd, bc = _ymd(days)
    text = f"{ymd} {_clock(rest)}{zone}"
    return text + " BC" if bc else text


def _int_text(raw: bytes) -> str:
    return str(int.from_bytes(raw, "big", signed=True))


_TEXT: dict[int, Callable[[bytes], str]] = {
    PgOid.INT2: _int_text,
    PgOid.INT4: _int_text,
    PgOid.INT8: _int_text,
    PgOid.BOOL: lambda raw: "t" if raw[0] else "f",
    PgOid.NUMERIC: numeric_text,
    PgOid.DATE: date_text,
    PgOid.TIME: time_text,
    PgOid.TIMESTAMP: lambda raw: _timestamp_text(raw, ""),
    PgOid.TIMESTAMPTZ: lambda raw: _timestamp_text(raw, "+00"),
    PgOid.UUID: lambda raw: str(uuid.UUID(bytes=raw)),
    PgOid.JSONB: lambda raw: raw[1:].decode(),
}

_DECODERS: dict[int, Decoder] = {
    PgOid.INT2: _fixed_width(">i2"),
    PgOid.INT4: _fixed_width(">i4"),
    PgOid.INT8: _fixed_width(">i8"),
    PgOid.FLOAT4: _fixed_width(">f4"),  # IEEE bits: NaN and the infinities are values
    PgOid.FLOAT8: _fixed_width(">f8"),
    PgOid.BOOL: _bool,
    PgOid.NUMERIC: _numeric,
    PgOid.DATE: _date,
    PgOid.TIME: _time,
    PgOid.TIMESTAMP: _timestamp,
    PgOid.TIMESTAMPTZ: _timestamp,
    PgOid.UUID: _uuid,
    PgOid.BYTEA: _bytea,
    PgOid.JSONB: _jsonb,
}

BINARY_TYPES: frozenset[int] = frozenset(_DECODERS) | SAME_AS_TEXT
"""Built-in types whose binary form Riverbed reads exactly (besides enums, whose binary form
is their label, and types without one, which pgoutput sends as text anyway)."""
