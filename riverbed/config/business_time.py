"""Which column dates a table's rows, as `riverbed init --from-source` proposes it: a fact's
``event_time`` and a dimension's ``effective_from`` (riverbed.config.tables), each with the
comment riverbed.config.writer prints beside it. Names are all the catalog offers, so the
choice is by name and type; the comment says why, lists the columns passed over and how to
change it, since a name can mislead.

* **A fact's event_time**: a date or timestamp column that says when the event happened.
  Columns named like a later time or a change (updated, modified, due, returned, closed ...)
  are never picked: they move after the event, so the event would move with them; unless the
  table is named after that event (returned_at of a returns table). Among the rest, a name
  with an event word (created, ordered, loaned, issued, occurred ...) or the table's own word
  beats a plain time suffix (_at, _on, _date, _time, _ts), NOT NULL beats nullable, a column
  of a foreign key loses a point (a fine's loaned_at is its loan's time, not the fine's), and
  the earlier column wins a tie. With no candidate left, no key is written: the source commit time
  dates the events, and the comment says how to set one.
* **A dimension's effective_from**: a date or timestamp column named like the time of the
  row's last change (updated_at, modified_at, changed_at, last_modified ...), so that versions
  are valid from when the change happened rather than when capture saw it. It is opt-in in
  the config, so the comment says how to remove it; it only holds if the application sets the
  column on every change. A dimension without such a column keeps the commit time.

The picked column is the table's business time for riverbed.config.proposal's rules too: a
nullable one gets a ``not_null`` warn rule, since a NULL falls back to the commit time.
"""

from __future__ import annotations

from dataclasses import dataclass

from riverbed.source.catalog import Column, Table


@dataclass(frozen=True)
class TimePick:
    setting: str  # the table's config key: event_time (facts) or effective_from (dimensions)
    column: str | None  # None: rows are dated by their source commit time
    comment: str  # why, what else there was, how to change it


# in a time column's name: when the event happened, or something that happened to it later
_EVENT_WORDS = (
    "created", "ordered", "placed", "occurred", "event", "issued", "booked", "loaned",
    "requested", "started", "opened", "submitted", "paid", "sent", "recorded",
)  # fmt: skip
_LATER_WORDS = (
    "updated", "modified", "changed", "deleted", "due", "returned", "expire", "ended",
    "closed", "cancel", "finished", "completed", "synced",
)  # fmt: skip
# in a dimension's column: the time of the row's last change
_CHANGE_WORDS = ("updated", "modified", "changed", "valid_from", "effective_from")
_TIME_SUFFIXES = ("_at", "_on", "_date", "_time", "_ts")


def event_time(table: Table) -> TimePick:
    candidates = [c for c in table.columns if c.is_temporal]
    later = [c.name for c in candidates if _says(c, _LATER_WORDS) and not _names_table(c, table)]
    eligible = [c for c in candidates if c.name not in later]
    if not eligible:
        found = (
            f"its date and timestamp columns ({', '.join(later)}) are named like a later time "
            "or a change, not when the event happened"
            if candidates
            else "it has no date or timestamp column"
        )
        return TimePick(
            "event_time",
            None,
            f"event_time: not set, {found}, so each event is dated by its source commit time "
            "(event_ts, date_key and the dimension versions it keys into). To date events by a "
            "column: event_time: COLUMN, a date or timestamp (or a transform's output).",
        )
    # a column of a foreign key is the parent's time (a fine's loaned_at), not this event's
    inherited = {c for fk in table.foreign_keys for c in fk.columns}
    best = max(
        eligible,
        key=lambda c: (_event_score(c, table) - (c.name in inherited), -eligible.index(c)),
    )
    if _says(best, _EVENT_WORDS) or _names_table(best, table):
        why = "its name says when the event happened"
    else:
        why = "the best-named date or timestamp column left (check it is when the event happened)"
    if best.name in inherited:
        why += "; it is a column of a foreign key, so it may be the parent row's time"
    others = [c.name for c in eligible if c is not best]
    if later:
        others.append(f"{', '.join(later)} (named like a later time or a change)")
    listed = f" Other date and timestamp columns: {'; '.join(others)}." if others else ""
    return TimePick(
        "event_time",
        best.name,
        f"event_time: {best.name} dates each event (its event_ts, date_key, and the dimension "
        f"versions it keys into): {why}.{listed}{_null_falls_back(best)} Remove the line to "
        "date events by their source commit time.",
    )


def effective_from(table: Table) -> TimePick:
    changed = [c for c in table.columns if c.is_temporal and _says(c, _CHANGE_WORDS)]
    if not changed:
        return TimePick(
            "effective_from",
            None,
            "versions are valid from the source commit time of their change (no updated_at-like "
            "column; effective_from: COLUMN dates them by a business time instead)",
        )
    best = max(changed, key=lambda c: (_suffixed(c) + c.not_null, -changed.index(c)))
    others = [c.name for c in changed if c is not best]
    rest = f" (also named like one: {', '.join(others)})" if others else ""
    return TimePick(
        "effective_from",
        best.name,
        f"effective_from: a version is valid from its row's {best.name}, the time of the change "
        f"as the source records it{rest}, not from when capture saw it; a change later in "
        "source order but with an earlier time still wins, leaving the version before it "
        f"zero-length.{_null_falls_back(best)} It holds only if the application sets "
        f"{best.name} on every change: remove the line to date versions by the source commit "
        "time.",
    )


def _null_falls_back(column: Column) -> str:
    if column.not_null:
        return ""
    return f" A null {column.name} falls back to the commit time (a not_null rule warns of one)."


def _event_score(column: Column, table: Table) -> int:
    event = _says(column, _EVENT_WORDS) or _names_table(column, table)
    return _suffixed(column) + (2 if event else 0) + column.not_null


def _names_table(column: Column, table: Table) -> bool:
    """Whether the column's first word is the table's (returned_at of returns, cancelled_at of
    cancellations): the table records that event, so the time is the event's own."""
    word = column.name.lower().split("_")[0]
    return len(word) >= 4 and table.name.lower().startswith(word[:4])


def _says(column: Column, words: tuple[str, ...]) -> bool:
    name = column.name.lower()
    return any(word in name for word in words)


def _suffixed(column: Column) -> int:
    return 1 if column.name.lower().endswith(_TIME_SUFFIXES) else 0
