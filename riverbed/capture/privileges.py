"""Whether the role capture connects as may capture, asked of the source before anything is set up.

Capture needs little: the REPLICATION attribute (the slot, the snapshot it exports, the WAL
stream), USAGE on the source schema and SELECT on the captured tables (the snapshot), and a
publication of those tables with the options capture sets. Making that publication is the one
step that takes more: CREATE PUBLICATION ... FOR TABLE needs CREATE on the database and
ownership of every table listed, ALTER PUBLICATION ... ADD TABLE / SET (...) ownership of the
publication and of the table (PostgreSQL 14 to 18 alike). A least-privilege role therefore
captures through a publication the tables' owner made (``riverbed source grants`` prints it),
and needs no ownership at all.

Without this check the first statement that lacks a privilege would fail half-way through the
setup with PostgreSQL's words (or, for replication, as a lost connection); with it, one line
names the role, everything it lacks, and the command that prints the SQL to grant it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from riverbed.capture.slot import (
    CaptureSetupError,
    has_options,
    publication_options,
    server_version,
    unpublished,
)

GRANTS_HINT = "`riverbed source grants` prints the SQL that gives a capture role what it needs"


def check_privileges(
    conn: psycopg.Connection[Any], schema: str, tables: list[str], publication: str
) -> None:
    """Raise CaptureSetupError naming everything the connected role lacks to capture."""
    row = conn.execute(
        "select current_user, rolsuper, rolreplication from pg_roles where rolname = current_user"
    ).fetchone()
    assert row is not None
    user, superuser, replication = row
    if superuser:
        return
    lacks: list[str] = []
    if not replication:
        lacks.append("the REPLICATION attribute (for the slot and the WAL stream)")
    if not _one(conn, "select has_schema_privilege(%s, 'USAGE')", (schema,)):
        lacks.append(f"USAGE on schema {schema} (and SELECT on its captured tables)")
    else:
        unreadable = [
            t
            for t in tables
            if not _one(
                conn,
                "select has_table_privilege(format('%%I.%%I', %s::text, %s::text), 'SELECT')",
                (schema, t),
            )
        ]
        if unreadable:
            more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
            lacks.append(f"SELECT on {schema}.{unreadable[0]}{more} (for the snapshot)")
    problem = _publication_problem(conn, schema, tables, publication)
    if problem:
        lacks.append(problem)
    if lacks:
        raise CaptureSetupError(
            f"the source role {user} cannot capture: it lacks {'; '.join(lacks)}; {GRANTS_HINT}"
        )


def _publication_problem(
    conn: psycopg.Connection[Any], schema: str, tables: list[str], publication: str
) -> str | None:
    """What stops the role from making the publication what capture needs, if anything."""
    owner = _one(
        conn,
        "select pg_has_role(pubowner, 'USAGE') from pg_publication where pubname = %s",
        (publication,),
    )
    missing = unpublished(conn, publication, schema, tables)
    options = publication_options(server_version(conn))
    if owner is None:  # no such publication: creating it takes CREATE and the tables
        if _one(conn, "select has_database_privilege(current_database(), 'CREATE')", ()) and (
            not _not_owned(conn, schema, tables)
        ):
            return None
        return (
            f"publication {publication}, which does not exist, and creating it takes ownership "
            "of every captured table (have their owner create it)"
        )
    needs_alter = not has_options(conn, publication, options)
    if not missing and not needs_alter:
        return None
    if owner and not _not_owned(conn, schema, missing):
        return None
    what = (
        f"{schema}.{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        if missing
        else "the options " + ", ".join(f"{k} = {v}" for k, v in options.items())
    )
    return (
        f"the ownership to give publication {publication} {what} (have the owner of the "
        "publication and its tables do it)"
    )


def _not_owned(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> list[str]:
    """The ``tables`` the connected role does not own (nor is a member of their owner)."""
    rows = conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = any(%s) and not pg_has_role(c.relowner, 'USAGE')",
        (schema, tables),
    ).fetchall()
    return [r[0] for r in rows]


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]
