"""What a ChangeStream (riverbed.capture.stream) is given and gives back: the names and
numbers it runs by, the questions it asks of the source beside the replication stream, and
the figures it keeps of what it did."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from riverbed.capture import pgoutput
from riverbed.lake.positions import format_lsn
from riverbed.state import LakeFile


@dataclass(frozen=True)
class StreamSettings:
    """The names and numbers a stream runs by."""

    slot: str
    publication: str
    # "schema.table" of the captured tables: the publication may hold others (another
    # consumer's, or tables no longer captured), whose changes are skipped
    captured: frozenset[str]
    max_rows: int  # lake.max_rows: a flush once this many rows are buffered
    max_seconds: float  # lake.max_seconds: ... or once the oldest buffered commit is this old
    status_interval: float  # seconds between feedbacks to the slot (and lag samples)
    heartbeat_seconds: float  # silence after which a heartbeat message is emitted
    binary: bool = False  # ask for values in binary form (capture.binary_mode decides)
    streaming: bool = False  # protocol 2: large transactions sent before they commit (streamed)

    def plugin_options(self) -> dict[str, str]:
        """pgoutput's options for START_REPLICATION."""
        options = {
            "proto_version": "2" if self.streaming else "1",
            "publication_names": self.publication,
            "messages": "true",
        }
        if self.streaming:
            options["streaming"] = "on"
        if self.binary:
            options["binary"] = "true"
        return options


class SourceProbe(Protocol):
    """What the stream asks of the source besides the replication stream: the runner answers
    over an ordinary connection beside it (runner._HeartbeatProbe)."""

    def primary_keys(self, relid: int) -> list[str]:
        """The primary key columns of a table (empty when it has none)."""
        ...

    def heartbeat(self) -> None:
        """Emit a logical message: a WAL record of ours, so the slot can move while idle."""
        ...

    def server_lsn(self) -> int:
        """The server's current WAL position."""
        ...

    def published(self) -> bool:
        """Whether every captured table is still published (asked while idle, following: one
        dropped and created again is not, and the stream would never see its rows)."""
        ...

    def check_slot(self, position: int) -> None:
        """Raise unless the slot, once held, is the one the lake's ``position`` was confirmed
        to."""
        ...

    def slot_released(self) -> bool:
        """Asked when the slot is busy at the start: whether whoever held it (a lag
        measurement peeking at it) has let go, after waiting for that; False when a capture
        holds it."""
        ...

    def text_form_types(self, oids: list[int]) -> set[int]:
        """Those of ``oids`` that a binary stream carries in their text form
        (binary_mode.text_form_types)."""
        ...


@dataclass
class StreamStats:
    """What a stream did, kept by its loop's thread (ChangeStream), handed to ``on_flush``
    there."""

    transactions: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0
    skipped_transactions: int = 0
    flushes: int = 0
    last_commit_ts_us: int | None = None
    position: int = 0
    server_wal_end: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    # for the lag (runner._Recorder): the commit time of the oldest transaction received but
    # not in the lake yet, and whether everything the server sent is in the lake
    pending_commit_ts_us: int | None = None
    caught_up: bool = False
    binary: bool = False  # the stream's values came in binary form (capture.binary_mode)

    def after(self, earlier: StreamStats) -> StreamStats:
        """These stats, of a stream that took over from one stopped early (binary_mode), with
        what that one made durable added."""
        by_table = dict(earlier.rows_by_table)
        for table, rows in self.rows_by_table.items():
            by_table[table] = by_table.get(table, 0) + rows
        return replace(
            self,
            rows=self.rows + earlier.rows,
            files=self.files + earlier.files,
            bytes=self.bytes + earlier.bytes,
            flushes=self.flushes + earlier.flushes,
            rows_by_table=by_table,
        )


def malformed(payload: bytes, lsn: int, exc: Exception) -> pgoutput.ProtocolError:
    """The ProtocolError for a message the decoder could not read (cut short, or not in the
    pgoutput format), naming the message's kind and where in the WAL it is."""
    detail = exc.detail if isinstance(exc, pgoutput.ProtocolError) else f"cut short ({exc})"
    kind = chr(payload[0]) if payload else "empty"
    return pgoutput.ProtocolError(f"{detail} in a {kind!r} message at {format_lsn(lsn)}")


@dataclass(frozen=True)
class Durable:
    """What the writer thread made durable, handed back to the loop's thread."""

    files: list[LakeFile]
    position: int  # the end LSN every change before which is in the lake now
