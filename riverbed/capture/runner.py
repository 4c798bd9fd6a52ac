"""`riverbed capture`: set up the slot and publication, snapshot once, then stream.

Recovery rules, decided here:

* slot exists and the manifest has a position: resume streaming (the normal restart);
* slot exists but the snapshot never completed (killed mid-copy): the exported snapshot died
  with the process, so a consistent copy is impossible; the slot and every file captured
  through it are dropped and the snapshot starts over. Only when the manifest says this project
  created that slot (recorded before creating it): a slot of that name that it did not create
  belongs to someone else and is refused, dropped only by an explicit ``--resnapshot``;
* the manifest has a position but the slot is gone (dropped by someone): changes since that
  position are unrecoverable from the source; refuse, and say how to start over.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras

from riverbed.capture.changes import TableSchema
from riverbed.capture.slot import (
    CaptureSetupError,
    SlotState,
    check_schema,
    check_slot_is_ours,
    check_source,
    drop_slot,
    ensure_publication,
    primary_keys,
    slot_gone,
    slot_is_past,
    slot_state,
    unpublished,
    wait_while_peeked,
)
from riverbed.capture.snapshot import (
    SESSION_SETTINGS,
    SnapshotPoint,
    TableCopy,
    copy_tables,
    truncate_file,
)
from riverbed.capture.stream import HEARTBEAT_PREFIX, ChangeStream, StreamStats
from riverbed.config.loader import Project
from riverbed.errors import SourceError, first_line
from riverbed.lake.layout import raw_prefix
from riverbed.lake.lock import ProcessLock
from riverbed.lake.pgtypes import PgColumn
from riverbed.lake.positions import format_lsn, parse_lsn
from riverbed.lake.storage import LakeStorage, open_storage
from riverbed.source.connection import Source, connection_lost, source_for
from riverbed.state import SchemaVersion, SnapshotDone, StateStore, open_state


@dataclass
class CaptureResult:
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    snapshot_seconds: float = 0.0  # slot creation + copying every table + manifest commits
    stream: StreamStats | None = None
    resumed_from: int | None = None
    orphans_removed: int = 0


def captured_tables(project: Project, conn: Any) -> list[str]:
    """The tables in config, or every table of the source schema when config lists none.

    A partitioned table is captured as its root alone (its partitions are where its rows
    live, not tables of their own): the snapshot copies the root, which reads every partition,
    and the publication sends the partitions' changes as the root's."""
    if project.config.tables:
        return list(project.config.tables)
    schema = project.config.source.schema_name
    return [
        r[0]
        for r in conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relkind in ('r', 'p') and not c.relispartition"
            " order by 1",
            (schema,),
        )
    ]


def run_capture(  # noqa: C901 -- setup, resnapshot and the stream loop in one; to be split
    project: Project,
    *,
    follow: bool,
    should_stop: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda _: None,
    resnapshot: bool = False,
    force: bool = False,
) -> CaptureResult:
    """Capture into the lake. ``force``: --resnapshot drops the slot even when this project's
    lake does not know it (another project's or tool's)."""
    cfg = project.config
    source = source_for(project)
    schema = cfg.source.schema_name
    storage = open_storage(cfg.lake, project.root)
    manifest = open_state(project)
    slot, publication = manifest.capture.names(cfg.source, create=True)
    assert slot is not None and publication is not None  # create: the project's own, if unset
    try:
        lock = ProcessLock(project.home / f"capture-{slot}.lock", "riverbed capture")
    except BaseException:
        manifest.close()
        raise
    result = CaptureResult()
    try:
        with source.connect(autocommit=True) as conn:
            check_schema(conn, schema)
            tables = captured_tables(project, conn)
            if not tables:
                raise CaptureSetupError(f"schema {schema} has no tables to capture")
            check_source(conn, schema, tables, listed=bool(cfg.tables))
            state = wait_while_peeked(conn, slot, slot_state(conn, slot))
            if state.active_pid:
                raise _in_use(slot, state.active_pid)
            position = manifest.capture.position(slot)
            # a slot this manifest does not know (no position, no record of creating it, or
            # one recreated since), or the one it knows, taken over by someone else
            foreign = state.exists and position is None and not _created_here(manifest, slot, state)
            replaced = (
                position is not None
                and state.exists
                and slot_is_past(state, position, manifest.capture.ceiling(slot))
            )
            if (foreign or replaced) and resnapshot and not force:
                raise CaptureSetupError(
                    f"replication slot {slot!r} is not one this project's lake knows (this "
                    "project did not create it, or it was dropped and created again since; "
                    "another project or tool may be reading from it: two project folders with "
                    "the same source.slot?), so --resnapshot leaves it alone; set "
                    "source.slot and source.publication in riverbed.yaml to names of this "
                    "project's own, or, if nothing else uses the slot, add --force to drop it"
                )
            if foreign and not resnapshot:
                raise CaptureSetupError(
                    f"replication slot {slot!r} exists, but this project did not create it "
                    "(another project or tool may be reading from it); set source.slot to "
                    "another name, or, if it is unused, drop it (`riverbed capture --once "
                    "--resnapshot --force` drops it and snapshots afresh)"
                )
            if state.exists and position is not None and not resnapshot:
                check_slot_is_ours(state, slot, position, manifest.capture.ceiling(slot))
                # captured tables the publication lacks were dropped and created again (`shop
                # seed --reset`) or taken out of it: their changes meanwhile were never
                # streamed, so they are copied anew. Forgotten BEFORE the publication gets them
                # back: a crash in between must not leave them looking copied
                snapshotted = manifest.capture.snapshot_tables(slot)
                lost = unpublished(conn, publication, schema, tables)
                manifest.capture.forget_snapshots(slot, [t for t in lost if t in snapshotted])
            added = ensure_publication(conn, publication, schema, tables)
            if resnapshot or (state.exists and position is None):
                if state.exists:
                    say(f"dropping slot {slot} to start a fresh snapshot")
                    drop_slot(conn, slot)
                # and what earlier slots of the project captured (source.slot was changed):
                # the fresh snapshot replaces the whole lake
                removed = [
                    path
                    for known in {slot, *manifest.capture.known_slots()}
                    for path in manifest.capture.forget_slot(known)
                ]
                for path in removed:
                    storage.delete(path)
                if removed:
                    _withdraw_facts(project, manifest)
                state = slot_state(conn, slot)
                position = None
            elif not state.exists and position is not None:
                raise slot_gone(slot, position)
            target = _drain_target(conn)
            if added and state.exists:
                say(f"added to publication {publication}: {', '.join(added)}")

        result.orphans_removed = _remove_orphans(storage, manifest, tables)
        started = time.monotonic()
        if not state.exists:
            result.snapshot_rows = _snapshot(project, source, slot, manifest, storage, tables, say)
        else:
            result.resumed_from = position
            say(f"resuming slot {slot} at {format_lsn(position or 0)}")
            snapshotted = manifest.capture.snapshot_tables(slot)
            # a table out of the capture (left out of tables:, or gone from the source) stops
            # landing here: forget its copy, so that it is copied anew if it comes back
            manifest.capture.forget_snapshots(slot, [t for t in snapshotted if t not in tables])
            # copied from a snapshot of their own: tables new to the capture or back in it
            copies = [t for t in tables if t not in snapshotted]
            # what the lake holds of those is not the source's any more: a T row ends it first
            stale = [t for t in copies if manifest.lake.files("raw", t)]
            if copies:
                result.snapshot_rows = _snapshot(
                    project,
                    source,
                    slot,
                    manifest,
                    storage,
                    copies,
                    say,
                    backfill=True,
                    stale=stale,
                )
        if result.snapshot_rows:
            result.snapshot_seconds = time.monotonic() - started

        schemas = _current_schemas(manifest, tables)
        heartbeat_conn = source.connect(autocommit=True)
        record = _Recorder(manifest, heartbeat_conn, slot)
        stream = ChangeStream(
            dsn=source.conninfo(options=SESSION_SETTINGS),
            slot=slot,
            publication=publication,
            storage=storage,
            manifest=manifest,
            captured=frozenset(f"{schema}.{t}" for t in tables),
            schemas=schemas,
            snapshot_lsns=manifest.capture.snapshot_tables(slot),
            primary_keys=lambda relid: primary_keys(heartbeat_conn, relid),
            heartbeat=lambda: heartbeat_conn.execute(
                "select pg_logical_emit_message(false, %s, 'heartbeat')", (HEARTBEAT_PREFIX,)
            ),
            server_lsn=lambda: parse_lsn(
                heartbeat_conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
            ),
            max_rows=cfg.lake.max_rows,
            max_seconds=cfg.lake.max_seconds,
            status_interval=cfg.capture.status_interval_seconds,
            heartbeat_seconds=cfg.capture.heartbeat_seconds,
            on_flush=record,
            published=lambda: not unpublished(heartbeat_conn, publication, schema, tables),
            # once the stream holds the slot nobody can drop it: checked again there, as the
            # slot may have been replaced since the check above
            check_slot=lambda at: check_slot_is_ours(
                slot_state(heartbeat_conn, slot), slot, at, manifest.capture.ceiling(slot)
            ),
            slot_released=lambda: _released(heartbeat_conn, slot),
        )
        try:
            result.stream = stream.run(should_stop, until_lsn=None if follow else target)
            record(result.stream)
            if stream.unpublished:
                # a transient failure: --follow starts over at once, and copies them anew
                raise SourceError(
                    f"captured tables left publication {publication} while streaming (dropped "
                    "and created again?); starting over to copy them anew"
                )
        except psycopg2.Error as exc:
            reason = stream.lost(exc)  # asked before close(), which closes what it looks at
            if reason is None:
                if not slot_state(heartbeat_conn, slot).exists:  # dropped since the check
                    raise slot_gone(slot, stream.position) from exc
                raise
            raise _lost(source, reason) from exc
        finally:
            stream.close()
            heartbeat_conn.close()
    except psycopg2.OperationalError as exc:  # opening the stream, creating the slot
        raise _lost(source, first_line(exc)) from exc
    except psycopg.Error as exc:  # the setup queries, the heartbeat connection
        if not connection_lost(exc):
            raise
        raise _lost(source, first_line(exc)) from exc
    finally:
        manifest.close()
        lock.release()
    return result


def _created_here(manifest: StateStore, slot: str, state: SlotState) -> bool:
    """Whether the slot (there, with no position in the manifest: a first snapshot cut short)
    is the one this project created: recorded before creating it, and still at the consistent
    point recorded right after (nothing confirms a position to it before the snapshot ends)."""
    if not manifest.capture.created_slot(slot):
        return False
    identity = manifest.capture.slot_identity(slot)
    return identity is None or state.confirmed_lsn in (None, identity)


def _in_use(slot: str, pid: int) -> CaptureSetupError:
    return CaptureSetupError(
        f"replication slot {slot!r} is in use by server process {pid}; "
        "is another capture running against this source?"
    )


def _released(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Whether the slot, found busy when the stream started, is free again once a lag
    measurement peeking at it let go (a measurement that began after the check above)."""
    state = wait_while_peeked(conn, slot, slot_state(conn, slot))
    if state.active_pid:
        raise _in_use(slot, state.active_pid)
    return True


def _lost(source: Source, reason: str) -> SourceError:
    """The source went away mid-capture: transient, so `--follow` reconnects with backoff and
    resumes from the lake's position; `--once` ends with this line."""
    return SourceError(f"lost the connection to the source {source.display}: {reason}")


def _drain_target(conn: Any) -> int:
    """Where `--once` stops: a WAL position that is flushed and covers every commit so far.

    pg_current_wal_lsn() is not enough: it can point into WAL not yet flushed (asynchronous
    commits, page images), which the server does not send until something flushes it. A
    synchronously committed message flushes everything before it.
    """
    with conn.transaction():
        conn.execute("set local synchronous_commit = on")
        conn.execute("select pg_logical_emit_message(true, %s, 'drain')", (HEARTBEAT_PREFIX,))
    row = conn.execute("select pg_current_wal_flush_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def _snapshot(
    project: Project,
    source: Source,
    slot: str,
    manifest: StateStore,
    storage: LakeStorage,
    tables: list[str],
    say: Callable[[str], None],
    *,
    backfill: bool = False,
    stale: list[str] | None = None,
) -> dict[str, int]:
    """Copy ``tables`` from a snapshot exported by a new slot.

    First run: that slot is the capture slot, and the stream starts at its consistent point.
    Backfill (tables added later, already in the publication): a TEMPORARY slot exports the
    snapshot; its consistent point L is recorded per table, and the stream drops those tables'
    changes committed before L, which the copy already holds. Exactly once either way.
    A ``stale`` table (in the lake already) gets a T row before its copy, in the same manifest
    commit, and a new schema version.
    """
    cfg = project.config
    op = "I" if cfg.capture.include_op_for_full_load else "L"
    repl = psycopg2.connect(
        source.conninfo(options=SESSION_SETTINGS),
        connection_factory=psycopg2.extras.LogicalReplicationConnection,
    )
    try:
        cursor = repl.cursor()
        created = f"{slot}_backfill_{os.getpid()}" if backfill else slot
        temporary = " TEMPORARY" if backfill else ""
        if not backfill:
            manifest.capture.creating_slot(slot)  # before it exists: a crash from here on is ours
        # the classic syntax, understood by PostgreSQL 10 and later
        cursor.execute(
            f'CREATE_REPLICATION_SLOT "{created}"{temporary} LOGICAL pgoutput EXPORT_SNAPSHOT'
        )
        row = cursor.fetchone()
        point = SnapshotPoint(
            name=row[2], lsn=parse_lsn(row[1]), ts_us=int(time.time() * 1_000_000)
        )
        if not backfill:
            manifest.capture.slot_created(
                slot, point.lsn
            )  # its identity, until a position is confirmed
        say(f"created slot {created} at {row[1]}; copying {', '.join(tables)} from its snapshot")

        versions = {t: manifest.lake.schema_versions(t)[-1].version + 1 for t in stale or []}

        def done(copy: TableCopy) -> None:
            schema = SchemaVersion(
                copy.table, copy.schema.version, copy.schema.describe(), point.lsn
            )
            files = copy.files
            if copy.table in versions:
                files = [truncate_file(storage, copy.schema, point), *files]
            manifest.capture.commit(
                slot, files, None, [schema], [SnapshotDone(copy.table, point.lsn, copy.rows)]
            )
            say(f"snapshot of {copy.table}: {copy.rows:,} rows in {len(copy.files)} files")

        copies = copy_tables(
            source,
            point,
            cfg.source.schema_name,
            tables,
            storage,
            workers=cfg.capture.snapshot_workers,
            op=op,
            on_table_done=done,
            versions=versions,
        )
        if not backfill:
            # every table is in: the stream takes over exactly at the consistent point
            manifest.capture.commit(slot, [], point.lsn)
    finally:
        repl.close()
    return {c.table: c.rows for c in copies}


def _current_schemas(manifest: StateStore, tables: list[str]) -> dict[str, TableSchema]:
    schemas = {}
    for table in manifest.lake.tables("raw") + tables:
        versions = manifest.lake.schema_versions(table)
        if versions:
            latest = versions[-1]
            columns = tuple(
                PgColumn(c["name"], c["type_oid"], c["type_modifier"], c["type_name"])
                for c in latest.columns
            )
            keys = tuple(i for i, c in enumerate(latest.columns) if c["key"])
            schemas[table] = TableSchema(table, latest.version, columns, keys)
    return schemas


def _remove_orphans(storage: LakeStorage, manifest: StateStore, tables: list[str]) -> int:
    """Delete raw files a crash left behind before their manifest commit (nobody reads them)."""
    visible = {f.path for f in manifest.lake.files("raw")}
    removed = 0
    for table in set(tables) | set(manifest.lake.tables("raw")):
        for path in storage.list(raw_prefix(table)):
            if path not in visible:
                storage.delete(path)
                removed += 1
    return removed


class _Recorder:
    """Records the stream's metrics at each flush: the counters as increments since the last
    record (a counter's value is the sum of its samples), the lag and position as gauges.
    Called from the writer thread and the loop, hence the lock."""

    def __init__(self, manifest: StateStore, conn: Any, slot: str):
        self.manifest = manifest
        self.conn = conn
        self.slot = slot
        self.recorded = StreamStats()
        self._lock = threading.Lock()

    def __call__(self, stats: StreamStats) -> None:
        with self._lock:
            try:
                row = self.conn.execute("select pg_current_wal_lsn()::text").fetchone()
                current = parse_lsn(row[0])
            except Exception:  # metrics must never stop capture
                current = stats.server_wal_end
            # lag (as riverbed.capture.lag defines it for a stopped capture): the age of the
            # oldest transaction received but not in the lake; none when everything sent is
            # in it. Just after a flush with nothing received since, the next one is unknown
            # but committed after the newest in the lake: that one's age bounds it
            lag_bytes = max(0, current - stats.position)
            oldest = stats.pending_commit_ts_us
            if oldest is None and not stats.caught_up and lag_bytes:
                oldest = stats.last_commit_ts_us
            if oldest is None and stats.caught_up:
                lag_bytes = 0  # WAL written since (other databases, heartbeats) is not ours
            lag_seconds = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1e6)
            done = self.recorded
            self.manifest.metrics.record(
                {
                    "capture_lag_bytes": lag_bytes,
                    "capture_lag_seconds": lag_seconds,
                    "capture_rows_total": stats.rows - done.rows,
                    "capture_files_total": stats.files - done.files,
                    "capture_bytes_total": stats.bytes - done.bytes,
                    "capture_transactions_total": stats.transactions - done.transactions,
                    "capture_position": stats.position,
                },
                {"slot": self.slot},
            )
            self.recorded = StreamStats(
                transactions=stats.transactions,
                rows=stats.rows,
                files=stats.files,
                bytes=stats.bytes,
            )


def _withdraw_facts(project: Project, manifest: StateStore) -> None:
    """The lake was replaced: every fact's staged batches are withdrawn, as `run --reprocess
    TABLE --from 0/0` does, so the next load takes the old lake's events out of the warehouse
    before it loads the new snapshot's (which hold the same rows again). Dimensions keep their
    versions: the merge makes none for a row it already holds."""
    from riverbed.lake.lock import ProcessLock

    facts = [name for name, table in project.config.tables.items() if table.kind == "fact"]
    if not facts:
        return
    # as --reprocess: no run may be between its transform and its load meanwhile
    with (
        ProcessLock(project.home / "run.lock", "riverbed run"),
        ProcessLock(project.home / "transform.lock", "riverbed run"),
        ProcessLock(project.home / "load.lock", "riverbed run (load)"),
    ):
        for name in facts:
            manifest.transform.withdraw(name, 0)
