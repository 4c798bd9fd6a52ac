"""The slot is never confirmed past a commit that is not in the lake, whatever order the
messages come in.

psycopg2 moves the flush position it sends to a keepalive's WAL end when the flush position
the caller last sent is at or past the start of the last message read ("everything read was
confirmed"). With pgoutput's streaming, a streamed transaction's block carries changes older
than commits read before it, so that rule can confirm past a commit whose batch is still being
written: a crash then loses it. The replication cursor here behaves as psycopg2's does
(pqpath.c, pq_read_replication_message), with the messages and keepalives in a scripted order,
so the case is played exactly, without timing."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from riverbed.capture import pgoutput
from riverbed.capture.stream import ChangeStream
from riverbed.capture.stream_terms import StreamSettings
from riverbed.config.stores import LakeConfig
from riverbed.lake.storage import open_storage
from riverbed.state import SQLiteStore

SLOT = "rb"
RELID = 16_500
TS = 800_000_000_000_000  # microseconds since 2000


class _Cursor:
    """A replication cursor as psycopg2's: a keepalive read while the flush position sent is at
    or past the last message's start moves the flush position to its WAL end."""

    def __init__(self, script: list[Any], manifest: SQLiteStore):
        self.script = script
        self.manifest = manifest
        self.wal_end = self.flush = self.explicit = self.last_start = 0
        self.delivered: list[int] = []  # end LSNs of the commits read
        self.feedback: list[tuple[int, int]] = []  # (flush sent, the lake's position then)
        readable, writer = os.pipe()
        os.write(writer, b"x")
        self._fd = readable

    def fileno(self) -> int:
        return self._fd

    def read_message(self) -> Any:
        while self.script:
            item = self.script.pop(0)
            if item is None:  # the stream drained here
                return None
            kind, lsn, payload = item
            self.wal_end = lsn
            if kind == "k":
                if self.explicit >= self.last_start and lsn > max(self.explicit, self.flush):
                    self.flush = lsn
                continue
            self.last_start = lsn
            if payload[:1] in (b"C", b"c"):
                self.delivered.append(lsn)
            return SimpleNamespace(payload=payload, data_start=lsn, wal_end=lsn)
        return None

    def send_feedback(self, *, flush_lsn: int, **how: Any) -> None:
        self.explicit = max(self.explicit, flush_lsn)
        self.flush = max(self.flush, flush_lsn)
        if how.get("force") or how.get("reply"):
            self.feedback.append((self.flush, self.manifest.capture.position(SLOT) or 0))


def _relation() -> bytes:
    column = b"\x01id\x00" + struct.pack(">Ii", 20, -1)
    return b"R" + struct.pack(">I", RELID) + b"big\x00t\x00d" + struct.pack(">h", 1) + column


def _insert(key: int, xid: int | None = None) -> bytes:
    row = pgoutput.row_message(b"I", RELID, [str(key).encode()])
    return row if xid is None else row[:1] + struct.pack(">I", xid) + row[1:]


def _probe() -> Any:
    return SimpleNamespace(
        primary_keys=lambda _relid: ["id"],
        heartbeat=lambda: None,
        server_lsn=lambda: 10**6,
        published=lambda: True,
        text_form_types=lambda _oids: set(),
    )


def test_a_keepalive_after_an_older_streamed_block_never_confirms_a_commit_not_in_the_lake(
    tmp_path: Path,
) -> None:
    manifest = SQLiteStore(tmp_path / "state.db")
    small = [  # committed while the streamed transaction 9 is open
        ("w", 600, b"B" + struct.pack(">QqI", 650, TS, 5)),
        ("w", 600, _relation()),
        ("w", 600, _insert(1)),
        ("w", 700, b"C" + struct.pack(">bQQq", 0, 650, 700, TS)),
    ]
    script: list[Any] = [
        ("k", 500, b""),
        None,  # idle: the lake's position is the WAL end, confirmed
        ("w", 400, b"S" + struct.pack(">Ib", 9, 1)),  # 9 began before it, streamed only now
        ("w", 400, b"R" + struct.pack(">I", 9) + _relation()[1:]),
        ("w", 400, _insert(100, 9)),
        ("w", 400, b"E"),
        *small,
        None,  # the small one is in the batch filling, not in the lake
        ("w", 450, b"S" + struct.pack(">Ib", 9, 0)),  # more of 9, older than the commit read
        ("w", 450, _insert(101, 9)),
        ("w", 450, b"E"),
        ("k", 800, b""),  # past the small one's commit
        None,
        None,
    ]
    cursor = _Cursor(script, manifest)
    settings = StreamSettings(
        slot=SLOT,
        publication="rb",
        captured=frozenset({"big.t"}),
        max_rows=10_000,
        max_seconds=3600,  # the small one's batch is never due by time here
        status_interval=0.0,  # feedback at every chance
        heartbeat_seconds=3600,
        streaming=True,
    )
    stream = ChangeStream(
        settings,
        _probe(),
        dsn="",
        storage=open_storage(LakeConfig(path="lake"), tmp_path),
        manifest=manifest,
        schemas={},
    )
    stream.cursor = cursor
    try:
        stream._run(lambda: not cursor.script, None)
    finally:
        stream.close()
    assert cursor.feedback, "no feedback was sent"
    for flush, durable in cursor.feedback:
        unsafe = [end for end in cursor.delivered if end <= flush and end > durable]
        assert not unsafe, f"confirmed {flush} with the commit ending at {unsafe} not in the lake"
    assert manifest.capture.position(SLOT) == 700  # the small one, and not past the open 9
    assert len(manifest.lake.files("raw", "t")) == 1
    manifest.close()
