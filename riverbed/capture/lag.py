"""How far the lake is behind the source, measured from the source.

A running capture records its own lag at each flush (riverbed.capture.runner). A capture that
is not running records nothing, and its last sample says nothing about the changes piling up
since; so whatever evaluates alarms or serves metrics measures it here when no process holds
the slot:

- ``lag_seconds``: now minus the commit time of the oldest transaction with changes of a
  captured table that the server has committed and the lake does not hold yet. PostgreSQL
  keeps commit times only with ``track_commit_timestamp`` (off by default), so it is read from
  the slot itself: ``pg_logical_slot_peek_binary_changes`` decodes what the slot still holds
  (from its restart position) without consuming anything, and the first such transaction's
  Begin message carries its commit time. Whole transactions, at most PEEK_CHANGES changes of
  them plus the rest of the last one, within PEEK_TIMEOUT; a server-side cursor reads them only
  up to the first one that counts.
- ``lag_bytes``: the server's current WAL position minus the position the lake made visible;
  0 when nothing captured is pending, however far the WAL moved (other databases, heartbeats,
  tables not captured: none of it is behind).

Peeking acquires the slot for its duration; a capture starting just then finds it busy and
waits for it (slot.wait_while_peeked). While a capture holds the slot, nothing is measured
here (None): its own samples are fresh.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from riverbed.capture import pgoutput
from riverbed.capture.slot import SlotState, slot_is_past
from riverbed.config.loader import Project
from riverbed.errors import RiverbedError, SlotReplaced
from riverbed.lake.positions import parse_lsn
from riverbed.state import StateStore
from riverbed.state.records import Lag

PEEK_CHANGES = 1000  # changes decoded at most (plus the rest of the transaction they end in)
PEEK_TIMEOUT = "10s"  # a slot far behind takes long to decode; the measurement gives up then
_CHANGES = (73, 85, 68, 84)  # I, U, D, T


def measure_lag(
    project: Project, manifest: StateStore, now: float | None = None
) -> tuple[Lag | None, bool | None]:
    """(the capture lag measured from the source, whether the source answered). The lag is None
    when it cannot be measured here: a capture holds the slot (its own samples are fresh), there
    is no slot or no position yet, or the source cannot be reached or decoded in time. Whether
    it answered is False when it could not be reached (or the measurement failed), so no lag
    stored earlier is current; None when nothing was asked.
    Raises SlotReplaced for a slot another project took over: no lag is measured through it."""
    from riverbed.capture.runner import captured_tables  # heavy: only when measuring
    from riverbed.source.connection import source_for

    cfg = project.config.source
    slot, publication = manifest.capture.names(cfg)
    if slot is None or publication is None:
        return None, None  # never captured: nothing to be behind
    visible = manifest.capture.position(slot)
    if visible is None:
        return None, None
    try:
        with source_for(project).connect(autocommit=True) as conn:
            row = conn.execute(
                "select active, pg_current_wal_lsn()::text, confirmed_flush_lsn::text"
                " from pg_replication_slots"
                " where slot_name = %s and database = current_database()",
                (slot,),
            ).fetchone()
            if row is None or row[0]:
                return None, True
            state = SlotState(True, None, parse_lsn(row[2]) if row[2] else None, None)
            if slot_is_past(state, visible, manifest.capture.ceiling(slot)):
                raise SlotReplaced(f"slot {slot} was confirmed past this lake's position")
            current = parse_lsn(row[1])
            captured = frozenset(f"{cfg.schema_name}.{t}" for t in captured_tables(project, conn))
            oldest = first_pending_commit(conn, slot, publication, captured, visible)
    except SlotReplaced:
        raise
    except (RiverbedError, psycopg.Error):
        return None, False  # a source that is down, or a capture that took the slot meanwhile
    if oldest is None:
        return Lag(0, 0.0), True
    at = time.time() if now is None else now
    return Lag(max(0, current - visible), max(0.0, at - oldest / 1e6)), True


def first_pending_commit(
    conn: psycopg.Connection[Any],
    slot: str,
    publication: str,
    captured: frozenset[str],
    visible: int,
) -> int | None:
    """Commit time (Unix microseconds) of the first transaction the slot holds with a change
    to a ``captured`` table ("schema.table") and not in the lake (its commit LSN at or after
    ``visible``, the stream's own rule); None when there is none."""
    ours: set[int] = set()
    begin: pgoutput.Begin | None = None
    first_seen: int | None = None  # the first pending transaction of any table
    returned = 0
    with conn.transaction():
        conn.execute(f"set local statement_timeout = '{PEEK_TIMEOUT}'")
        with conn.cursor(name="riverbed_lag_peek") as cursor:
            cursor.itersize = 100
            cursor.execute(
                "select data from pg_logical_slot_peek_binary_changes(%s, null, %s,"
                " 'proto_version', '1', 'publication_names', %s)",
                (slot, PEEK_CHANGES, publication),
            )
            for (data,) in cursor:
                returned += 1
                buf = bytes(data)
                kind = buf[0]
                if kind == 66:  # B
                    parsed = pgoutput.parse_begin(buf)
                    begin = parsed if parsed.final_lsn >= visible else None
                    if begin is not None and first_seen is None:
                        first_seen = begin.commit_ts_us
                elif kind == 67:  # C
                    begin = None
                elif kind == 82:  # R
                    relation = pgoutput.parse_relation(buf)
                    if relation.qualified in captured:
                        ours.add(relation.relid)
                elif begin is not None and kind in _CHANGES:
                    relids = (
                        pgoutput.parse_truncate(buf).relids
                        if kind == 84
                        else (int.from_bytes(buf[1:5], "big"),)
                    )
                    if ours.intersection(relids):
                        return begin.commit_ts_us
    if returned >= PEEK_CHANGES:
        # cut off before a change of ours showed: the oldest pending one is no older than the
        # first transaction seen (a publication shared with tables not captured)
        return first_seen
    return None


def record_source_lag(project: Project, manifest: StateStore, now: float | None = None) -> None:
    """Measure the lag from the source (measure_lag) and, when it could be measured, record it
    as the gauges capture_lag_bytes and capture_lag_seconds, as a capture would; and whether
    the source answered, as the gauge source_up (1 or 0: with 0 newer than the lag, /metrics
    leaves the lag out, as no longer current)."""
    at = time.time() if now is None else now
    try:
        lag, up = measure_lag(project, manifest, at)
    except SlotReplaced:
        lag, up = None, True  # answered; a capture says what to do (status too)
    slot = manifest.capture.names(project.config.source)[0]
    if up is not None:
        manifest.metrics.record({"source_up": 1.0 if up else 0.0}, {}, at)
    if lag is not None and slot is not None:
        manifest.metrics.record(
            {"capture_lag_bytes": lag.bytes, "capture_lag_seconds": lag.seconds},
            {"slot": slot},
            at,
        )
