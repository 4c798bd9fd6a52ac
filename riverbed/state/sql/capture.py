"""How far capture got, per replication slot, and what it knows of its slots.

The position is the end LSN up to which every committed change is in the lake: committed with
the files of each flush (commit), confirmed to the slot only after. The slot's identity and
ceiling let capture tell its own slot from one dropped and created again, or taken over by
another project (riverbed.capture.slot.check_slot_is_ours).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from riverbed.config.source import SourceConfig
from riverbed.state.records import LakeFile, SchemaVersion, SnapshotDone
from riverbed.state.sql.database import Database, upsert
from riverbed.state.sql.lake_files import SQLLakeFiles

SCHEMA = """
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
"""

# the slot and publication name of every project before names of their own were chosen
LEGACY_CAPTURE_NAME = "riverbed"


def _higher(table: str) -> str:
    """The LSN of an upsert into ``table`` that never goes back (SQLite's max(a, b) is
    PostgreSQL's greatest(a, b))."""
    return f"case when excluded.lsn > {table}.lsn then excluded.lsn else {table}.lsn end"


class SQLCaptureState:
    def __init__(self, db: Database, lake: SQLLakeFiles):
        self._db = db
        self._lake = lake

    def commit(
        self,
        slot: str,
        files: Iterable[LakeFile],
        position: int | None,
        schemas: Iterable[SchemaVersion] = (),
        snapshots: Iterable[SnapshotDone] = (),
    ) -> None:
        """Make ``files`` visible and move the slot's position, atomically, with the schema
        versions they introduce and the snapshot copies finished with them."""
        now = time.time()
        with self._db.write() as db:
            self._lake.add_schemas(schemas)
            self._lake.add(files, slot)
            db.executemany(
                upsert(
                    "capture_snapshot",
                    ("slot", "table_name", "consistent_lsn", "rows", "done_at"),
                    ("slot", "table_name"),
                ),
                [(slot, s.table, s.consistent_lsn, s.rows, now) for s in snapshots],
            )
            if position is not None:
                db.execute(
                    "insert into capture_position (slot, lsn, updated_at) values (?, ?, ?)"
                    " on conflict (slot) do update"
                    f" set lsn = {_higher('capture_position')}, updated_at = excluded.updated_at",
                    (slot, position, now),
                )

    def position(self, slot: str) -> int | None:
        """The end LSN up to which every committed change is in the lake, or None."""
        return self._one_int("select lsn from capture_position where slot = ?", slot)

    def snapshot_tables(self, slot: str) -> dict[str, int]:
        """Tables whose snapshot copy is complete for ``slot``: table -> consistent LSN."""
        rows = self._db.rows(
            "select table_name, consistent_lsn from capture_snapshot where slot = ?", (slot,)
        )
        return {r[0]: int(r[1]) for r in rows}

    def creating_slot(self, slot: str) -> None:
        """Record, BEFORE creating it, that this project creates replication slot ``slot``.

        Recorded first so that a crash while the slot is created or during the first snapshot
        (slot there, no position) is known to be ours and is started over; a slot without the
        record belongs to someone else and is never dropped unasked.
        """
        with self._db.write() as db:
            db.execute(
                upsert("capture_slot_created", ("slot", "created_at"), ("slot",)),
                (slot, time.time()),
            )

    def created_slot(self, slot: str) -> bool:
        """Whether this project created (or was creating) replication slot ``slot``."""
        row = self._db.row("select 1 from capture_slot_created where slot = ?", (slot,))
        return row is not None

    def slot_created(self, slot: str, consistent_lsn: int) -> None:
        """Record the consistent point of the slot this project just created: its identity.

        Until this project confirms a position to it, a slot stays at its consistent point, so a
        slot of that name elsewhere (dropped and created again by someone else) is told apart.
        """
        with self._db.write() as db:
            db.execute(
                upsert(
                    "capture_slot_identity", ("slot", "consistent_lsn", "created_at"), ("slot",)
                ),
                (slot, consistent_lsn, time.time()),
            )
            # nothing confirmed it further yet
            db.execute(
                upsert("capture_ceiling", ("slot", "lsn"), ("slot",)), (slot, consistent_lsn)
            )

    def slot_identity(self, slot: str) -> int | None:
        """The consistent point of ``slot`` when this project created it (None: not recorded,
        e.g. a slot created by an earlier release, or a crash right after creating it)."""
        return self._one_int(
            "select consistent_lsn from capture_slot_identity where slot = ?", slot
        )

    def raise_ceiling(self, slot: str, lsn: int) -> None:
        """Record that the slot may be confirmed up to ``lsn``, BEFORE it can be.

        psycopg2 puts in its feedback, instead of the position capture confirms, the WAL end of
        a keepalive when everything read so far was confirmed: a position that is safe (nothing
        of ours before it is missing) but that the manifest never saw. So the slot may be past
        the manifest's position, never past this ceiling.
        """
        with self._db.write() as db:
            db.execute(
                "insert into capture_ceiling (slot, lsn) values (?, ?) on conflict (slot)"
                f" do update set lsn = {_higher('capture_ceiling')}",
                (slot, lsn),
            )

    def ceiling(self, slot: str) -> int | None:
        """How far the slot may have been confirmed (None: not recorded, e.g. a slot captured
        through by an earlier release)."""
        return self._one_int("select lsn from capture_ceiling where slot = ?", slot)

    def known_slots(self) -> list[str]:
        """Every slot this project holds a position, a snapshot, a creation record or files
        for."""
        rows = self._db.rows(
            "select slot from capture_position union select slot from capture_slot_created"
            " union select slot from capture_snapshot union select slot from lake_files"
            " where slot is not null order by 1"
        )
        return [r[0] for r in rows]

    def names(self, source: SourceConfig, *, create: bool = False) -> tuple[str | None, str | None]:
        """The slot and publication capture uses: source.slot and source.publication, else the
        project's own name (name(): None before the first capture, unless ``create``)."""
        default = None
        if source.slot is None or source.publication is None:
            default = self.name(create=create)
        return source.slot or default, source.publication or default

    def name(self, *, create: bool = False) -> str | None:
        """The name of this project's own slot and publication, where riverbed.yaml names none.

        Chosen once, at the first capture, and kept here, so that moving the folder never
        changes it: ``riverbed_`` and 8 random hex digits, so two projects on one server (a
        copied riverbed.yaml) never share a slot. A project captured before names were chosen
        (its manifest knows a slot) keeps ``riverbed``, the one it has. None before the first
        capture (``create`` chooses it)."""
        query = "select value from project_settings where name = 'capture_name'"
        row = self._db.row(query)
        if row is not None:
            return str(row[0])
        legacy = LEGACY_CAPTURE_NAME if self.known_slots() else None
        if not create:
            return legacy
        with self._db.write() as db:
            db.execute(
                "insert into project_settings (name, value) values ('capture_name', ?)"
                " on conflict do nothing",
                (legacy or f"riverbed_{uuid.uuid4().hex[:8]}",),
            )
            row = db.execute(query).fetchone()
        return str(row[0])

    def forget_snapshots(self, slot: str, tables: Iterable[str]) -> None:
        """Forget that ``tables`` were copied for ``slot``: the next capture copies them anew."""
        with self._db.write() as db:
            db.executemany(
                "delete from capture_snapshot where slot = ? and table_name = ?",
                [(slot, table) for table in tables],
            )

    def forget_slot(self, slot: str) -> list[str]:
        """Drop everything captured through ``slot`` (a snapshot that must start over).

        Returns the paths whose files should be deleted from the lake.
        """
        with self._db.write() as db:
            paths = [
                r[0] for r in db.execute("select path from lake_files where slot = ?", (slot,))
            ]
            self._lake.remove(paths)
            for table in (
                "capture_snapshot",
                "capture_position",
                "capture_slot_created",
                "capture_slot_identity",
                "capture_ceiling",
            ):
                db.execute(f"delete from {table} where slot = ?", (slot,))
        return paths

    def _one_int(self, query: str, slot: str) -> int | None:
        row = self._db.row(query, (slot,))
        return None if row is None else int(row[0])
