"""The publication and replication slot Riverbed creates and owns on the source."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from riverbed.errors import RiverbedError
from riverbed.lake.positions import format_lsn, parse_lsn


class CaptureSetupError(RiverbedError):
    """The source is not ready for capture (tables missing, wal_level, slot in use)."""


@dataclass(frozen=True)
class SlotState:
    exists: bool
    active_pid: int | None
    confirmed_lsn: int | None
    plugin: str | None
    # why the server invalidated it (wal_status 'lost': max_slot_wal_keep_size let it remove
    # WAL the slot still needed), None while it can stream
    invalidated: str | None = None


def check_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Refuse a source.schema the source does not have (before looking for its tables)."""
    if not conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone():
        demo = " (`riverbed shop seed` creates the demo's)" if schema == "shop" else ""
        raise CaptureSetupError(
            f"source.schema: schema {schema} does not exist in the source database{demo}; set "
            "source.schema in riverbed.yaml to the schema that holds the tables to capture"
        )


def check_source(
    conn: psycopg.Connection[Any], schema: str, tables: list[str], *, listed: bool
) -> None:
    """Fail early, naming the fix, when the source cannot be captured from. ``listed``: the
    tables come from the config's ``tables:`` (else they are every table of the schema)."""
    row = conn.execute("show wal_level").fetchone()
    if row is None or row[0] != "logical":
        raise CaptureSetupError(
            f"the source has wal_level={row[0] if row else '?'}; capture needs wal_level=logical "
            "(set it in postgresql.conf and restart the server; `riverbed source up` does this "
            "for the embedded one)"
        )
    present = {
        r[0]
        for r in conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relkind in ('r', 'p')",
            (schema,),
        )
    }
    missing = [t for t in tables if t not in present]
    if missing:
        raise CaptureSetupError(
            f"tables.{missing[0]}: {schema}.{missing[0]} does not exist in the source; create it "
            "(for the demo: `riverbed shop seed`) or remove it from riverbed.yaml"
            + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else "")
        )
    check_partitions(conn, schema, tables)
    check_replica_identity(conn, schema, tables, listed=listed)


def check_partitions(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> None:
    """Refuse a partition listed beside its partitioned table: the table's snapshot already
    copies the partition's rows and its changes arrive as the table's, so they would land twice.
    """
    row = conn.execute(
        "select c.relname, a.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " cross join lateral pg_partition_ancestors(c.oid) p join pg_class a on a.oid = p.relid"
        " where n.nspname = %s and c.relname = any(%s) and a.oid <> c.oid"
        " and a.relnamespace = n.oid and a.relname = any(%s) order by 1 limit 1",
        (schema, tables, tables),
    ).fetchone()
    if row is not None:
        raise CaptureSetupError(
            f"tables.{row[0]}: {schema}.{row[0]} is a partition of {schema}.{row[1]}, which is "
            f"captured whole (its rows and changes include the partition's); remove "
            f"tables.{row[0]} from riverbed.yaml"
        )


def check_replica_identity(
    conn: psycopg.Connection[Any], schema: str, tables: list[str], *, listed: bool
) -> None:
    """Refuse a table the publication would break: once a table without a replica identity is
    in a publication that publishes updates and deletes, PostgreSQL fails the SOURCE
    APPLICATION's UPDATE and DELETE on it. A primary key, REPLICA IDENTITY FULL and USING INDEX
    (an index that still exists) are identities. A partitioned table's rows live in its leaf
    partitions, where PostgreSQL checks the identity, so those are checked as well."""
    rows = conn.execute(
        "select t.relname, cn.nspname || '.' || c.relname, c.relreplident,"
        " exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary),"
        " exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisreplident)"
        " from pg_class t join pg_namespace n on n.oid = t.relnamespace"
        # pg_partition_tree lists nothing for a table that is not partitioned
        " join pg_class c on c.oid = t.oid"
        " or c.oid in (select relid from pg_partition_tree(t.oid) where isleaf)"
        " join pg_namespace cn on cn.oid = c.relnamespace"
        " where n.nspname = %s and t.relname = any(%s) and c.relkind = 'r'"
        " order by t.relname, c.oid = t.oid desc, 2",
        (schema, tables),
    ).fetchall()
    for table, relation, identity, has_key, has_index in rows:
        if identity == "f" or (identity == "d" and has_key) or (identity == "i" and has_index):
            continue
        what = (
            "has no primary key"
            if identity == "d"
            else f"has REPLICA IDENTITY {_IDENTITY[identity]}"
        )
        where = "" if relation == f"{schema}.{table}" else f" (a partition of {schema}.{table})"
        leave_out = (
            f"remove tables.{table} from riverbed.yaml"
            if listed
            else "list only the tables to capture under tables: in riverbed.yaml"
        )
        raise CaptureSetupError(
            f"{relation}{where} {what}, so publishing it would make the source's UPDATE and "
            f"DELETE on it fail; add a primary key, or run `ALTER TABLE {relation} REPLICA "
            f"IDENTITY FULL`, or leave it out of capture ({leave_out})"
        )


_IDENTITY = {"n": "NOTHING", "i": "USING INDEX of a dropped index", "d": "DEFAULT"}


def ensure_publication(
    conn: psycopg.Connection[Any], publication: str, schema: str, tables: list[str]
) -> list[str]:
    """Create the publication for ``tables``, or add those it lacks. Returns the tables added.

    Tables are only ever added, never removed: a table in the publication that capture does
    not capture (another schema, one left out of ``tables:``, one captured before) may be
    another consumer's, and removing it would silently end that consumer's feed. The stream
    skips the changes of every table it does not capture (ChangeStream), so they never reach
    the lake; what they cost is only their decoding on the server.

    It publishes a partitioned table's changes as the table itself (publish_via_partition_root),
    which is how capture names and copies it (runner.captured_tables). An existing publication
    lacking those options gets them only if it publishes nothing but captured tables; a shared
    one is refused (_refuse_if_shared), as is one with a column list or a row filter on a
    captured table (check_publication_filters).

    A publication FOR ALL TABLES is refused, neither used nor altered: capture never creates
    one, so it is someone else's, whose consumers rely on its options (capture would have to
    change them for every table of the database), and tables cannot be added to it.
    """
    exists = conn.execute(
        "select puballtables from pg_publication where pubname = %s", (publication,)
    ).fetchone()
    if exists and exists[0]:
        raise CaptureSetupError(
            f"publication {publication!r} is FOR ALL TABLES, which capture neither uses nor "
            "alters (another consumer may rely on it); set source.publication to a name of its "
            "own, and capture creates that publication for the captured tables"
        )
    if exists:
        check_publication_filters(conn, publication, schema, tables)
    options = _publication_options(conn)
    if not exists:
        conn.execute(
            sql.SQL("create publication {} for table {} with ({})").format(
                sql.Identifier(publication),
                sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables),
                _with(options),
            )
        )
        return list(tables)
    if not has_options(conn, publication, options):
        _refuse_if_shared(conn, publication, schema, tables, options)
        conn.execute(
            sql.SQL("alter publication {} set ({})").format(
                sql.Identifier(publication), _with(options)
            )
        )
    # listed as the roots of partitioned tables, now that it publishes through them
    added = unpublished(conn, publication, schema, tables)
    if added:
        conn.execute(
            sql.SQL("alter publication {} add table {}").format(
                sql.Identifier(publication),
                sql.SQL(", ").join(sql.Identifier(schema, t) for t in added),
            )
        )
    return added


def check_publication_filters(
    conn: psycopg.Connection[Any], publication: str, schema: str, tables: list[str]
) -> None:
    """Refuse an existing publication that publishes a captured table with a column list or a
    row filter: the stream would lack the other columns (NULL in the lake) and every change
    outside the filter, and nothing would say so. Such a publication is another consumer's
    (capture never creates one), so it is refused, not altered."""
    if server_version(conn) < 150000:
        return  # PostgreSQL 14 has neither column lists nor row filters
    found = conn.execute(
        "select c.relname, r.prattrs is not null, r.prqual is not null"
        " from pg_publication p join pg_publication_rel r on r.prpubid = p.oid"
        " join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace"
        " where p.pubname = %s and n.nspname = %s and c.relname = any(%s)"
        " and (r.prattrs is not null or r.prqual is not null) order by 1 limit 1",
        (publication, schema, tables),
    ).fetchone()
    if found is None:
        return
    table, has_columns, has_filter = found
    what = " and ".join(
        w for w, on in (("a column list", has_columns), ("a row filter", has_filter)) if on
    )
    raise CaptureSetupError(
        f"source.publication: publication {publication!r} publishes {schema}.{table} with "
        f"{what}, so capture would miss its changes and columns outside them; set "
        "source.publication to a name of its own, and capture creates that publication for "
        "the captured tables"
    )


# A publication option capture sets -> its pg_publication column and the value it sets there.
_OPTION_COLUMNS = {
    "publish_via_partition_root": ("pubviaroot", True),
    "publish_generated_columns": ("pubgencols", "s"),
}


def _publication_options(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The publication options capture needs on this server."""
    return publication_options(server_version(conn))


def publication_options(version: int) -> dict[str, str]:
    """The publication options capture needs on a server of ``version`` (170004 ...)."""
    options = {"publish_via_partition_root": "true"}
    if version >= 180000:
        # Stored generated columns are sent only when asked (PostgreSQL 18+). Older servers
        # have no such option and never send them: there a generated column is NULL in
        # streamed rows (the snapshot has its value) and the first streamed change of such a
        # table records a schema version without it.
        options["publish_generated_columns"] = "stored"
    return options


def server_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select current_setting('server_version_num')::int").fetchone()
    return int(row[0]) if row else 0


def _refuse_if_shared(
    conn: psycopg.Connection[Any],
    publication: str,
    schema: str,
    tables: list[str],
    options: dict[str, str],
) -> None:
    """Refuse to change the options of a publication that also publishes a table capture does
    not capture: its other consumers rely on them (publish_via_partition_root decides whether a
    partition's changes arrive as the partition or as its root). A publication of captured
    tables alone (one an earlier release created) is capture's own, and may be altered.

    A table listed in the publication is capture's only if it is a captured table; a table of
    a FOR TABLES IN SCHEMA schema also if it is a partition of a captured table (capture reads
    its rows through the root)."""
    captured = "(n.nspname = %(schema)s and c.relname = any(%(tables)s))"
    query = (
        "select n.nspname || '.' || c.relname, n.nspname = %(schema)s from pg_publication p"
        " join pg_publication_rel r on r.prpubid = p.oid join pg_class c on c.oid = r.prrelid"
        " join pg_namespace n on n.oid = c.relnamespace"
        f" where p.pubname = %(publication)s and not {captured}"
    )
    if server_version(conn) >= 150000:  # FOR TABLES IN SCHEMA is PostgreSQL 15+
        query += (
            " union all select n.nspname || '.' || c.relname, n.nspname = %(schema)s"
            " from pg_publication p"
            " join pg_publication_namespace pn on pn.pnpubid = p.oid"
            " join pg_class c on c.relnamespace = pn.pnnspid"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where p.pubname = %(publication)s and c.relkind in ('r', 'p')"
            " and c.relpersistence = 'p' and not " + captured + " and not (c.relispartition"
            " and exists (select 1 from pg_class rc join pg_namespace rn"
            " on rn.oid = rc.relnamespace where rc.oid = pg_partition_root(c.oid)"
            " and rn.nspname = %(schema)s and rc.relname = any(%(tables)s)))"
        )
    row = conn.execute(
        # another schema's table first: the plainest sign of another consumer
        "select * from (" + query + ") t order by 2, 1 limit 1",
        {"publication": publication, "schema": schema, "tables": tables},
    ).fetchone()
    if row is None:
        return
    needed = ", ".join(f"{name} = {value}" for name, value in options.items())
    raise CaptureSetupError(
        f"source.publication: publication {publication!r} is shared (it also publishes "
        f"{row[0]}, which capture does not capture) and lacks the options capture needs "
        f"({needed}), which capture will not change under its other consumers; set "
        "source.publication to a name of its own, and capture creates that publication with "
        "the options it needs"
    )


def has_options(conn: psycopg.Connection[Any], publication: str, options: dict[str, str]) -> bool:
    """Whether the publication already has ``options`` (so no ALTER is needed)."""
    checks = [
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(value))
        for column, value in (_OPTION_COLUMNS[name] for name in options)
    ]
    row = conn.execute(
        sql.SQL("select {} from pg_publication where pubname = %s").format(
            sql.SQL(" and ").join(checks)
        ),
        (publication,),
    ).fetchone()
    return bool(row and row[0])


def _with(options: dict[str, str]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.SQL(name), sql.Literal(value))
        for name, value in options.items()
    )


def slot_state(conn: psycopg.Connection[Any], slot: str) -> SlotState:
    row = conn.execute(
        "select active_pid, confirmed_flush_lsn::text, plugin, database = current_database(),"
        " wal_status, to_jsonb(s) ->> 'invalidation_reason'"
        " from pg_replication_slots s where slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return SlotState(False, None, None, None)
    if not row[3]:
        raise CaptureSetupError(
            f"replication slot {slot!r} belongs to another database; set source.slot to another name"
        )
    if row[2] != "pgoutput":
        raise CaptureSetupError(
            f"replication slot {slot!r} uses plugin {row[2]}, not pgoutput; drop it or set "
            "source.slot to another name"
        )
    # invalidation_reason is PostgreSQL 17's (to_jsonb: absent before); wal_status 13's
    invalidated = row[5] or ("wal_removed" if row[4] == "lost" else None)
    return SlotState(True, row[0], parse_lsn(row[1]) if row[1] else None, row[2], invalidated)


def wait_while_peeked(
    conn: psycopg.Connection[Any], slot: str, state: SlotState, timeout: float = 30.0
) -> SlotState:
    """The slot's state once no SQL session holds it: measuring the lag of a stopped capture
    (riverbed.capture.lag) peeks at the slot, which holds it for a moment. A replication
    connection (another capture) holding it is returned at once."""
    deadline = time.monotonic() + timeout
    while state.active_pid and time.monotonic() < deadline:
        row = conn.execute(
            "select backend_type from pg_stat_activity where pid = %s", (state.active_pid,)
        ).fetchone()
        if row is not None and row[0] == "walsender":
            break
        time.sleep(0.1)
        state = slot_state(conn, slot)
    return state


def check_slot_is_ours(state: SlotState, slot: str, position: int, ceiling: int | None) -> None:
    """Refuse to resume through a slot that is not the one the lake was captured through.

    The manifest commits a position before it is confirmed to the slot, and the stream records
    a ceiling (CaptureState.raise_ceiling) before each feedback, which may confirm a keepalive's
    WAL end instead, so the slot this project streams from is never past either. One that is
    was dropped and created again (its consistent point is where the WAL was then, past
    anything the stream saw), or another project reads from it and confirmed what it read:
    either way the changes committed after the lake's position never reach this lake, and
    resuming would report a complete lake that is not. Without a ceiling (a slot captured
    through by an earlier release, until its first feedback from this one) nothing is known.
    """
    if not state.exists:
        raise slot_gone(slot, position)
    if state.confirmed_lsn is not None and slot_is_past(state, position, ceiling):
        raise slot_replaced(slot, position, state.confirmed_lsn)


def slot_replaced(slot: str, position: int, confirmed: int) -> CaptureSetupError:
    """The error for a slot confirmed to ``confirmed``, past the lake's ``position``."""
    return CaptureSetupError(
        f"replication slot {slot!r} is not the one this lake was captured through: it is at "
        f"{format_lsn(confirmed)}, past the lake's position {format_lsn(position)} "
        "(it was dropped and created again, or another project reads from it: two project "
        "folders with the same source.slot?), so the changes committed between "
        f"{format_lsn(position)} and {format_lsn(confirmed)} are lost to this "
        "lake; give this project a slot and publication of its own (source.slot and "
        "source.publication in riverbed.yaml) and start over with "
        "`riverbed capture --once --resnapshot`"
    )


def slot_in_use(slot: str, pid: int) -> CaptureSetupError:
    return CaptureSetupError(
        f"replication slot {slot!r} is in use by server process {pid}; "
        "is another capture running against this source?"
    )


def slot_is_past(state: SlotState, position: int, ceiling: int | None) -> bool:
    """Whether the slot was confirmed past anything this project can have confirmed to it."""
    return (
        ceiling is not None
        and state.confirmed_lsn is not None
        and state.confirmed_lsn > max(position, ceiling)
    )


def slot_gone(slot: str, position: int) -> CaptureSetupError:
    return CaptureSetupError(
        f"replication slot {slot!r} no longer exists, but the lake holds changes up to "
        f"{format_lsn(position)} captured through it; changes since then cannot be "
        "recovered from the source. Start over with `riverbed capture --once --resnapshot`"
    )


def slot_invalidated(slot: str, position: int, reason: str) -> CaptureSetupError:
    return CaptureSetupError(
        f"replication slot {slot!r} was invalidated by the source ({reason}: the server "
        "removed WAL the slot still needed, past max_slot_wal_keep_size, while capture was "
        f"down or behind); the lake holds changes up to {format_lsn(position)}, and changes "
        "since then cannot be recovered from the source. Start over with `riverbed capture "
        "--once --resnapshot`"
    )


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    conn.execute(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
        (slot,),
    )


def primary_keys(conn: psycopg.Connection[Any], relid: int) -> list[str]:
    """Primary key column names of a table (empty when it has none)."""
    return [
        r[0]
        for r in conn.execute(
            "select a.attname from pg_index i join pg_attribute a"
            " on a.attrelid = i.indrelid and a.attnum = any(i.indkey)"
            " where i.indrelid = %s and i.indisprimary order by a.attnum",
            (relid,),
        )
    ]


def unpublished(
    conn: psycopg.Connection[Any], publication: str, schema: str, tables: list[str]
) -> list[str]:
    """The ``tables`` publication does not publish (all of them when it does not exist)."""
    published = {
        r[0]
        for r in conn.execute(
            "select tablename from pg_publication_tables where pubname = %s and schemaname = %s",
            (publication, schema),
        )
    }
    return [t for t in tables if t not in published]
