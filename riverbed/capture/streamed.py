"""Transactions the server streams before they commit (pgoutput protocol 2's ``streaming``,
PostgreSQL 14+).

Without it the server holds a transaction until its commit (spilling it to its own disk past
``logical_decoding_work_mem``) and only then sends it whole: a 1,000,000-row transaction
reaches the lake many seconds after its commit, however fast capture reads. With it, a
transaction past ``logical_decoding_work_mem`` is sent in blocks while it is still running
(Stream Start ... Stream Stop, between which every row message carries the id of the
(sub)transaction that wrote it), interleaved with other transactions, then Stream Commit or
Stream Abort. At its commit only the last block is left to read.

Exactly-once holds because nothing of a streamed transaction is visible before its commit:

* its rows are buffered apart from the stream's batch (:class:`StreamedTx`); past
  ``lake.max_rows`` they are decoded and staged as Arrow IPC files in a local folder (bounded
  memory), without the columns only the commit gives (``_lsn``, ``_commit_ts``, ``_xid``);
* Stream Commit hands the transaction to the batch like any other transaction: its buffered
  rows join the batch's, its staged files are turned into lake files by the writer thread with
  the commit's columns added (``batch.staged_rows``), and the batch's one manifest commit makes
  all of them visible at once;
* the Relation messages in its blocks are its own (``StreamedTx.relations``): its rows are
  decoded with them, and they become the stream's, their new schema versions recorded, at its
  Stream Commit only (riverbed.capture.relations);
* Stream Abort of the transaction drops it and its staged files; of a subtransaction (ROLLBACK
  TO SAVEPOINT), that subtransaction's rows are left out at the commit;
* a capture that stops with streamed transactions open loses nothing: they commit past the
  lake's position, and the server streams them again from their first block; what a killed
  capture staged (in the slot's own folder, private) is deleted by the next one, never loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from riverbed.capture.batch import Batch, StagedChunk, StagedCommit
from riverbed.capture.changes import TableBuffer, TxInfo
from riverbed.capture.pgoutput import ProtocolError
from riverbed.capture.relations import RelationOverlay
from riverbed.private import create_private, private_folders

STREAMING_MIN_SERVER = 140_000  # server_version_num of the first PostgreSQL that streams


# The stream's logical_decoding_work_mem, at most: a transaction past it is streamed in blocks
# of about this much, so at its commit no more than this is left to send (PostgreSQL's default,
# 64MB, is some 250,000 rows: seconds of lag after a big commit).
STREAMING_WORK_MEM_KB = 8192


def streaming_capable(conn: Any) -> bool:
    """Whether the source server streams transactions before they commit."""
    return bool(conn.info.server_version >= STREAMING_MIN_SERVER)


def work_mem_option(conn: Any) -> str:
    """The session option for the stream's walsender that lowers its logical_decoding_work_mem
    to STREAMING_WORK_MEM_KB (never raises it: ``conn`` has the role's and database's
    settings, as the walsender will)."""
    row = conn.execute(
        "select setting::int from pg_settings where name = 'logical_decoding_work_mem'"
    ).fetchone()
    return f"-c logical_decoding_work_mem={min(int(row[0]), STREAMING_WORK_MEM_KB)}kB"


@dataclass
class StreamedTx:
    """One streamed transaction, open: its rows, tx index 0 of its own batch."""

    xid: int
    batch: Batch = field(default_factory=Batch)
    seq: int = 0
    subxid: int = 0  # the (sub)transaction of the row message being handled
    aborted: set[int] = field(default_factory=set)
    staged: list[StagedChunk] = field(default_factory=list)
    relations: RelationOverlay = field(default_factory=RelationOverlay)  # its Relation messages


class StreamedTxs:
    """The open streamed transactions of one stream, and the folder their rows are staged in:
    ``folder``, the slot's own (a temporary one without), so that what a killed capture staged
    is deleted by the next one (:meth:`clear_leftovers`) rather than left for ever."""

    def __init__(self, folder: Path | None = None) -> None:
        self.open: dict[int, StreamedTx] = {}
        self._root = folder
        self._folder: Path | None = None
        self._files = 0

    def clear_leftovers(self) -> None:
        """Delete the files a capture killed before its cleanup staged (call once the slot is
        held: no other capture stages there then). They are never loaded: the server streams
        those transactions again from their first block."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def start(self, xid: int, first: bool) -> StreamedTx:
        """A Stream Start: the transaction's first block opens it (again, after a restart)."""
        if first:
            self.discard(xid)
            self.open[xid] = StreamedTx(xid)
        elif xid not in self.open:
            raise ProtocolError(f"a streamed block of transaction {xid} without its first one")
        return self.open[xid]

    def abort(self, xid: int, subxid: int) -> None:
        if xid == subxid:
            self.discard(xid)
        elif xid in self.open:
            self.open[xid].aborted.add(subxid)

    def discard(self, xid: int) -> None:
        tx = self.open.pop(xid, None)
        if tx is not None:
            for chunk in tx.staged:
                chunk.path.unlink(missing_ok=True)

    def stage(self, tx: StreamedTx) -> None:
        """Decode the rows ``tx`` buffers and stage them on disk, out of memory."""
        if self._folder is None and self._root is not None:
            private_folders(self._root)  # rows of the source: its owner's alone
            self._folder = self._root
        elif self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="riverbed-streamed-"))
        for (table, version), buffer in tx.batch.buffers.items():
            if not len(buffer):
                continue
            rows = buffer.staged()
            path = self._folder / f"{tx.xid}-{self._files}.arrow"
            self._files += 1
            os.close(create_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))  # 0600, then rows
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as out:
                out.write_table(rows)
            tx.staged.append(StagedChunk(path, table, version, rows.num_rows))
        tx.batch.buffers.clear()
        tx.batch.rows = 0

    def commit(self, xid: int, info: TxInfo, batch: Batch, skip: set[str]) -> bool:
        """Move the transaction's rows into ``batch``, as the transaction ``batch.txs`` is
        about to end with (``info``), leaving out the rows of ``skip`` (tables whose snapshot
        holds them already); False when it brought no rows."""
        tx = self.open.pop(xid, None)
        if tx is None:
            return False
        index = len(batch.txs)
        moved = 0
        for key, buffer in tx.batch.buffers.items():
            if key[0] in skip or not len(buffer):
                continue
            if tx.aborted:
                buffer.drop(tx.aborted)
            target = batch.buffers.get(key)
            if target is None:
                target = batch.buffers[key] = TableBuffer(buffer.schema)
            target.take(buffer, index)
            batch.rows += len(buffer)
            moved += len(buffer)
        aborted = frozenset(tx.aborted)
        for chunk in tx.staged:
            if chunk.table in skip:
                chunk.path.unlink(missing_ok=True)
            else:
                batch.staged.append(StagedCommit(chunk, info, aborted))
                moved += chunk.rows
        return moved > 0

    def close(self) -> None:
        """Drop every open transaction (the server streams them again) and the folder."""
        self.open.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
