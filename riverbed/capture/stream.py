"""Streaming changes from the slot and landing them in the lake, exactly once.

The loop reads pgoutput messages (psycopg2's LogicalReplicationConnection speaks the streaming
replication protocol and answers the server's keepalives), decodes them, and buffers whole
transactions. A flush happens at a transaction boundary when ``lake.max_rows`` rows or
``lake.max_seconds`` of commits are buffered: the rows are written as Parquet files, then ONE
manifest transaction makes the files visible and records the end LSN of the last transaction
in them, and only then is that LSN confirmed to the slot. A crash anywhere in between leaves
the manifest as the truth; on restart transactions whose end LSN the manifest already has are
skipped, so nothing is doubled, and the slot never confirmed anything the lake lacks, so nothing
is lost.

A transaction larger than ``max_rows`` is spilled to files as it streams in (bounded memory);
those files are named after the transaction's commit LSN (known from its Begin message) and
become visible together with the rest of the flush after its Commit. With protocol 2's
``streaming`` (PostgreSQL 14+), the server sends a transaction past its
``logical_decoding_work_mem`` while it still runs, before its commit LSN is known: those rows
are kept apart until its Stream Commit (riverbed.capture.streamed), and so are the Relation
messages sent in its blocks (riverbed.capture.relations). Values arrive in binary form
where every captured column's type allows it (riverbed.capture.binary_mode).

When the captured tables are idle the loop still confirms the server's WAL end (nothing is
pending, so everything before it is in the lake or was not ours; not while a streamed
transaction is open, whose earlier changes are ours and not in the lake), and after
``capture.heartbeat_seconds`` of silence it emits a logical message so that the slot advances
even when other databases on the server are the busy ones. The slot never pins WAL without bound.
"""

from __future__ import annotations

import contextlib
import select
import struct
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from riverbed.capture import pgoutput
from riverbed.capture.batch import Batch, write_batch, write_staged
from riverbed.capture.binary_mode import TextModeNeeded, check_relation
from riverbed.capture.changes import TableBuffer, TableSchema, TxInfo
from riverbed.capture.relations import Entry, table_schema
from riverbed.capture.stream_terms import (
    Durable,
    SourceProbe,
    StreamSettings,
    StreamStats,
    malformed,
)
from riverbed.capture.streamed import StreamedTx, StreamedTxs
from riverbed.errors import first_line
from riverbed.lake.storage import LakeStorage
from riverbed.source.connection import session_ended
from riverbed.state import SchemaVersion, StateStore

HEARTBEAT_PREFIX = "riverbed"
_NEVER = 10.0**7  # seconds: a status interval psycopg2 never reaches
_START_ATTEMPTS = 5  # a slot found busy at the start, waited for (slot_released) this often
_OPS = {73: "I", 68: "D", 85: "U"}
_STREAMED_KINDS = frozenset(b"IUDRYTM")  # inside a streamed block, these carry an xid first


class ChangeStream:
    """Decodes one replication stream into the lake. Not thread-safe; one per slot.

    Opens its replication connection in :meth:`run`, and closes it (and its writer thread)
    in :meth:`close`, which may be called whether or not it ran.

    Two threads. The loop's (the caller of :meth:`run`) owns everything here: the replication
    connection, the batch filling, ``position`` (what the slot is confirmed to), ``stats``,
    and it alone calls ``on_flush``. The lake-writer thread is handed one batch at a time
    (:meth:`flush`) and hands back what it made durable (``Durable``), which the loop takes
    over (``_collect``) before it moves ``position`` and ``stats``: a value the loop reads is
    never half written, and a position it confirms was committed to the state store first."""

    def __init__(
        self,
        settings: StreamSettings,
        probe: SourceProbe,
        *,
        dsn: str,
        storage: LakeStorage,
        manifest: StateStore,
        schemas: dict[str, TableSchema],
        on_flush: Callable[[StreamStats], None] | None = None,
        staging: Path | None = None,
    ):
        self.settings = settings
        self.slot = settings.slot
        self.probe = probe
        self.dsn = dsn
        self.storage = storage
        self.manifest = manifest
        self.ignored: set[int] = set()  # relids of the tables not captured
        self.schemas = dict(schemas)  # lake table -> current schema version
        # a table's changes committed before its snapshot's consistent point are in the snapshot
        self.snapshot_lsns = manifest.capture.snapshot_tables(self.slot)
        self.on_flush = on_flush
        self.unpublished = False  # the stream ended because a captured table left the publication
        self.position = manifest.capture.position(self.slot) or 0
        self.stats = StreamStats(position=self.position, binary=settings.binary)
        self.relations: dict[int, Entry] = {}  # outside streamed blocks (relations)
        self.type_names: dict[int, str] = {}
        self._text_form: dict[int, bool] = {}  # type OID -> arrives as text in binary mode
        self.pending_schemas: list[SchemaVersion] = []
        self.batch = Batch()
        # the open transaction's buffers by relid as sent, for the hot path (_handle): filled
        # by _store, emptied whenever a buffer could change or a transaction ends (Begin,
        # Commit, Stream Start, Relation, spill, flush)
        self._buffers: dict[bytes, TableBuffer] = {}
        self._tx_index = 0  # the open transaction's index in the batch's txs
        self.tx: TxInfo | None = None
        self.streamed = StreamedTxs(staging)  # transactions streamed before their commit
        self.streaming: StreamedTx | None = None  # the one whose block is being read
        self.seq = 0
        self.skipping = False
        # the replication connection and its cursor: opened by run()
        self.conn: Any = None
        self.cursor: Any = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-writer")
        self._inflight: Future[Durable] | None = None
        self._writing: Batch | None = None  # the batch the writer has, until it is durable
        self._last_sample = time.monotonic()
        self._last_feedback = 0.0  # monotonic time of the last feedback sent
        # psycopg2's keepalive advance (_send): the flush position last sent, the data_start of
        # the last message read, the end LSN of the last commit read with rows, and the commit
        # end that must be durable before the next feedback (psycopg2 may have moved past it)
        self._sent = 0
        self._last_start = 0
        self._read_end = 0
        self._hold = 0
        # how far the slot may be confirmed, recorded before each feedback (_send)
        self._ceiling = manifest.capture.ceiling(self.slot) or 0

    # --- the loop -------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool], until_lsn: int | None = None) -> StreamStats:
        """Stream until ``should_stop()``; with ``until_lsn``, stop once everything committed
        before it is in the lake (what ``capture --once`` does)."""
        self.conn = psycopg2.connect(
            self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
        )
        self.cursor = self.conn.cursor()
        self._start_replication()
        # the slot is ours alone from here on: nothing has been read or confirmed yet
        self.probe.check_slot(self.position)
        self.streamed.clear_leftovers()  # a killed capture's, whose transactions come again
        try:
            return self._run(should_stop, until_lsn)
        except TextModeNeeded:
            # the batch being written holds complete transactions: durable, and counted
            self._collect(wait=True)
            raise
        except BaseException:
            # the server may have asked for a reply on its way out (a shutdown), which psycopg2
            # sent at once with the WAL end it had just read
            with contextlib.suppress(Exception):
                self._raise_ceiling(self.cursor.wal_end)
            raise

    def _start_replication(self) -> None:
        """Start streaming from the slot. A lag measurement (riverbed.capture.lag) peeking at
        the slot holds it for a moment; the runner waits for that before it opens the stream,
        but a measurement may begin in between, so a slot busy here is waited for again."""
        options = self.settings.plugin_options()
        for attempt in range(_START_ATTEMPTS):
            try:
                self.cursor.start_replication(
                    slot_name=self.slot,
                    decode=False,
                    start_lsn=0,  # resume at the slot's confirmed position
                    options=options,
                    # psycopg2 never sends feedback by itself (it would carry positions the manifest
                    # never saw, see _send): _confirm sends it every status_interval
                    status_interval=_NEVER,
                )
                return
            except psycopg2.errors.ObjectInUse:
                if attempt == _START_ATTEMPTS - 1 or not self.probe.slot_released():
                    raise

    def _run(self, should_stop: Callable[[], bool], until_lsn: int | None) -> StreamStats:
        once = until_lsn is not None
        last_message = last_idle = last_ping = time.monotonic()
        busy = False
        cursor = self.cursor
        read = cursor.read_message
        take = self._take
        while True:
            message = read()
            if message is not None:
                take(message)
                busy = True
                if once and self.tx is not None and self.tx.commit_lsn >= until_lsn:  # type: ignore[operator]
                    # a transaction committed after --once started: left whole for the next run,
                    # so --once ends even when the source writes faster than it reads
                    self.tx = None
                    break
                continue
            # drained: everything the server has sent so far is handled
            now = time.monotonic()
            if busy:
                last_message, busy = now, False
            if self.tx is None:
                caught_up = once and cursor.wal_end >= until_lsn  # type: ignore[operator]
                if not self.batch.empty() and (caught_up or self._due(now)):
                    self.flush()
                    if caught_up:
                        # --once is done once this batch is durable; not waiting here would let
                        # steady traffic keep a new batch in flight forever
                        self.wait_for_writer()
                if self.batch.empty() and (
                    caught_up or now - last_idle >= self.settings.status_interval
                ):
                    self._advance_idle()
                    last_idle = now
                    if not once and self._writer_idle() and not self.probe.published():
                        self.unpublished = True
                        break
                if caught_up and self.batch.empty() and self._writer_idle():
                    break
            self._confirm()  # when due
            if should_stop():
                break
            if now - last_message >= self.settings.heartbeat_seconds:
                self.probe.heartbeat()  # a WAL record of ours, so the slot can move when we are idle
                last_message = now
            if once and self.tx is None and now - last_ping >= 0.1:
                self._send(reply=True)  # ask for a keepalive: a fresh wal_end
                last_ping = now
            select.select([cursor], [], [], 0.1 if once else 1.0)
        if self.tx is None and not self.batch.empty():
            self.flush()
        self.wait_for_writer()
        self._confirm(force=True)
        self.close()
        return self.stats

    def _take(self, message: Any) -> None:
        """Handle one message read; note where it starts (psycopg2's keepalive advance, _send)."""
        try:
            self._handle(message.payload)
        except (pgoutput.ProtocolError, struct.error, IndexError) as exc:
            raise malformed(message.payload, message.data_start, exc) from exc
        self._last_start = start = message.data_start
        if start <= self._sent:
            self._exposed()

    def lost(self, exc: psycopg2.Error) -> str | None:
        """Why an error from the replication connection means the server went away (stopped,
        restarted, the network dropped), or None when it is something else, which must surface
        as it is: only a lost server is cured by reconnecting. Ask before :meth:`close`, which
        closes the connection this looks at."""
        if isinstance(exc, psycopg2.OperationalError) or session_ended(exc.pgcode):
            return first_line(exc)  # libpq lost the server, or the server ended the session
        if self.conn is not None and self.conn.closed == 2:
            # psycopg2 closed it when libpq found it broken; what uses it next gets an
            # InterfaceError "connection already closed"
            return first_line(exc)
        # The server ends a logical replication stream only when it shuts down: the walsender
        # sends CommandComplete and exits. psycopg2 hands that over as "no message", then
        # reports the next read or feedback as "no COPY in progress": a bare DatabaseError
        # without a SQLSTATE, raised by our cursor, on a connection that still looks open.
        if (
            type(exc) is psycopg2.DatabaseError
            and exc.pgcode is None
            and self.cursor is not None
            and exc.cursor is self.cursor
        ):
            return "the server ended the replication stream (it is shutting down or restarting)"
        return None

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.streamed.close()  # open streamed transactions: streamed again next time
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()

    def _due(self, now: float) -> bool:
        started = self.batch.first_commit_at
        return (
            self._hold > self.position  # feedback waits for it (_send)
            or self.batch.rows >= self.settings.max_rows
            or bool(self.batch.spilled)  # a big transaction just committed: publish it now
            or bool(self.batch.staged)
            or (started is not None and now - started >= self.settings.max_seconds)
        )

    def _advance_idle(self) -> None:
        """Nothing pending: everything before the server's sent position is in the lake or is
        not ours, so that position is safe to record and confirm (the slot never pins WAL)."""
        if not self._writer_idle():
            return  # a batch is still being written: its position is not durable yet
        wal_end = self.cursor.wal_end
        self.stats.server_wal_end = max(self.stats.server_wal_end, wal_end)
        self.stats.pending_commit_ts_us = None
        self.stats.caught_up = True
        # an open streamed transaction has changes before the WAL end that are not in the lake:
        # the position stays (the server streams it again from its start after a restart)
        if wal_end > self.position and not self.streamed.open:
            self.manifest.capture.commit(self.slot, [], wal_end)
            self.position = wal_end
            self.stats.position = wal_end
        if self.on_flush:
            self.on_flush(self.stats)  # keeps lag metrics fresh while idle
        self._confirm()

    # --- messages -------------------------------------------------------------------------

    def _handle(self, buf: bytes) -> None:
        kind = buf[0]
        # the hot path: Insert, Delete and Update without an old tuple are stored undecoded;
        # the first of a table in a transaction finds its buffer (_store), the rest append
        if kind == 73 or kind == 68 or (kind == 85 and buf[5] == 78):  # I, D, U ... 'N'
            buffer = self._buffers.get(buf[1:5])
            if buffer is not None:
                buffer.payloads.append(buf)
                buffer.ops.append(_OPS[kind])
                buffer.seqs.append(self.seq)
                buffer.txs.append(self._tx_index)
                self.seq += 1
                self.batch.rows += 1
                if self.batch.rows >= self.settings.max_rows:
                    self._spill()
                return
        if self.streaming is not None:  # inside Stream Start ... Stream Stop
            self._handle_streamed(kind, buf)
        elif kind == 73 or kind == 68 or (kind == 85 and buf[5] == 78):
            if not self.skipping:
                self._store(int.from_bytes(buf[1:5], "big"), _OPS[kind], buf, buf[1:5])
        elif kind == 66:  # B
            begin = pgoutput.parse_begin(buf)
            self.tx = TxInfo(begin.final_lsn, begin.commit_ts_us, begin.xid)
            self.seq = 0
            self._tx_index = len(self.batch.txs)
            self._buffers.clear()
            # the slot can resend what the manifest already has (feedback lost in a crash)
            self.skipping = begin.final_lsn < self.position
        elif kind == 67:  # C
            self._commit(pgoutput.parse_commit(buf))
        elif kind == 83:  # S: Stream Start
            self._buffers.clear()  # its row messages carry an xid where the relid was
            self.streaming = self.streamed.start(*pgoutput.parse_stream_start(buf))
        elif kind == 99:  # c: Stream Commit
            self._stream_commit(*pgoutput.parse_stream_commit(buf))
        elif kind == 65:  # A: Stream Abort
            self.streamed.abort(*pgoutput.parse_stream_abort(buf))
        elif kind == 79:  # O
            pgoutput.parse_origin(buf)
        else:
            self._change(kind, buf)

    def _handle_streamed(self, kind: int, buf: bytes) -> None:
        """A message of a streamed transaction's block: the row and schema messages carry
        the id of the (sub)transaction first, which is taken off (streamed)."""
        streaming = self.streaming
        assert streaming is not None
        if kind == 69:  # E: Stream Stop
            self.streaming = None
        elif kind == 79:  # O, without an xid
            pgoutput.parse_origin(buf)
        elif kind in _STREAMED_KINDS:
            streaming.subxid = int.from_bytes(buf[1:5], "big")
            buf = buf[:1] + buf[5:]
            if kind == 73 or kind == 68 or (kind == 85 and buf[5] == 78):  # I, D, U ... 'N'
                self._store(int.from_bytes(buf[1:5], "big"), _OPS[kind], buf)
            else:
                self._change(kind, buf)
        else:
            raise pgoutput.ProtocolError(f"a {chr(kind)!r} message inside a streamed block")

    def _change(self, kind: int, buf: bytes) -> None:
        """The messages besides rows without an old tuple and transaction boundaries."""
        if kind == 85:  # U with the old key or old row
            if not self.skipping:
                self._update(*pgoutput.parse_update(buf))
        elif kind == 82:  # R
            self._relation(pgoutput.parse_relation(buf))
        elif kind == 89:  # Y
            info = pgoutput.parse_type(buf)
            self.type_names[info.oid] = f"{info.namespace}.{info.name}"
        elif kind == 84:  # T
            if not self.skipping:
                for relid in pgoutput.parse_truncate(buf).relids:
                    entry = self._entry(relid)
                    if entry is None:
                        continue
                    relation = entry[0]
                    empty: list[Any] = [None] * len(relation.columns)
                    self._store(relid, "T", pgoutput.row_message(b"I", relid, empty))
        elif kind == 77:  # M
            pgoutput.parse_message(buf)  # heartbeats and foreign messages carry no rows
        else:
            raise pgoutput.ProtocolError(f"unknown pgoutput message {chr(kind)!r}")

    def _relation(self, relation: pgoutput.Relation) -> None:
        """A table's shape: the stream's, or inside a streamed block that transaction's own
        until its commit (riverbed.capture.relations)."""
        self._buffers.clear()
        overlay = self.streaming.relations if self.streaming is not None else None
        relid, table = relation.relid, relation.name
        if relation.qualified not in self.settings.captured:
            if overlay is None:
                self.ignored.add(relid)
            else:
                overlay.entries[relid] = None
            return
        if self.settings.binary:  # before any of its rows is read
            try:
                check_relation(relation, self._text_form, self.probe.text_form_types)
            except TextModeNeeded as exc:
                if overlay is None:
                    raise
                overlay.text_needed = overlay.text_needed or exc  # raised at its commit
        keys = self.probe.primary_keys(relid)
        if overlay is None:
            self.ignored.discard(relid)
            schema, new = table_schema(relation, self.schemas.get(table), keys, self.type_names)
            if new:
                self.schemas[table] = schema
                first = self.tx.commit_lsn if self.tx else self.position
                self.pending_schemas.append(
                    SchemaVersion(table, schema.version, schema.describe(), first)
                )
            self.relations[relid] = (relation, schema, self.snapshot_lsns.get(table, 0))
            return
        current = overlay.schemas.get(table) or self.schemas.get(table)
        schema, new = table_schema(relation, current, keys, self.type_names)
        if new:  # recorded at its commit (_stream_commit)
            overlay.schemas[table] = schema
            overlay.versions.append(schema)
        overlay.entries[relid] = (relation, schema, self.snapshot_lsns.get(table, 0))

    def _entry(self, relid: int) -> Entry | None:
        """What ``relid``'s rows are decoded with (None: a table not captured)."""
        if self.streaming is not None:
            return self.streaming.relations.lookup(relid, self.relations, self.ignored)
        return None if relid in self.ignored else self.relations[relid]

    def _store(self, relid: int, op: str, payload: bytes, relid_bytes: bytes = b"") -> None:
        """Buffer a row message; with ``relid_bytes`` (the relid as sent), the buffer is
        remembered for the table's next rows in the transaction (_handle)."""
        entry = self._entry(relid)
        if entry is None:
            return
        _, schema, snapshot_lsn = entry
        streaming = self.streaming
        if streaming is None:
            if self.tx.commit_lsn < snapshot_lsn:  # type: ignore[union-attr]
                return  # already in that table's snapshot
            batch, tx, seq = self.batch, len(self.batch.txs), self.seq
            self.seq += 1
        elif streaming.relations.text_needed is not None:
            return  # streamed again in text mode should it commit (_stream_commit)
        else:  # a streamed transaction's: its snapshot check waits for its commit LSN
            batch, tx, seq = streaming.batch, 0, streaming.seq
            streaming.seq += 1
        key = (schema.table, schema.version)
        buffer = batch.buffers.get(key)
        if buffer is None:
            buffer = batch.buffers[key] = TableBuffer(schema)
        buffer.add(op, payload, seq, tx)
        batch.rows += 1
        if streaming is not None:
            buffer.subxids.append(streaming.subxid)
            if batch.rows >= self.settings.max_rows:
                self.streamed.stage(streaming)  # out of memory, invisible until its commit
                self._confirm()
        elif batch.rows >= self.settings.max_rows:
            # the buffer is full in the middle of a transaction: write what is buffered now
            # (bounded memory whatever the transaction's size); it becomes visible at commit
            self._spill()
        elif relid_bytes:
            self._buffers[relid_bytes] = buffer

    def _update(
        self, relid: int, old_kind: str | None, old: list[Any] | None, new: list[Any]
    ) -> None:
        """An update carrying the old key (the key changed) or the old row (REPLICA IDENTITY FULL)."""
        assert old is not None
        entry = self._entry(relid)
        if entry is None:
            return
        schema = entry[1]
        if old_kind == "O":
            # the old row is complete, so unchanged TOAST values are known: fill them in
            new = [old[i] if v is pgoutput.UNCHANGED else v for i, v in enumerate(new)]
            if all(old[i] == new[i] for i in schema.keys):
                self._store(relid, "U", pgoutput.row_message(b"U", relid, new))
                return
        # the key changed: the old key ends, the new key begins
        self._store(relid, "D", pgoutput.row_message(b"D", relid, old))
        self._store(relid, "I", pgoutput.row_message(b"I", relid, new))

    def _commit(self, commit: pgoutput.Commit) -> None:
        tx = self.tx
        self.tx = None
        self._buffers.clear()
        if self.skipping:
            self.skipping = False
            self.stats.skipped_transactions += 1
            return
        assert tx is not None
        # transactions without rows of ours (e.g. only other tables) leave nothing
        self._committed(tx if self.seq else None, commit.end_lsn)

    def _stream_commit(self, xid: int, commit: pgoutput.Commit) -> None:
        open_tx = self.streamed.open.get(xid)
        if open_tx is not None:  # its Relation messages are the stream's now, as the server's
            self._buffers.clear()
            self.pending_schemas += open_tx.relations.promote(
                self.relations, self.ignored, self.schemas, commit.commit_lsn
            )
        if commit.commit_lsn < self.position:  # in the lake already: resent after a crash
            self.streamed.discard(xid)
            self.stats.skipped_transactions += 1
            return
        tx = TxInfo(commit.commit_lsn, commit.commit_ts_us, xid)
        # tables whose snapshot was taken after this commit hold its rows already
        skip = {t for t, lsn in self.snapshot_lsns.items() if commit.commit_lsn < lsn}
        handed = self.streamed.commit(xid, tx, self.batch, skip)
        self._committed(tx if handed else None, commit.end_lsn)

    def _committed(self, tx: TxInfo | None, end_lsn: int) -> None:
        """A transaction is complete: ``tx`` joins the batch (None: it brought no rows)."""
        if tx is not None:
            self.batch.txs.append(tx)
            self._read_end = end_lsn
            self.stats.caught_up = False
            self.stats.transactions += 1
            self.stats.last_commit_ts_us = tx.commit_ts_us
            if self.batch.first_commit_at is None:
                self.batch.first_commit_at = time.monotonic()
        self.batch.end_lsn = end_lsn
        now = time.monotonic()
        if self._due(now):
            self.flush()
        if self.on_flush and now - self._last_sample >= self.settings.status_interval:
            # busy for a while without a flush (a backlog, a slow lake): the lag still shows
            self.stats.pending_commit_ts_us = self._oldest_pending()
            self.on_flush(self.stats)
            self._last_sample = now
        self._confirm()  # when due, even while the stream never drains

    # --- writing --------------------------------------------------------------------------

    def _spill(self) -> None:
        """Write what is buffered, invisible until the open transaction commits."""
        self.batch.spilled.extend(write_batch(self.storage, self.batch, open_tx=self.tx))
        self.batch.buffers.clear()
        self._buffers.clear()
        self.batch.rows = 0
        self._confirm()  # when due: a transaction this big may stream for a while
        # txs stay: later rows of the open transaction still index it

    def flush(self) -> None:
        """Hand the batch to the writer thread, which writes its files, then makes them
        visible with the batch's end position in one manifest commit. The loop keeps reading
        meanwhile; it confirms to the slot only positions the writer has made durable. At most
        one batch is being written while the next one fills (bounded memory)."""
        # the batch written before is taken over while this one is still the loop's: it is
        # what the lag sample taken then sees pending
        self.wait_for_writer()
        batch, schemas = self.batch, self.pending_schemas
        self.batch, self.pending_schemas = Batch(), []
        self._buffers.clear()
        # handed over, not read by the writer: the position is the loop's (end_lsn is None
        # only when no transaction completed in the batch)
        position = batch.end_lsn if batch.end_lsn is not None else self.position
        self._writing = batch
        self._inflight = self._writer.submit(self._write_and_commit, batch, schemas, position)

    def wait_for_writer(self) -> None:
        """Block until the batch being written is durable; re-raise the writer's error."""
        self._collect(wait=True)
        self._confirm()

    def _writer_idle(self) -> bool:
        self._collect(wait=False)
        return self._inflight is None

    def _collect(self, *, wait: bool) -> None:
        """Take over what the writer made durable (once it has, or, with ``wait``, waiting
        for it): only here, on the loop's thread, do the position and the stats move."""
        inflight = self._inflight
        if inflight is None or not (wait or inflight.done()):
            return
        durable = inflight.result()  # re-raises the writer's error
        self._inflight = self._writing = None
        self.position = max(self.position, durable.position)  # durable from here on
        stats = self.stats
        stats.rows += sum(f.rows for f in durable.files if not f.full_load)
        stats.files += len(durable.files)
        stats.bytes += sum(f.bytes for f in durable.files)
        stats.flushes += 1
        stats.position = self.position
        for f in durable.files:
            stats.rows_by_table[f.table] = stats.rows_by_table.get(f.table, 0) + f.rows
        # the batch filling meanwhile holds the oldest transaction not in the lake
        stats.pending_commit_ts_us = self._oldest_pending()
        self._last_sample = time.monotonic()
        if self.on_flush:
            self.on_flush(stats)

    def _confirm(self, force: bool = False) -> None:
        """Tell the slot what is durable: every status_interval (the server ends a stream that
        is silent for wal_sender_timeout), or now with ``force``. What the writer finished
        since the last call is taken over first, so a durable position is confirmed at the
        next feedback however busy the loop is."""
        self._collect(wait=False)
        if force or time.monotonic() - self._last_feedback >= self.settings.status_interval:
            self._send()

    def _send(self, reply: bool = False) -> None:
        """Send feedback confirming the manifest's position; ``reply`` asks for a keepalive.

        psycopg2 may confirm more than that position: when everything read so far was
        confirmed, it replaces the flush position with the WAL end of the last keepalive, safe
        (nothing of ours before it is missing) but never seen by the manifest. So the server's
        WAL position, past any keepalive read so far, is first recorded as the slot's ceiling:
        a slot past it at the next start is not this project's (runner, check_slot_is_ours).

        psycopg2 takes "everything read was confirmed" to mean that the last message read
        starts at or before the flush position sent. Messages do not arrive in LSN order, though:
        a streamed transaction's block (or a long transaction's first rows) carries changes
        older than commits read before it. A keepalive read then would let psycopg2 confirm past
        those commits while their batch is still being written, and a crash would lose them
        (the server would not send them again). So while that can be (_exposed), no feedback
        is sent until they are durable; the batch holding them is due at once (_due).
        """
        if self._hold > self.position:
            return
        self._raise_ceiling(self.probe.server_lsn())
        self.cursor.send_feedback(
            write_lsn=self.position,
            flush_lsn=self.position,
            apply_lsn=self.position,
            reply=reply,
            force=not reply,
        )
        self._sent = max(self._sent, self.position)
        self._last_feedback = time.monotonic()
        if self._last_start <= self._sent:
            self._exposed()

    def _exposed(self) -> None:
        """psycopg2 confirms a keepalive's WAL end from now until the next message (_send):
        the commits read so far must be durable before any feedback carries it."""
        if self._read_end > self.position:
            self._hold = max(self._hold, self._read_end)

    def _raise_ceiling(self, lsn: int) -> None:
        if lsn > self._ceiling:
            self.manifest.capture.raise_ceiling(self.slot, lsn)
            self._ceiling = lsn

    def _write_and_commit(
        self, batch: Batch, schemas: list[SchemaVersion], position: int
    ) -> Durable:
        """The writer thread: writes ``batch`` (handed over by flush, the loop's no more) and
        makes it visible at ``position`` in one manifest commit. It touches nothing else of
        the stream's but the storage and the state store (both safe across threads); the loop
        takes what it returns over (_collect)."""
        files = batch.spilled + write_staged(self.storage, batch)
        files += write_batch(self.storage, batch, open_tx=None)
        self.manifest.capture.commit(self.slot, files, position, schemas)
        return Durable(files, position)

    def _oldest_pending(self) -> int | None:
        """Commit time of the oldest transaction received but not in the lake yet: the first
        of the batch being written, else of the batch filling."""
        for batch in (self._writing, self.batch):
            if batch is not None and batch.txs:
                return batch.txs[0].commit_ts_us
        return None
