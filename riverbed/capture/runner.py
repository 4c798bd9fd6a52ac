"""`riverbed capture`: set up the slot and publication, snapshot once, then stream.

How to start (resume, snapshot afresh, start over after a first snapshot cut short, or refuse
a foreign, replaced or vanished slot) is decided by riverbed.capture.plan from facts gathered
here; this module does the I/O: it gathers the facts, carries the plan out, and streams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras

from riverbed.capture.binary_mode import TextModeNeeded, binary_capable, text_form_types
from riverbed.capture.changes import TableSchema
from riverbed.capture.plan import Refusal, StartFacts, StartPlan, plan_start, refusal
from riverbed.capture.privileges import check_privileges
from riverbed.capture.slot import (
    CaptureSetupError,
    check_schema,
    check_slot_is_ours,
    check_source,
    drop_slot,
    ensure_publication,
    primary_keys,
    slot_gone,
    slot_in_use,
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
from riverbed.capture.stream import HEARTBEAT_PREFIX, ChangeStream
from riverbed.capture.stream_terms import StreamSettings, StreamStats
from riverbed.capture.streamed import streaming_capable, work_mem_option
from riverbed.config.loader import Project
from riverbed.errors import SourceError, first_line
from riverbed.lake.layout import raw_prefix
from riverbed.lake.lock import every_run_lock, project_lock
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


def run_capture(
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
    storage = open_storage(cfg.lake, project.root)
    manifest = open_state(project)
    slot, publication = manifest.capture.names(cfg.source, create=True)
    assert slot is not None and publication is not None  # create: the project's own, if unset
    try:
        lock = project_lock(project, f"capture-{slot}", "riverbed capture")
    except BaseException:
        manifest.close()
        raise
    run = _Run(project, source, storage, manifest, slot, publication, say)
    try:
        with source.connect(autocommit=True) as conn:
            tables, plan, target = _prepare(run, conn, resnapshot=resnapshot, force=force)
        result = _catch_up(run, tables, plan)
        result.stream = _stream(run, tables, should_stop, until_lsn=None if follow else target)
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


@dataclass(frozen=True)
class _Run:
    """What one capture works with, opened (and closed) by run_capture."""

    project: Project
    source: Source
    storage: LakeStorage
    manifest: StateStore
    slot: str
    publication: str
    say: Callable[[str], None]

    @property
    def schema(self) -> str:
        return self.project.config.source.schema_name


def _prepare(
    run: _Run, conn: psycopg.Connection[Any], *, resnapshot: bool, force: bool
) -> tuple[list[str], StartPlan, int]:
    """Check the source, decide how to start (plan_start), and set the source up for it: the
    publication, the slot dropped or the lake forgotten when starting over. Returns the
    captured tables, the plan, and where `--once` stops."""
    check_schema(conn, run.schema)
    tables = captured_tables(run.project, conn)
    if not tables:
        raise CaptureSetupError(f"schema {run.schema} has no tables to capture")
    check_source(conn, run.schema, tables, listed=bool(run.project.config.tables))
    check_privileges(conn, run.schema, tables, run.publication)
    facts = _facts(run, conn, tables, resnapshot=resnapshot, force=force)
    plan = plan_start(facts)
    if plan.refuse is not None:
        if plan.refuse is Refusal.INVALIDATED:  # data lost: an alarm must be able to say so
            run.manifest.metrics.record({"capture_slot_invalidated_total": 1.0}, {})
        raise refusal(plan, facts)
    if plan.forget_unpublished:
        run.manifest.capture.forget_snapshots(run.slot, plan.forget_unpublished)
    added = ensure_publication(conn, run.publication, run.schema, tables)
    if plan.drop_slot:
        run.say(f"dropping slot {run.slot} to start a fresh snapshot")
        drop_slot(conn, run.slot)
    if plan.forget_lake:
        _forget_lake(run)
    target = drain_target(conn)
    if added and plan.resumes:
        run.say(f"added to publication {run.publication}: {', '.join(added)}")
    return tables, plan, target


def _facts(
    run: _Run, conn: psycopg.Connection[Any], tables: list[str], *, resnapshot: bool, force: bool
) -> StartFacts:
    """What plan_start decides from: the slot as the source shows it, and the state store's
    records of it."""
    capture, slot = run.manifest.capture, run.slot
    return StartFacts(
        slot=slot,
        state=wait_while_peeked(conn, slot, slot_state(conn, slot)),
        position=capture.position(slot),
        ceiling=capture.ceiling(slot),
        created=capture.created_slot(slot),
        identity=capture.slot_identity(slot),
        tables=tuple(tables),
        snapshotted=frozenset(capture.snapshot_tables(slot)),
        unpublished=frozenset(unpublished(conn, run.publication, run.schema, tables)),
        in_lake=frozenset(run.manifest.lake.tables("raw")),
        resnapshot=resnapshot,
        force=force,
    )


def _forget_lake(run: _Run) -> None:
    """Forget and delete what the slot captured, and what earlier slots of the project
    captured (source.slot was changed): the fresh snapshot replaces the whole lake."""
    capture = run.manifest.capture
    removed = [
        path for known in {run.slot, *capture.known_slots()} for path in capture.forget_slot(known)
    ]
    for path in removed:
        run.storage.delete(path)
    if removed:
        _withdraw_facts(run.project, run.manifest)


def _catch_up(run: _Run, tables: list[str], plan: StartPlan) -> CaptureResult:
    """Copy what the plan copies: every table through a new slot, or, resuming, the tables
    new to the capture or back in it through a temporary one."""
    result = CaptureResult(orphans_removed=_remove_orphans(run.storage, run.manifest, tables))
    started = time.monotonic()
    if plan.resume_at is not None:
        result.resumed_from = plan.resume_at
        run.say(f"resuming slot {run.slot} at {format_lsn(plan.resume_at)}")
        # a table out of the capture (left out of tables:, or gone from the source) stops
        # landing here: its copy is forgotten, so that it is copied anew if it comes back
        run.manifest.capture.forget_snapshots(run.slot, plan.forget_uncaptured)
    if plan.copy:
        result.snapshot_rows = _snapshot(
            run.project,
            run.source,
            run.slot,
            run.manifest,
            run.storage,
            list(plan.copy),
            run.say,
            backfill=plan.resumes,
            stale=list(plan.stale),
        )
    if result.snapshot_rows:
        result.snapshot_seconds = time.monotonic() - started
    return result


def _stream(
    run: _Run, tables: list[str], should_stop: Callable[[], bool], until_lsn: int | None
) -> StreamStats:
    """Stream from the slot into the lake until ``should_stop()`` or, with ``until_lsn``,
    until everything committed before it is in the lake. In binary mode when the source and
    the tables allow it (capture.binary_mode); a stream stopped for a table that does not is
    started again in text mode."""
    heartbeat_conn = run.source.connect(autocommit=True)
    try:
        capture = run.project.config.capture
        binary = capture.binary and binary_capable(heartbeat_conn, run.schema, tables)
        streaming = capture.streaming and streaming_capable(heartbeat_conn)
        options = SESSION_SETTINGS
        if streaming:
            options += " " + work_mem_option(heartbeat_conn)
        earlier: StreamStats | None = None
        while True:
            try:
                stats = _stream_once(
                    run,
                    tables,
                    heartbeat_conn,
                    should_stop,
                    until_lsn,
                    (binary, streaming, options),
                )
            except TextModeNeeded as exc:
                run.say(str(exc))
                earlier, binary = exc.stats, False
                continue
            return stats if earlier is None else stats.after(earlier)
    finally:
        heartbeat_conn.close()


def _stream_once(
    run: _Run,
    tables: list[str],
    heartbeat_conn: Any,
    should_stop: Callable[[], bool],
    until_lsn: int | None,
    modes: tuple[bool, bool, str],  # binary, streaming, the replication session's options
) -> StreamStats:
    cfg, manifest = run.project.config, run.manifest
    settings = StreamSettings(
        slot=run.slot,
        publication=run.publication,
        captured=frozenset(f"{run.schema}.{t}" for t in tables),
        max_rows=cfg.lake.max_rows,
        max_seconds=cfg.lake.max_seconds,
        status_interval=cfg.capture.status_interval_seconds,
        heartbeat_seconds=cfg.capture.heartbeat_seconds,
        binary=modes[0],
        streaming=modes[1],
    )
    record = _Recorder(manifest, heartbeat_conn, run.slot)
    stream = ChangeStream(
        settings,
        _HeartbeatProbe(heartbeat_conn, run, tables),
        dsn=run.source.conninfo(options=modes[2]),
        storage=run.storage,
        manifest=manifest,
        schemas=_current_schemas(manifest, tables),
        on_flush=record,
        staging=run.project.home / "streamed" / run.slot,
    )
    try:
        stats = stream.run(should_stop, until_lsn=until_lsn)
        record(stats)
    except TextModeNeeded as exc:
        exc.stats = stream.stats  # what it made durable
        raise
    except psycopg2.Error as exc:
        reason = stream.lost(exc)  # asked before close(), which closes what it looks at
        if reason is None:
            if not slot_state(heartbeat_conn, run.slot).exists:  # dropped since the check
                raise slot_gone(run.slot, stream.position) from exc
            raise
        raise _lost(run.source, reason) from exc
    finally:
        stream.close()
    if stream.unpublished:
        # a transient failure: --follow starts over at once, and copies them anew
        raise SourceError(
            f"captured tables left publication {run.publication} while streaming (dropped "
            "and created again?); starting over to copy them anew"
        )
    return stats


class _HeartbeatProbe:
    """The stream's SourceProbe, over the heartbeat connection (an ordinary connection beside
    the replication one, which carries nothing but the stream)."""

    def __init__(self, conn: psycopg.Connection[Any], run: _Run, tables: list[str]):
        self.conn = conn
        self.run = run
        self.tables = tables

    def primary_keys(self, relid: int) -> list[str]:
        return primary_keys(self.conn, relid)

    def heartbeat(self) -> None:
        self.conn.execute(
            "select pg_logical_emit_message(false, %s, 'heartbeat')", (HEARTBEAT_PREFIX,)
        )

    def server_lsn(self) -> int:
        row = self.conn.execute("select pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return parse_lsn(row[0])

    def published(self) -> bool:
        return not unpublished(self.conn, self.run.publication, self.run.schema, self.tables)

    def check_slot(self, position: int) -> None:
        # once the stream holds the slot nobody can drop it: checked again there, as the slot
        # may have been replaced since the check in _prepare
        slot = self.run.slot
        ceiling = self.run.manifest.capture.ceiling(slot)
        check_slot_is_ours(slot_state(self.conn, slot), slot, position, ceiling)

    def slot_released(self) -> bool:
        return _released(self.conn, self.run.slot)

    def text_form_types(self, oids: list[int]) -> set[int]:
        return text_form_types(self.conn, oids)


def _released(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Whether the slot, found busy when the stream started, is free again once a lag
    measurement peeking at it let go (a measurement that began after the check in _prepare)."""
    state = wait_while_peeked(conn, slot, slot_state(conn, slot))
    if state.active_pid:
        raise slot_in_use(slot, state.active_pid)
    return True


def _lost(source: Source, reason: str) -> SourceError:
    """The source went away mid-capture: transient, so `--follow` reconnects with backoff and
    resumes from the lake's position; `--once` ends with this line."""
    return SourceError(f"lost the connection to the source {source.display}: {reason}")


def drain_target(conn: Any) -> int:
    """Where `--once` stops: a WAL position that is flushed and covers every commit so far
    (capture's position at or past it means the lake holds every one of them).

    pg_current_wal_lsn() is not enough: it is where WAL has been written to, which can be
    before commits made with synchronous_commit off (the shop workload's), and before WAL not
    yet flushed, which the server does not send until something flushes it. A synchronously
    committed message flushes everything before it.
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
    commit, and a new schema version. So does a dimension the warehouse holds already (its
    loads recorded: a resnapshot, the lake forgotten and copied again): the load then closes
    the keys the new copy lacks, deleted at the source while their changes could not be
    captured, and keeps the versions of the rest (riverbed.load.scd2._truncates). Read from
    the load records, not from what this capture forgot: a capture killed between forgetting
    the lake and copying it again must still do it. Facts need none: their loads from the old
    lake are withdrawn (_withdraw_facts).
    """
    cfg = project.config
    replacing = {
        table
        for table in tables
        if table in cfg.tables
        and cfg.tables[table].kind == "dimension"
        and manifest.loads.loaded(table=table)
    }
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
            if copy.table in versions or copy.table in replacing:
                files = [truncate_file(storage, copy.schema, point), *files]
            manifest.capture.commit(
                slot, files, None, [schema], [SnapshotDone(copy.table, point.lsn, copy.rows)]
            )
            rows, written = copy.rows, len(copy.files)
            say(
                f"snapshot of {copy.table}: {rows:,} row{'' if rows == 1 else 's'} in "
                f"{written} file{'' if written == 1 else 's'}"
            )

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
    Called on the stream loop's thread only (ChangeStream calls on_flush there), then once
    more by _stream on the same thread: no lock."""

    def __init__(self, manifest: StateStore, conn: Any, slot: str):
        self.manifest = manifest
        self.conn = conn
        self.slot = slot
        self.recorded = StreamStats()

    def __call__(self, stats: StreamStats) -> None:
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

    facts = [name for name, table in project.config.tables.items() if table.kind == "fact"]
    if not facts:
        return
    # as --reprocess: no run may be between its transform and its load meanwhile
    with every_run_lock(project):
        for name in facts:
            manifest.transform.withdraw(name, 0)
