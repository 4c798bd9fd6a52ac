"""A version per warehouse table, bumped in the same transaction as every change the load makes
to it: what lets a copy derived from a table (riverbed.serve.copies, a governed copy per
security context) know whether it is exactly fresh, and how to catch up.

Two small tables in a schema of their own (``riverbed_load``), which no principal's catalog
shows (the gateway reads the warehouse's own schema only):

- ``riverbed_versions(table_name, version, rewritten)``: one row per table changed since they
  exist; ``version`` goes up by one with each committed change, ``rewritten`` takes the new
  version only when the change was not a pure append (a delete, an update, a merge, an
  erasure): a copy at version ``c`` with ``rewritten <= c`` catches up by appending;
- ``riverbed_appended(table_name, version, batch_id)``: the batches each append added to a
  fact, so a copy appends exactly the rows of the batches after its version. A rewrite clears
  the table's entries (no copy older than it can use them); the copies' refresh forgets those
  every copy has (in a project without copies they stay: a row per appended batch).

A table with no row is at version 0. ``bump`` is written as INSERT-from-SELECT then DELETE of
the older row, plain SQL that DuckDB and PostgreSQL run alike, no upsert (DuckDB's unique
index refuses a row updated and re-inserted in one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

from riverbed.load.warehouse import Warehouse

SCHEMA = "riverbed_load"
VERSIONS = f"{SCHEMA}.riverbed_versions"
APPENDED = f"{SCHEMA}.riverbed_appended"
_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {VERSIONS}"
    " (table_name TEXT NOT NULL, version BIGINT NOT NULL, rewritten BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {APPENDED}"
    " (table_name TEXT NOT NULL, version BIGINT NOT NULL, batch_id TEXT NOT NULL)",
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def exists(warehouse: Warehouse, qualified: str) -> bool:
    """Whether the table ``schema.name`` exists (``Warehouse.columns`` sees the warehouse's
    own schema only)."""
    schema, _, name = qualified.partition(".")
    rows = warehouse.query(
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema ="
        f" {_literal(schema)} AND table_name = {_literal(name.strip(chr(34)))}"
        " AND table_catalog = current_database()"
    ).to_pylist()
    return bool(rows[0]["n"])


def ensure_versions(warehouse: Warehouse) -> None:
    """Create the version tables where they are missing. Outside the load's transactions
    (before parallel branches bump: two first CREATEs at once conflict)."""
    if not (exists(warehouse, VERSIONS) and exists(warehouse, APPENDED)):
        for statement in _DDL:
            warehouse.execute(statement)


def bump(warehouse: Warehouse, table: str, *, appended: Sequence[str] | None = None) -> None:
    """Record a change of ``table``: an append of the batches ``appended``, or (None) any
    other change. Run it inside the transaction that makes the change."""
    name = _literal(table)
    current = "COALESCE(MAX(version), 0)"
    rewritten = f"{current} + 1" if appended is None else "COALESCE(MAX(rewritten), 0)"
    warehouse.execute(
        f"INSERT INTO {VERSIONS} (table_name, version, rewritten)"
        f" SELECT {name}, {current} + 1, {rewritten} FROM {VERSIONS} WHERE table_name = {name}"
    )
    warehouse.execute(
        f"DELETE FROM {VERSIONS} WHERE table_name = {name} AND version <"
        f" (SELECT MAX(version) FROM {VERSIONS} WHERE table_name = {name})"
    )
    if appended is None:
        warehouse.execute(f"DELETE FROM {APPENDED} WHERE table_name = {name}")
        return
    if appended:
        rows = ", ".join(f"({_literal(b)})" for b in appended)
        warehouse.execute(
            f"INSERT INTO {APPENDED} (table_name, version, batch_id)"
            f" SELECT {name}, MAX(version), b.id FROM {VERSIONS},"
            f" (VALUES {rows}) AS b(id) WHERE table_name = {name} GROUP BY b.id"
        )


def version_query(table: str) -> str:
    """One row: ``version`` and ``rewritten`` of ``table`` (0 and 0 before any change)."""
    name = _literal(table)
    return (
        "SELECT COALESCE(MAX(version), 0) AS version, COALESCE(MAX(rewritten), 0) AS rewritten"
        f" FROM {VERSIONS} WHERE table_name = {name}"
    )


def appended_since(table: str, version: int) -> str:
    """A query of the batch ids appended to ``table`` after ``version``."""
    return (
        f"SELECT batch_id FROM {APPENDED} WHERE table_name = {_literal(table)}"
        f" AND version > {int(version)}"
    )
