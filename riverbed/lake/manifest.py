"""The manifest: which lake files exist for the stages that follow, and how far capture got.

A file in the lake is invisible until its manifest row is committed. Capture commits the rows
of every file of a flush together with the new source position in ONE SQLite transaction, and
only then confirms that position to the replication slot. So after a crash at any point:

* files written but not yet in the manifest are orphans nobody reads (their names are derived
  from the LSNs they hold, so the re-streamed transactions overwrite them with the same bytes);
* the manifest position says exactly which transactions are in the lake; the slot may be
  behind it (feedback lost), never ahead, and capture skips what the manifest already has.

The store is SQLite in WAL mode with synchronous=FULL: a commit is durable when it returns.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from riverbed.config.loader import Project
from riverbed.config.models import SourceConfig
from riverbed.errors import ErrorClass, RiverbedError, first_line
from riverbed.lake.layout import batch_of, parse_raw_path

SCHEMA = """
create table if not exists lake_files (
  path           text primary key,
  stage          text not null,
  table_name     text not null,
  rows           integer not null,
  bytes          integer not null,
  min_lsn        integer not null,
  max_lsn        integer not null,
  schema_version integer not null,
  full_load      integer not null default 0,
  slot           text,
  created_at     real not null,
  -- a raw file's first and last commit time, microseconds since the epoch (UTC); null for
  -- files recorded before these columns were (see LakeFile.committed_from)
  min_commit_ts  integer,
  max_commit_ts  integer
);
create index if not exists lake_files_by_table on lake_files (stage, table_name, max_lsn);
create table if not exists capture_position (
  slot        text primary key,
  lsn         integer not null,
  updated_at  real not null
);
create table if not exists capture_snapshot (
  slot            text not null,
  table_name      text not null,
  consistent_lsn  integer not null,
  rows            integer not null,
  done_at         real not null,
  primary key (slot, table_name)
);
create table if not exists capture_slot_created (
  slot        text primary key,
  created_at  real not null
);
create table if not exists capture_slot_identity (
  slot            text primary key,
  consistent_lsn  integer not null,
  created_at      real not null
);
create table if not exists capture_ceiling (
  slot  text primary key,
  lsn   integer not null
);
create table if not exists project_settings (
  name   text primary key,
  value  text not null
);
create table if not exists table_schemas (
  table_name  text not null,
  version     integer not null,
  columns     text not null,
  first_lsn   integer not null,
  created_at  real not null,
  primary key (table_name, version)
);
create table if not exists metrics (
  name    text not null,
  labels  text not null,
  value   real not null,
  ts      real not null
);
create index if not exists metrics_by_name on metrics (name, ts);
create index if not exists metrics_by_ts on metrics (ts);
"""

# the slot and publication name of every project before names of their own were chosen
LEGACY_CAPTURE_NAME = "riverbed"


@dataclass(frozen=True)
class LakeFile:
    """One visible file of the lake and what it holds."""

    path: str
    stage: str  # raw | staged | quarantine
    table: str
    rows: int
    bytes: int
    min_lsn: int
    max_lsn: int
    schema_version: int
    full_load: bool = False
    min_commit_ts: int | None = None  # raw files: first and last commit time, in microseconds
    max_commit_ts: int | None = None

    @property
    def batch_id(self) -> str | None:
        """The transform batch a staged or quarantined file belongs to (its ``batch=<id>``
        folder); None for a raw file."""
        return batch_of(self.path)

    def committed_from(self, hour: datetime) -> bool:
        """Whether this raw file holds changes committed in ``hour`` (the start of an hour,
        UTC) or later: by its recorded commit times, or for a file recorded before they were,
        by the partition hour its path names."""
        if self.max_commit_ts is not None:
            return self.max_commit_ts >= int(hour.timestamp()) * 1_000_000
        return parse_raw_path(self.path).hour >= hour


@dataclass(frozen=True)
class SchemaVersion:
    table: str
    version: int
    columns: list[dict[str, Any]]  # [{name, type_oid, type_modifier, type_name, key}]
    first_lsn: int


def insert_files(
    db: sqlite3.Connection, files: Iterable[LakeFile], slot: str | None, now: float
) -> None:
    """Make ``files`` visible, inside the caller's transaction."""
    db.executemany(
        "insert or replace into lake_files (path, stage, table_name, rows, bytes, min_lsn,"
        " max_lsn, schema_version, full_load, slot, created_at, min_commit_ts, max_commit_ts)"
        " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                f.path,
                f.stage,
                f.table,
                f.rows,
                f.bytes,
                f.min_lsn,
                f.max_lsn,
                f.schema_version,
                int(f.full_load),
                slot,
                now,
                f.min_commit_ts,
                f.max_commit_ts,
            )
            for f in files
        ],
    )


def _add_commit_times(db: sqlite3.Connection) -> None:
    """Give a state store created before lake_files held commit times their columns (null
    for the files already there)."""
    have = {r[1] for r in db.execute("pragma table_info(lake_files)")}
    for column in ("min_commit_ts", "max_commit_ts"):
        if column not in have:
            try:
                db.execute(f"alter table lake_files add column {column} integer")
            except sqlite3.OperationalError:
                if column not in {r[1] for r in db.execute("pragma table_info(lake_files)")}:
                    raise  # not a process opening the store at the same time adding it first


class Manifest:
    """The lake manifest and capture positions, in the state store (SQLite)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("pragma journal_mode = wal")
        self._db.execute("pragma synchronous = full")
        self._db.executescript(SCHEMA)
        _add_commit_times(self._db)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read from the state store (the stages' own tables live beside the manifest's)."""
        with self._lock:
            return self._db.execute(statement, params).fetchall()

    def has_table(self, name: str) -> bool:
        """Whether a stage has created its table ``name`` in the state store yet."""
        return bool(self.query("select 1 from sqlite_master where name = ?", (name,)))

    def ensure_schema(self, ddl: str) -> None:
        """Create a stage's own tables in the state store, if missing."""
        with self._lock:
            self._db.executescript(ddl)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything a stage commits together (its outputs, made
        visible here, and its bookkeeping) becomes durable at once or not at all."""
        # one connection, shared by the snapshot's copy threads: one transaction at a time
        with self._lock, _translating(self.path):
            self._db.execute("begin immediate")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a failed commit rolled back already
                    self._db.execute("rollback")
                raise
            self._db.execute("commit")

    # --- capture ----------------------------------------------------------------------------

    def commit_capture(
        self,
        slot: str,
        files: Iterable[LakeFile],
        position: int | None,
        schemas: Iterable[SchemaVersion] = (),
        snapshot_done: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        """Make ``files`` visible and move the slot's position, atomically.

        ``snapshot_done`` holds (table, consistent_lsn, rows) for snapshot copies finished here.
        """
        now = time.time()
        with self.transaction() as db:
            for schema in schemas:
                db.execute(
                    "insert or ignore into table_schemas values (?, ?, ?, ?, ?)",
                    (
                        schema.table,
                        schema.version,
                        json.dumps(schema.columns),
                        schema.first_lsn,
                        now,
                    ),
                )
            insert_files(db, files, slot, now)
            for table, lsn, rows in snapshot_done:
                db.execute(
                    "insert or replace into capture_snapshot values (?, ?, ?, ?, ?)",
                    (slot, table, lsn, rows, now),
                )
            if position is not None:
                db.execute(
                    "insert into capture_position values (?, ?, ?) on conflict (slot) do update"
                    " set lsn = max(lsn, excluded.lsn), updated_at = excluded.updated_at",
                    (slot, position, now),
                )

    def position(self, slot: str) -> int | None:
        """The end LSN up to which every committed change is in the lake, or None."""
        row = self._db.execute(
            "select lsn from capture_position where slot = ?", (slot,)
        ).fetchone()
        return None if row is None else int(row[0])

    def snapshot_tables(self, slot: str) -> dict[str, int]:
        """Tables whose snapshot copy is complete for ``slot``: table -> consistent LSN."""
        rows = self._db.execute(
            "select table_name, consistent_lsn from capture_snapshot where slot = ?", (slot,)
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def creating_slot(self, slot: str) -> None:
        """Record, BEFORE creating it, that this project creates replication slot ``slot``.

        Recorded first so that a crash while the slot is created or during the first snapshot
        (slot there, no position) is known to be ours and is started over; a slot without the
        record belongs to someone else and is never dropped unasked.
        """
        with self.transaction() as db:
            db.execute(
                "insert or replace into capture_slot_created values (?, ?)", (slot, time.time())
            )

    def created_slot(self, slot: str) -> bool:
        """Whether this project created (or was creating) replication slot ``slot``."""
        row = self._db.execute(
            "select 1 from capture_slot_created where slot = ?", (slot,)
        ).fetchone()
        return row is not None

    def slot_created(self, slot: str, consistent_lsn: int) -> None:
        """Record the consistent point of the slot this project just created: its identity.

        Until this project confirms a position to it, a slot stays at its consistent point, so a
        slot of that name elsewhere (dropped and created again by someone else) is told apart.
        """
        with self.transaction() as db:
            db.execute(
                "insert or replace into capture_slot_identity values (?, ?, ?)",
                (slot, consistent_lsn, time.time()),
            )
            # nothing confirmed it further yet
            db.execute(
                "insert or replace into capture_ceiling values (?, ?)", (slot, consistent_lsn)
            )

    def slot_identity(self, slot: str) -> int | None:
        """The consistent point of ``slot`` when this project created it (None: not recorded,
        e.g. a slot created by an earlier release, or a crash right after creating it)."""
        row = self._db.execute(
            "select consistent_lsn from capture_slot_identity where slot = ?", (slot,)
        ).fetchone()
        return None if row is None else int(row[0])

    def raise_ceiling(self, slot: str, lsn: int) -> None:
        """Record that the slot may be confirmed up to ``lsn``, BEFORE it can be.

        psycopg2 puts in its feedback, instead of the position capture confirms, the WAL end of
        a keepalive when everything read so far was confirmed: a position that is safe (nothing
        of ours before it is missing) but that the manifest never saw. So the slot may be past
        the manifest's position, never past this ceiling.
        """
        with self.transaction() as db:
            db.execute(
                "insert into capture_ceiling values (?, ?) on conflict (slot) do update"
                " set lsn = max(lsn, excluded.lsn)",
                (slot, lsn),
            )

    def ceiling(self, slot: str) -> int | None:
        """How far the slot may have been confirmed (None: not recorded, e.g. a slot captured
        through by an earlier release)."""
        row = self._db.execute("select lsn from capture_ceiling where slot = ?", (slot,)).fetchone()
        return None if row is None else int(row[0])

    def known_slots(self) -> list[str]:
        """Every slot this manifest holds a position, a snapshot or a creation record for."""
        rows = self._db.execute(
            "select slot from capture_position union select slot from capture_slot_created"
            " union select slot from capture_snapshot union select slot from lake_files"
            " where slot is not null order by 1"
        ).fetchall()
        return [r[0] for r in rows]

    def capture_names(
        self, source: SourceConfig, *, create: bool = False
    ) -> tuple[str | None, str | None]:
        """The slot and publication capture uses: source.slot and source.publication, else the
        project's own name (capture_name: None before the first capture, unless ``create``)."""
        default = None
        if source.slot is None or source.publication is None:
            default = self.capture_name(create=create)
        return source.slot or default, source.publication or default

    def capture_name(self, *, create: bool = False) -> str | None:
        """The name of this project's own slot and publication, where riverbed.yaml names none.

        Chosen once, at the first capture, and kept here, so that moving the folder never
        changes it: ``riverbed_`` and 8 random hex digits, so two projects on one server (a
        copied riverbed.yaml) never share a slot. A project captured before names were chosen
        (its manifest knows a slot) keeps ``riverbed``, the one it has. None before the first
        capture (``create`` chooses it)."""
        row = self._db.execute(
            "select value from project_settings where name = 'capture_name'"
        ).fetchone()
        if row is not None:
            return str(row[0])
        legacy = LEGACY_CAPTURE_NAME if self.known_slots() else None
        if not create:
            return legacy
        with self.transaction() as db:
            db.execute(
                "insert or ignore into project_settings values ('capture_name', ?)",
                (legacy or f"riverbed_{uuid.uuid4().hex[:8]}",),
            )
            row = db.execute(
                "select value from project_settings where name = 'capture_name'"
            ).fetchone()
        return str(row[0])

    def forget_snapshots(self, slot: str, tables: Iterable[str]) -> None:
        """Forget that ``tables`` were copied for ``slot``: the next capture copies them anew."""
        with self.transaction() as db:
            db.executemany(
                "delete from capture_snapshot where slot = ? and table_name = ?",
                [(slot, table) for table in tables],
            )

    def forget_slot(self, slot: str) -> list[str]:
        """Drop everything captured through ``slot`` (a snapshot that must start over).

        Returns the paths whose files should be deleted from the lake.
        """
        with self.transaction() as db:
            paths = [
                r[0] for r in db.execute("select path from lake_files where slot = ?", (slot,))
            ]
            db.execute("delete from lake_files where slot = ?", (slot,))
            db.execute("delete from capture_snapshot where slot = ?", (slot,))
            db.execute("delete from capture_position where slot = ?", (slot,))
            db.execute("delete from capture_slot_created where slot = ?", (slot,))
            db.execute("delete from capture_slot_identity where slot = ?", (slot,))
            db.execute("delete from capture_ceiling where slot = ?", (slot,))
        return paths

    # --- files and schemas --------------------------------------------------------------------

    def files(self, stage: str, table: str | None = None) -> list[LakeFile]:
        """Visible files of a stage (optionally one table), in LSN order."""
        query = (
            "select path, stage, table_name, rows, bytes, min_lsn, max_lsn, schema_version,"
            " full_load, min_commit_ts, max_commit_ts from lake_files where stage = ?"
        )
        params: tuple[Any, ...] = (stage,)
        if table is not None:
            query += " and table_name = ?"
            params += (table,)
        query += " order by min_lsn, path"
        return [
            LakeFile(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10])
            for r in self._db.execute(query, params)
        ]

    def schema_versions(self, table: str) -> list[SchemaVersion]:
        rows = self._db.execute(
            "select version, columns, first_lsn from table_schemas where table_name = ?"
            " order by version",
            (table,),
        ).fetchall()
        return [SchemaVersion(table, r[0], json.loads(r[1]), r[2]) for r in rows]

    def summary(self, stage: str) -> dict[str, dict[str, Any]]:
        """Per table: files, rows, newest schema version, when its newest file landed."""
        rows = self._db.execute(
            "select table_name, count(*), sum(rows), max(schema_version), max(created_at),"
            " coalesce(sum(case when full_load then rows end), 0)"
            " from lake_files where stage = ? group by 1 order by 1",
            (stage,),
        ).fetchall()
        return {
            r[0]: {
                "files": r[1],
                "rows": r[2],
                "schema_version": r[3],
                "landed_at": r[4],
                "snapshot_rows": r[5],
            }
            for r in rows
        }

    def tables(self, stage: str) -> list[str]:
        return [
            r[0]
            for r in self._db.execute(
                "select distinct table_name from lake_files where stage = ? order by 1", (stage,)
            )
        ]

    # --- metrics ----------------------------------------------------------------------------

    def record_metrics(
        self,
        values: dict[str, float],
        labels: dict[str, str] | None = None,
        ts: float | None = None,
    ) -> None:
        now = time.time() if ts is None else ts
        encoded = json.dumps(labels or {}, sort_keys=True)
        with self.transaction() as db:
            db.executemany(
                "insert into metrics values (?, ?, ?, ?)",
                [(name, encoded, float(value), now) for name, value in values.items()],
            )

    def latest_metrics(self, prefix: str = "") -> dict[str, tuple[float, float]]:
        """The newest value of each metric whose name starts with ``prefix``: name -> (value, ts)."""
        rows = self._db.execute(
            "select name, value, max(ts) from metrics where name like ? group by name",
            (prefix + "%",),
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}


def open_manifest(project: Project) -> Manifest:
    """The project's state store (where the manifest lives)."""
    state = project.config.state
    if state.engine != "sqlite":
        raise RiverbedError("state.engine postgres is not supported yet; use state.engine: sqlite")
    path = project.path(state.path)
    try:
        return Manifest(path)
    except (OSError, sqlite3.Error) as exc:
        full = _disk_full(exc, path)
        if full is not None:
            raise full from exc
        # a folder that cannot be created or written is a config mistake, not a crash
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise RiverbedError(
            f"state.path = {state.path}: cannot open the state store ({reason}); its folder "
            f"{path.parent} must exist (or be creatable) and be writable: fix state.path in "
            "riverbed.yaml"
        ) from exc


class StateStoreFull(RiverbedError):
    """The state store's disk is full: transient, a follower waits for room."""

    error_class = ErrorClass.TRANSIENT


def _disk_full(exc: BaseException, path: Path) -> StateStoreFull | None:
    """The error to raise for ``exc`` if it means the state store's disk is full, else None.
    SQLite says "database or disk is full", or, when the WAL cannot even be created, only
    "disk I/O error": then the free space decides."""
    text = first_line(exc)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = (
        getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        or "database or disk is full" in text
        or ("disk I/O error" in text and free is not None and free < 1_000_000)
    )
    if not full:
        return None
    room = f" ({free / 1e6:,.1f} MB free)" if free is not None else ""
    return StateStoreFull(
        f"state.path {path}: no space left on the device{room}; free space there or move "
        "state.path to a larger disk"
    )


@contextmanager
def _translating(path: Path) -> Iterator[None]:
    """A write to the state store that failed because its disk is full or read-only, or its
    file cannot be written, as one RiverbedError naming state.path and the fix."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        full = _disk_full(exc, path)
        if full is not None:
            raise full from exc
        text = first_line(exc)
        if "readonly" in text or "unable to open" in text or "disk I/O error" in text:
            raise RiverbedError(
                f"state.path {path}: cannot write the state store ({text}); the file and its "
                "folder must be writable, on a file system mounted read-write"
            ) from exc
        raise
