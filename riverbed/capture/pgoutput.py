"""Decoding PostgreSQL's pgoutput logical replication protocol (version 1, or 2 with the
``streaming`` option: ``capture.streamed``; with or without the ``binary`` option).

Message layouts follow "Logical Replication Message Formats" in the PostgreSQL manual. The row
messages (Insert, Update, Delete) are the hot path: the capture loop dispatches on the first byte
and calls :func:`parse_tuple` directly, keeping per-column work to a slice and a branch; values
stay raw text bytes here and are converted column-at-a-time to Arrow types at flush time
(``pgtypes.to_arrow``), where vectorised casts make that cheap.

A column value arrives as one of:
  'n'  NULL
  'u'  unchanged TOASTed value: the update did not touch this large column and the server did
       not send it. Reported to the caller as UNCHANGED so the lake can mark it (never a NULL,
       which would be a wrong value).
  't'  text representation
  'b'  binary representation: with the 'binary' option (PostgreSQL 14+), for every column whose
       type has a binary send function (the server decides per type, and sends the others as
       text); converted by ``pgbinary.binary_to_arrow``. The few rows the capture derives
       itself (:func:`encode_tuple`) keep each value's form: a :class:`BinaryValue` stays 'b'.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from riverbed.errors import RiverbedError

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since the Unix epoch

_I16 = Struct(">h")
_I32 = Struct(">i")
_U32 = Struct(">I")
_I64 = Struct(">q")
_BEGIN = Struct(">QqI")  # final_lsn, commit timestamp, xid
_COMMIT = Struct(">bQQq")  # flags, commit_lsn, end_lsn, commit timestamp
_MESSAGE_HEAD = Struct(">bQ")  # flags, lsn
_STREAM_START = Struct(">Ib")  # xid, first segment
_STREAM_COMMIT = Struct(">IbQQq")  # xid, flags, commit_lsn, end_lsn, commit timestamp
_STREAM_ABORT = Struct(">II")  # xid, subtransaction xid


class _Unchanged:
    """Marker for an unchanged TOASTed column value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()


class BinaryValue(bytes):
    """A column value that arrived in binary form ('b'), as :func:`parse_tuple` returns it."""

    __slots__ = ()


class ProtocolError(RiverbedError, ValueError):
    """A message that does not follow the pgoutput format (a bug or an incompatible server).

    Terminal: the same message arrives again on every retry. Nothing of it reaches the lake,
    whose manifest position still says where the next capture resumes."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(
            f"the replication stream is malformed: {detail}; Riverbed reads pgoutput protocol "
            "versions 1 and 2, so check the source server's version and report this if it is one "
            "Riverbed supports (the lake is intact: capture resumes where it stopped)"
        )


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_ts_us: int  # Unix epoch microseconds
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_ts_us: int


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True)
class Origin:
    commit_lsn: int
    name: str


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def parse_begin(buf: bytes) -> Begin:
    final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(final_lsn, ts + PG_EPOCH_US, xid)


def parse_commit(buf: bytes) -> Commit:
    _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(commit_lsn, end_lsn, ts + PG_EPOCH_US)


def parse_stream_start(buf: bytes) -> tuple[int, bool]:
    """Stream Start (protocol 2+): (xid, whether this is the transaction's first block)."""
    xid, first = _STREAM_START.unpack_from(buf, 1)
    return xid, first == 1


def parse_stream_commit(buf: bytes) -> tuple[int, Commit]:
    """Stream Commit: (xid, the commit as a Commit message would carry it)."""
    xid, _flags, commit_lsn, end_lsn, ts = _STREAM_COMMIT.unpack_from(buf, 1)
    return xid, Commit(commit_lsn, end_lsn, ts + PG_EPOCH_US)


def parse_stream_abort(buf: bytes) -> tuple[int, int]:
    """Stream Abort: (xid, subtransaction xid), the two equal when the whole transaction
    aborted. (Protocol 4's parallel mode adds the abort's LSN and time, never asked for.)"""
    xid, subxid = _STREAM_ABORT.unpack_from(buf, 1)
    return xid, subxid


def parse_relation(buf: bytes) -> Relation:
    relid = _U32.unpack_from(buf, 1)[0]
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    count = _I16.unpack_from(buf, pos + 1)[0]
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        column, pos = _cstring(buf, pos + 1)
        type_oid = _U32.unpack_from(buf, pos)[0]
        modifier = _I32.unpack_from(buf, pos + 4)[0]
        pos += 8
        columns.append(Column(column, type_oid, modifier, bool(flags & 1)))
    return Relation(relid, namespace, name, identity, tuple(columns))


def parse_type(buf: bytes) -> TypeInfo:
    oid = _U32.unpack_from(buf, 1)[0]
    namespace, pos = _cstring(buf, 5)
    name, _ = _cstring(buf, pos)
    return TypeInfo(oid, namespace, name)


def parse_truncate(buf: bytes) -> Truncate:
    count = _I32.unpack_from(buf, 1)[0]
    options = buf[5]
    relids = tuple(_U32.unpack_from(buf, 6 + 4 * i)[0] for i in range(count))
    return Truncate(relids, bool(options & 1), bool(options & 2))


def parse_message(buf: bytes) -> Message:
    flags, lsn = _MESSAGE_HEAD.unpack_from(buf, 1)
    prefix, pos = _cstring(buf, 10)
    length = _I32.unpack_from(buf, pos)[0]
    return Message(bool(flags & 1), lsn, prefix, bytes(buf[pos + 4 : pos + 4 + length]))


def parse_origin(buf: bytes) -> Origin:
    lsn = _I64.unpack_from(buf, 1)[0]
    name, _ = _cstring(buf, 9)
    return Origin(lsn, name)


def parse_tuple(buf: bytes, pos: int) -> tuple[list[bytes | _Unchanged | None], int]:
    """Parse TupleData at ``pos``; returns (values, position after the tuple).

    Values are raw text bytes (a :class:`BinaryValue` when sent in binary), None for NULL, or
    UNCHANGED for an unchanged TOASTed value.
    """
    count = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    values: list[bytes | _Unchanged | None] = [None] * count
    for i in range(count):
        kind = buf[pos]
        if kind == 116 or kind == 98:  # 't' text, 'b' binary
            length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            pos += 5
            value = buf[pos : pos + length]
            values[i] = BinaryValue(value) if kind == 98 else value
            pos += length
        elif kind == 110:  # 'n' NULL
            pos += 1
        elif kind == 117:  # 'u' unchanged TOAST
            values[i] = UNCHANGED
            pos += 1
        else:
            raise ProtocolError(f"unknown tuple column kind {kind!r} at byte {pos}")
    return values, pos


def encode_tuple(values: list[bytes | _Unchanged | None]) -> bytes:
    """TupleData for ``values`` (the inverse of :func:`parse_tuple`), for rows the capture
    derives itself: the halves of a key change, truncate markers, FULL-identity updates."""
    parts = [len(values).to_bytes(2, "big")]
    for value in values:
        if value is None:
            parts.append(b"n")
        elif value is UNCHANGED:
            parts.append(b"u")
        else:
            assert isinstance(value, bytes | bytearray | memoryview)
            kind = b"b" if isinstance(value, BinaryValue) else b"t"
            parts.append(kind + len(value).to_bytes(4, "big") + bytes(value))
    return b"".join(parts)


def row_message(kind: bytes, relid: int, values: list[bytes | _Unchanged | None]) -> bytes:
    """A payload in the shape of an Insert ('I'), Update ('U') or Delete ('D') of ``values``."""
    marker = b"K" if kind == b"D" else b"N"
    return kind + relid.to_bytes(4, "big") + marker + encode_tuple(values)


def parse_insert(buf: bytes) -> tuple[int, list[bytes | _Unchanged | None]]:
    relid = _U32.unpack_from(buf, 1)[0]
    if buf[5] != 78:  # 'N'
        raise ProtocolError("Insert without a new tuple")
    values, _ = parse_tuple(buf, 6)
    return relid, values


def parse_update(
    buf: bytes,
) -> tuple[
    int, str | None, list[bytes | _Unchanged | None] | None, list[bytes | _Unchanged | None]
]:
    """Returns (relid, old kind 'K'/'O' or None, old values or None, new values)."""
    relid = _U32.unpack_from(buf, 1)[0]
    kind = buf[5]
    old: list[bytes | _Unchanged | None] | None = None
    old_kind = None
    pos = 6
    if kind == 75 or kind == 79:  # 'K' old key, 'O' old tuple (REPLICA IDENTITY FULL)
        old_kind = chr(kind)
        old, pos = parse_tuple(buf, 6)
        if buf[pos] != 78:
            raise ProtocolError("Update without a new tuple")
        pos += 1
    elif kind != 78:
        raise ProtocolError(f"Update with unknown tuple kind {kind!r}")
    new, _ = parse_tuple(buf, pos)
    return relid, old_kind, old, new


def parse_delete(buf: bytes) -> tuple[int, str, list[bytes | _Unchanged | None]]:
    relid = _U32.unpack_from(buf, 1)[0]
    kind = buf[5]
    if kind not in (75, 79):
        raise ProtocolError(f"Delete with unknown tuple kind {kind!r}")
    old, _ = parse_tuple(buf, 6)
    return relid, chr(kind), old
