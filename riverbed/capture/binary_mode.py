"""When the stream asks pgoutput for values in binary form, and when it keeps to text.

pgoutput's ``binary`` option (PostgreSQL 14+) is one switch for the whole stream. With it, the
server sends every column whose type has a binary send function in that form, deciding type by
type, and the rest as text (a user-defined type without a send function). Riverbed reads the
binary form of the common built-in types (``pgbinary.BINARY_TYPES``) and of enums (their label,
exactly their text), and nothing else: arrays, interval, inet, money, composites, domains and
extension types have binary forms it does not decode. So a stream is binary only when every
column of every captured table is of a type it reads; otherwise it stays text, as it always
was (and ``capture.binary: false`` keeps every stream text).

The check at the start reads the catalog as it is now, but the stream replays WAL written
before, and tables change while it runs: every Relation message is checked again, and a
captured table with a column Riverbed cannot read in binary stops the stream before any of
that table's rows are read (:class:`TextModeNeeded`). The runner starts it again in text mode
from the lake's position; what the stopped stream had not made durable is sent again, as after
any reconnect, so nothing is lost or doubled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from riverbed.capture.pgoutput import Relation
from riverbed.lake.pgbinary import BINARY_TYPES

BINARY_MIN_SERVER = 140_000  # server_version_num of the first PostgreSQL with the option


class TextModeNeeded(Exception):
    """A captured table has a column whose binary form Riverbed does not read."""

    def __init__(self, table: str, column: str, type_oid: int):
        self.table, self.column, self.type_oid = table, column, type_oid
        self.stats: Any = None  # the stopped stream's StreamStats, set by the runner
        super().__init__(
            f"{table}.{column} (type OID {type_oid}) has a binary form Riverbed does not "
            "read: streaming in text mode"
        )


def text_form_types(conn: Any, oids: Iterable[int]) -> set[int]:
    """Those of ``oids`` that arrive in their text form in binary mode: enums (their binary
    form is the label) and types without a binary send function."""
    wanted = sorted(set(oids))
    if not wanted:
        return set()
    rows = conn.execute(
        "select oid::int8 from pg_type where oid = any(%s::oid[])"
        " and (typtype = 'e' or typsend = 0)",
        (wanted,),
    ).fetchall()
    return {int(r[0]) for r in rows}


def unreadable(oids: Iterable[int], text_form: set[int]) -> list[int]:
    """The type OIDs among ``oids`` whose binary form Riverbed does not read."""
    return [o for o in oids if o not in BINARY_TYPES and o not in text_form]


def binary_capable(conn: Any, schema: str, tables: list[str]) -> bool:
    """Whether the server has the option and every column of ``tables`` (in ``schema``) is of
    a type whose binary form Riverbed reads."""
    if conn.info.server_version < BINARY_MIN_SERVER:
        return False
    rows = conn.execute(
        "select distinct a.atttypid::int8 from pg_attribute a"
        " where a.attrelid in (select to_regclass(quote_ident(%s) || '.' || quote_ident(t))"
        " from unnest(%s::text[]) t) and a.attnum > 0 and not a.attisdropped",
        (schema, tables),
    ).fetchall()
    oids = [int(r[0]) for r in rows]
    others = [o for o in oids if o not in BINARY_TYPES]
    return not unreadable(others, text_form_types(conn, others))


def check_relation(
    relation: Relation, text_form: dict[int, bool], ask: Callable[[list[int]], set[int]]
) -> None:
    """Raise TextModeNeeded for a column of ``relation`` whose binary form Riverbed does not
    read. ``text_form``: what ``ask`` (text_form_types over the source) said of each type OID
    so far, filled in as new ones appear."""
    unknown = [
        c.type_oid
        for c in relation.columns
        if c.type_oid not in BINARY_TYPES and c.type_oid not in text_form
    ]
    if unknown:
        answer = ask(unknown)
        text_form.update((o, o in answer) for o in unknown)
    for column in relation.columns:
        if column.type_oid not in BINARY_TYPES and not text_form[column.type_oid]:
            raise TextModeNeeded(relation.qualified, column.name, column.type_oid)
