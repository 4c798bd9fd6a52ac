"""The state store's tables in PostgreSQL: the repositories' SQLite schema (riverbed.state.sql)
in PostgreSQL's words, in a schema of their own (state.schema), and the keys of the advisory
locks that stand in for SQLite's one writer at a time and for the lock files.

SQLite's ``integer`` is 64 bits and its ``real`` a double: here ``bigint`` and ``double
precision`` (an LSN and a microsecond timestamp do not fit PostgreSQL's ``integer``). A table
read in the order its rows were inserted gets the ``rowid`` SQLite gives every table. Every
statement is idempotent (``if not exists``), and they run under the writer lock: stores opened
at once by several hosts create the schema once.
"""

from __future__ import annotations

import hashlib
import re

# the tables read in insertion order (``order by rowid``)
ROWID_TABLES = ("quality_results", "alarm_history")

_TYPES = {"integer": "bigint", "real": "double precision"}


def pg_types(sqlite_sql: str) -> str:
    """``sqlite_sql`` with SQLite's column types in PostgreSQL's words."""
    return re.sub(r"\b(integer|real)\b", lambda m: _TYPES[m.group(1)], sqlite_sql)


def ddl(sqlite_schema: str) -> list[str]:
    """The statements that create the tables of ``sqlite_schema`` in PostgreSQL, one each."""
    text = pg_types(re.sub(r"--[^\n]*", "", sqlite_schema))
    statements = [s.strip() for s in text.split(";") if s.strip()]
    statements += [
        f"alter table {table} add column if not exists rowid bigserial" for table in ROWID_TABLES
    ]
    return statements


def advisory_key(schema: str, name: str) -> int:
    """The bigint key of the advisory lock ``name`` of the store in ``schema``: stable across
    hosts and releases (a hash of the two, not Python's ``hash``)."""
    digest = hashlib.blake2b(f"riverbed:{schema}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
