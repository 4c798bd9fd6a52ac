"""`riverbed source grants`: the least a capture role needs on the source, as a psql script.

What capture does on the source, and what each step takes (PostgreSQL 14 to 18 alike):

- the slot (CREATE_REPLICATION_SLOT, which also exports the snapshot the initial copy reads),
  the WAL stream, peeking at the slot for the lag, dropping it for ``--resnapshot``: the
  REPLICATION attribute (on Amazon RDS and Aurora, membership in ``rds_replication``);
- the initial snapshot: USAGE on the schema and SELECT on the captured tables, inside the
  exported snapshot (no other privilege: importing a snapshot asks for none);
- heartbeats and the drain target (pg_logical_emit_message, pg_current_wal_lsn): nothing;
- the publication: CREATE PUBLICATION ... FOR TABLE takes CREATE on the database and ownership
  of every table it lists; ALTER PUBLICATION ... ADD TABLE, ownership of the publication and of
  the table. Ownership is far more than capture needs (an owner may ALTER, DROP and TRUNCATE),
  so the script has the tables' owner (whoever runs it) create the publication, with the
  options capture checks for, under the name capture will look for, and the role only reads it.
  A table added to riverbed.yaml later needs the owner again (ALTER PUBLICATION ... ADD TABLE),
  which capture says when it gets there (riverbed.capture.privileges).

The password never appears: psql reads it from an environment variable (``\\getenv``); when the
variable is unset the statement fails, under ON_ERROR_STOP, before anything is created with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from riverbed.capture.slot import publication_options


@dataclass(frozen=True)
class CaptureGrants:
    """Who captures what: the role and where its password comes from, and what it reads."""

    role: str
    password_variable: str
    database: str
    schema: str
    tables: list[str]
    publication: str


def _name(*parts: str) -> str:
    return sql.Identifier(*parts).as_string(None)


def grants_script(grants: CaptureGrants) -> str:
    """The psql script that makes ``grants.role`` a capture role and the publication it reads."""
    role = _name(grants.role)
    tables = ", ".join(_name(grants.schema, t) for t in grants.tables)
    lines = [
        f"-- The least a Riverbed capture role needs on database {grants.database}, schema "
        f"{grants.schema}.",
        "-- Run it as a superuser (or as the tables' owner, with CREATEROLE and, on PostgreSQL",
        "-- 16+, REPLICATION of its own), the role's password in the environment:",
        f"--   {grants.password_variable}=... psql -v ON_ERROR_STOP=1 -d {grants.database} "
        "-f grants.sql",
        "\\set ON_ERROR_STOP on",
        f"\\getenv capture_password {grants.password_variable}",
        "",
        "-- 1. A role that logs in and replicates: the slot, the snapshot it exports, the WAL.",
        f"--    On Amazon RDS or Aurora: drop REPLICATION and GRANT rds_replication TO {role}.",
        f"CREATE ROLE {role} LOGIN REPLICATION PASSWORD :'capture_password';",
        "",
        "-- 2. The initial snapshot reads the captured tables, and nothing else.",
        f"GRANT CONNECT ON DATABASE {_name(grants.database)} TO {role};",
        f"GRANT USAGE ON SCHEMA {_name(grants.schema)} TO {role};",
        f"GRANT SELECT ON TABLE {tables} TO {role};",
        "",
        "-- 3. The publication, made by the tables' owner (FOR TABLE takes ownership of each",
        "--    table, which the capture role does not get); capture finds it by this name.",
        "SELECT current_setting('server_version_num')::int >= 180000 AS riverbed_pg18 \\gset",
        "\\if :riverbed_pg18",
        _publication(grants, tables, 180000),
        "\\else",
        _publication(grants, tables, 170000),
        "\\endif",
    ]
    return "\n".join(lines) + "\n"


def _publication(grants: CaptureGrants, tables: str, version: int) -> str:
    options = ", ".join(f"{k} = {v}" for k, v in publication_options(version).items())
    return f"CREATE PUBLICATION {_name(grants.publication)} FOR TABLE {tables} WITH ({options});"
