"""Buffering decoded row changes and turning them into Arrow tables for the lake.

Every row in the lake carries the source columns plus the CDC columns of
``riverbed.lake.schema``. ``_toast_unchanged`` is decided here, at capture, because only the
decoder can tell an unchanged TOAST value ('u') from a real NULL ('n').

A primary-key change arrives as one Update carrying the old key; it is written as a D of the old
key followed by an I of the new row (as Debezium does), so each key's history stays its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from riverbed.capture.pgoutput import ProtocolError
from riverbed.capture.tuples import decode_columns
from riverbed.lake.layout import HOUR_US
from riverbed.lake.pgbinary import MalformedBinary, binary_to_arrow
from riverbed.lake.pgtypes import PgColumn, UnrepresentableValue, to_arrow
from riverbed.lake.schema import CDC_FIELDS, OP, SEQ, TOAST_UNCHANGED

SUBXID = "_subxid"  # staged rows of a streamed transaction: which (sub)transaction wrote each


@dataclass(frozen=True)
class TableSchema:
    """One version of a captured table's columns."""

    table: str  # lake table name (the source table name without schema)
    version: int
    columns: tuple[PgColumn, ...]
    keys: tuple[int, ...]  # indexes of replica identity columns

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": c.name,
                "type_oid": c.type_oid,
                "type_modifier": c.type_modifier,
                "type_name": c.type_name,
                "key": i in self.keys,
            }
            for i, c in enumerate(self.columns)
        ]

    def same_columns(self, other: TableSchema) -> bool:
        return self.describe() == other.describe()


@dataclass
class TxInfo:
    commit_lsn: int
    commit_ts_us: int
    xid: int | None


@dataclass
class TableBuffer:
    """Row messages of one table in one schema version, in stream order, still undecoded.

    Payloads are kept as received (TupleData at offset 6) and decoded column-at-a-time by
    ``tuples.decode_columns`` when the buffer is written: the stream's per-row cost is an append.
    """

    schema: TableSchema
    payloads: list[bytes] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    txs: list[int] = field(default_factory=list)  # index into the owning batch's tx list
    # a streamed transaction's rows only: the (sub)transaction each row was streamed with
    subxids: list[int] = field(default_factory=list)

    def add(self, op: str, payload: bytes, seq: int, tx: int) -> None:
        self.payloads.append(payload)
        self.ops.append(op)
        self.seqs.append(seq)
        self.txs.append(tx)

    def __len__(self) -> int:
        return len(self.payloads)

    def take(self, other: TableBuffer, tx: int) -> None:
        """Append ``other``'s rows (a streamed transaction's, committed as ``tx``)."""
        self.payloads.extend(other.payloads)
        self.ops.extend(other.ops)
        self.seqs.extend(other.seqs)
        self.txs.extend([tx] * len(other))

    def drop(self, aborted: set[int]) -> None:
        """Leave out the rows of aborted subtransactions (``subxids``: streamed rows only)."""
        keep = [i for i, subxid in enumerate(self.subxids) if subxid not in aborted]
        self.payloads = [self.payloads[i] for i in keep]
        self.ops = [self.ops[i] for i in keep]
        self.seqs = [self.seqs[i] for i in keep]
        self.txs = [self.txs[i] for i in keep]
        self.subxids = [self.subxids[i] for i in keep]

    def to_arrow(self, txs: list[TxInfo]) -> pa.Table:
        """The buffered rows as an Arrow table: typed source columns, then the CDC columns."""
        n = len(self.payloads)
        arrays, fields, unchanged = self._source_columns()
        tx_index = np.asarray(self.txs, dtype=np.int64)
        commit_ts: Any = np.asarray([t.commit_ts_us for t in txs], dtype=np.int64)[tx_index]
        lsns: Any = np.asarray([t.commit_lsn for t in txs], dtype=np.int64)[tx_index]
        xid_of_tx = [t.xid for t in txs]
        cdc = [
            pa.array(self.ops, pa.string()),
            pa.array(commit_ts, pa.timestamp("us", tz="UTC")),
            pa.array(lsns, pa.int64()),
            pa.array(self.seqs, pa.int64()),
            pa.array([xid_of_tx[i] for i in self.txs], pa.int64()),
            _unchanged_column(unchanged, n),
        ]
        return pa.Table.from_arrays(arrays + cdc, schema=pa.schema(fields + CDC_FIELDS))

    def staged(self) -> pa.Table:
        """The rows of a streamed transaction before its commit is known: the typed source
        columns, then those CDC columns that do not depend on the commit, and each row's
        (sub)transaction id (``streamed.staged_rows`` adds the rest)."""
        arrays, fields, unchanged = self._source_columns()
        extra = {
            OP: pa.array(self.ops, pa.string()),
            SEQ: pa.array(self.seqs, pa.int64()),
            TOAST_UNCHANGED: _unchanged_column(unchanged, len(self)),
            SUBXID: pa.array(self.subxids, pa.int64()),
        }
        return pa.Table.from_arrays(
            arrays + list(extra.values()), names=[f.name for f in fields] + list(extra)
        )

    def _source_columns(self) -> tuple[list[pa.Array], list[pa.Field], list[Any] | None]:
        """The typed source columns, their fields, and per row the names of its unchanged
        TOASTed columns (None when no row has one)."""
        n = len(self.payloads)
        try:
            decoded = decode_columns(self.payloads, len(self.schema.columns))
        except ProtocolError as exc:
            raise ProtocolError(f"{exc.detail} in a row of table {self.schema.table}") from exc
        arrays: list[pa.Array] = []
        fields: list[pa.Field] = []
        marks: dict[int, list[str]] = {}
        for column, raw in zip(self.schema.columns, decoded, strict=True):
            convert = binary_to_arrow if raw.binary else to_arrow
            try:
                array = convert(column, raw.values)
            except UnrepresentableValue:
                # e.g. numeric 'NaN' in a decimal column: keep the exact text rather than lose it
                array = convert(column, raw.values, as_string=True)
            except MalformedBinary as exc:
                raise ProtocolError(
                    f"column {column.name} of table {self.schema.table}: {exc}"
                ) from exc
            arrays.append(array)
            fields.append(pa.field(column.name, array.type))
            if raw.unchanged is not None:
                for row in np.nonzero(raw.unchanged)[0]:
                    marks.setdefault(int(row), []).append(column.name)
        return arrays, fields, [marks.get(i) for i in range(n)] if marks else None


def _unchanged_column(unchanged: list[Any] | None, n: int) -> pa.Array:
    if unchanged:
        return pa.array(unchanged, pa.list_(pa.string()))
    return pa.nulls(n, pa.list_(pa.string()))


def partitions(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """Split rows by the lake partition of their commit time: [(the hour's start in
    microseconds, rows)], in time order."""
    if table.num_rows == 0:
        return []
    ts = table.column("_commit_ts").combine_chunks().cast(pa.int64()).to_numpy()
    hours = ts // HOUR_US
    result = []
    for hour in np.unique(hours):
        mask = hours == hour
        rows = table if mask.all() else table.filter(pa.array(mask))
        result.append((int(hour) * HOUR_US, rows))
    return result
