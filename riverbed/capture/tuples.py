"""Column-at-a-time decoding of pgoutput TupleData, for many rows at once.

The capture loop does not parse row messages one by one: it keeps each Insert / Update /
Delete payload as received and, at flush time, decodes all rows of one table version together.
TupleData is a sequence of (kind byte [, int32 length, bytes]) per column; since every row of a
table version has the same column count, the position of column c in every row can be advanced
for all rows at once with numpy, and each column's values gathered into one Arrow binary array
(which ``pgtypes.to_arrow``, or ``pgbinary.binary_to_arrow`` for values in binary form, then
converts in one go). Python work per row is one list append.

Layout reminders: a stored payload has its TupleData at offset 6 (kind byte, relid, 'N'/'K'/'O').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from riverbed.capture.pgoutput import ProtocolError

TUPLE_OFFSET = 6
_TEXT, _BINARY, _NULL, _UNCHANGED = 116, 98, 110, 117


@dataclass(frozen=True)
class DecodedColumn:
    values: pa.BinaryArray  # raw values as sent, null for NULL and for unchanged TOAST
    unchanged: np.ndarray | None  # bool per row: value not sent (unchanged TOAST), or None if none
    binary: bool = False  # the values are in the type's binary send format, not its text


def decode_columns(payloads: list[bytes], column_count: int) -> list[DecodedColumn]:
    """Decode the TupleData of every payload (each at TUPLE_OFFSET) into per-column arrays."""
    n = len(payloads)
    if n == 0:
        return [DecodedColumn(pa.array([], pa.binary()), None) for _ in range(column_count)]
    lengths = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=n)
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    pos = starts + TUPLE_OFFSET
    counts = (data[pos].astype(np.int64) << 8) | data[pos + 1]
    if (counts != column_count).any():
        raise ProtocolError(
            f"a row carries {int(counts[counts != column_count][0])} columns, the relation {column_count}"
        )
    pos += 2
    columns = []
    for _ in range(column_count):
        kind = data[pos]
        binary = kind == _BINARY
        has_value = (kind == _TEXT) | binary
        bad = ~(has_value | (kind == _NULL) | (kind == _UNCHANGED))
        if bad.any():
            raise ProtocolError(f"unknown tuple column kind {int(kind[bad][0])!r}")
        # the server picks a column's form by its type, so one column never mixes the two
        is_binary = bool(binary.any())
        if is_binary and (kind == _TEXT).any():
            raise ProtocolError("a column carries both text and binary values")
        lens = np.zeros(n, dtype=np.int64)
        at = pos[has_value]
        lens[has_value] = (
            (data[at + 1].astype(np.int64) << 24)
            | (data[at + 2].astype(np.int64) << 16)
            | (data[at + 3].astype(np.int64) << 8)
            | data[at + 4]
        )
        columns.append(_gather(data, pos + 5, lens, has_value, kind == _UNCHANGED, is_binary))
        pos = pos + 1 + np.where(has_value, 4 + lens, 0)
    return columns


def _gather(
    data: np.ndarray,
    value_starts: np.ndarray,
    lens: np.ndarray,
    present: np.ndarray,
    unchanged: np.ndarray,
    binary: bool,
) -> DecodedColumn:
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    if total:
        # index of every value byte: each value's start, repeated over its length, plus 0..len-1
        index = np.repeat(value_starts - offsets[:-1], lens) + np.arange(total, dtype=np.int64)
        values = data[index]
    else:
        values = np.zeros(0, dtype=np.uint8)
    validity = pa.array(present).buffers()[1]
    if total >= 2**31 - 1:
        array = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), len(lens), [validity, pa.py_buffer(offsets), pa.py_buffer(values)]
        ).cast(pa.binary())
    else:
        array = pa.BinaryArray.from_buffers(
            pa.binary(),
            len(lens),
            [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(values)],
        )
    return DecodedColumn(array, unchanged if unchanged.any() else None, binary)
