"""Governed copies: per security context, a table holding what the gateway's derived table
gives, kept fresh by the pipeline, read in its place when exactly fresh.

A governed query filters and masks at query time: over a large fact that costs several times
the same aggregate on a table of just the rows the principal may see, stored masked (see
bench/govern.py). BI tools cache per row-security predicate for the same reason (Superset's
cache key carries the RLS filters; QuickSight SPICE with RLS). Here:

- A security context is a principal's derived table of one table (riverbed.govern.gateway.
  Derived): the granted columns, masks and row filter with the attributes bound. Principals
  with the same derived table share it; its id is a digest of the derived table's SQL.
- ``governance.copies`` names the tables (names or globs) that get copies; only contexts that
  differ from the plain table (a row filter, a mask, a column left out) need one. A copy is
  ``riverbed_governed."<table>__<context>"``, recorded in ``riverbed_governed.riverbed_copies``
  with the table's version it holds (riverbed.load.versions). The schema is not the
  warehouse's own, so no principal's catalog shows it and a query naming it is refused as an
  unknown table; ``riverbed govern apply`` grants it to no role.
- ``refresh_copies`` (the publish state, ``riverbed forget``): per copy, in one transaction
  with its record, nothing when it is at the table's version; the governed projection of the
  batches appended since, when only appends happened; else a rebuild. A kill leaves the old
  copy with its old version, or the new with the new. New contexts get built, copies of
  contexts no principal has any more are dropped.
- ``fresh_copies`` (a governed query): the copies at their table's current version, read on
  the query's own connection. DuckDB: the read-only file no writer can change while it is
  open. PostgreSQL, where each query is its own transaction: the version check is inside the
  query (the copy's rows when the version matches, the live derived table's otherwise, one
  snapshot). Either way the answer is the live one, row for row.
- A hash mask's digests depend on the PII key: a copy that hashes records a check value of
  the key it was built with (an HMAC of a constant under it), and is used only under the same.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import sqlglot
from sqlglot import exp

from riverbed.config import Project
from riverbed.govern.gateway import Catalog, Derived, derived_table
from riverbed.govern.masks import key_statements
from riverbed.govern.policy import GovernError, Policy, Principal
from riverbed.load.versions import (
    APPENDED,
    VERSIONS,
    appended_since,
    ensure_versions,
    exists,
    version_query,
)
from riverbed.load.warehouse import Warehouse, WarehouseError
from riverbed.transform.pii import pii_key

SCHEMA = "riverbed_governed"
REGISTRY = f"{SCHEMA}.riverbed_copies"
_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {REGISTRY} (table_name TEXT NOT NULL, context TEXT NOT NULL,"
    " version BIGINT NOT NULL, key_check TEXT NOT NULL)",
)
_KEY_CHECK = b"riverbed governed copy"


@dataclass
class Refreshed:
    """What a refresh did: copies built (new or rebuilt), caught up by appending, already
    fresh, and dropped."""

    built: int = 0
    appended: int = 0
    fresh: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def copy_table(table: str, context: str) -> str:
    """The copy's qualified, quoted name."""
    return f'{SCHEMA}."{table}__{context}"'


def copied_tables(project: Project, catalog: Catalog) -> list[str]:
    """The warehouse tables ``governance.copies`` names (dimensions and facts only)."""
    patterns = [p.lower() for p in project.config.governance.copies]
    targets = {t.target.lower() for t in project.config.tables.values()}
    return [
        name
        for name in catalog.tables
        if name.lower() in targets and any(fnmatchcase(name.lower(), p) for p in patterns)
    ]


def contexts(policy: Policy, catalog: Catalog, tables: list[str]) -> dict[tuple[str, str], Derived]:
    """(table, context) -> the derived table, for every principal's context of ``tables``
    that is not the plain table."""
    found: dict[tuple[str, str], Derived] = {}
    for name in policy.principal_names:
        principal = policy.principal(name)
        for table in tables:
            try:
                derived = derived_table(policy, principal, table, catalog)
            except GovernError:  # an attribute it lacks: its queries fail live the same way
                continue
            if derived is not None and not derived.plain:
                found[(table, derived.context)] = derived
    return found


def key_check(project: Project) -> str:
    """The check value of the PII key a hashing copy is built with."""
    return hmac.new(pii_key(project), _KEY_CHECK, hashlib.sha256).hexdigest()[:16]


def refresh_copies(project: Project, warehouse: Warehouse, catalog: Catalog) -> Refreshed:
    """Bring every copy ``governance.copies`` asks for to its table's version (see the module
    docstring); drop the others. ``catalog``: the warehouse's (serve.queries.read_catalog)."""
    done = Refreshed()
    registry_there = exists(warehouse, REGISTRY)
    tables = copied_tables(project, catalog)
    if not tables and not registry_there:
        return done  # nothing asked, nothing to drop: the warehouse stays as it is
    policy = Policy.from_config(project.config)
    wanted = contexts(policy, catalog, tables)
    if not wanted and not registry_there:
        return done  # every principal reads these tables plain: no copy to keep
    if not registry_there:
        for statement in _DDL:
            warehouse.execute(statement)
        ensure_versions(warehouse)
    check = ""
    if any(d.hashes for d in wanted.values()):
        for statement in key_statements(pii_key(project), warehouse.dialect):
            warehouse.execute(statement)
        check = key_check(project)
    records = {(r["table_name"], r["context"]): r for r in _records(warehouse)}
    for (table, context), derived in wanted.items():
        how = _refresh(warehouse, catalog, derived, records.get((table, context)), check)
        setattr(done, how, getattr(done, how) + 1)
    for table, context in set(records) - set(wanted):
        with warehouse.transaction():
            warehouse.execute(f"DROP TABLE IF EXISTS {copy_table(table, context)}")
            warehouse.execute(_delete_record(table, context))
        done.dropped += 1
    # the appended batches every copy of their table has, and those of tables without
    # copies: no refresh needs them any more (a copy built later is built whole)
    warehouse.execute(
        f"DELETE FROM {APPENDED} WHERE version <= COALESCE((SELECT MIN(r.version) FROM"
        f" {REGISTRY} r WHERE r.table_name = {APPENDED}.table_name), version)"
    )
    return done


def drop_copies(warehouse: Warehouse, tables: list[str]) -> int:
    """Drop every copy of ``tables`` (an erasure: their bytes must go with the values); the
    next refresh builds them again. The number dropped."""
    if not exists(warehouse, REGISTRY):
        return 0
    dropped = 0
    for record in _records(warehouse):
        if record["table_name"] in tables:
            with warehouse.transaction():
                table, context = record["table_name"], record["context"]
                warehouse.execute(f"DROP TABLE IF EXISTS {copy_table(table, context)}")
                warehouse.execute(_delete_record(table, context))
            dropped += 1
    return dropped


def _refresh(
    warehouse: Warehouse,
    catalog: Catalog,
    derived: Derived,
    record: dict[str, Any] | None,
    check: str,
) -> str:
    """One copy, in one transaction with its record: "fresh", "appended" or "built"."""
    table, context = derived.table, derived.context
    name = copy_table(table, context)
    keyed = check if derived.hashes else ""
    with warehouse.transaction():
        now = warehouse.query(version_query(table)).to_pylist()[0]
        version, rewritten = int(now["version"]), int(now["rewritten"])
        usable = record is not None and record["key_check"] == keyed
        if usable and record is not None and int(record["version"]) == version:
            return "fresh"
        if (
            usable
            and record is not None
            and int(record["version"]) >= rewritten
            and "batch_id" in catalog.tables[table]
        ):
            since = int(record["version"])
            batches = warehouse.query(appended_since(table, since)).column("batch_id")
            if len(batches):
                select = _of_batches(derived, batches.to_pylist(), catalog)
                warehouse.execute(f"INSERT INTO {name} {select}")
            warehouse.execute(
                f"UPDATE {REGISTRY} SET version = {version} WHERE table_name = "
                f"{_text(table)} AND context = {_text(context)}"
            )
            return "appended"
        warehouse.execute(f"DROP TABLE IF EXISTS {name}")
        warehouse.execute(f"CREATE TABLE {name} AS {derived.sql}")
        warehouse.execute(_delete_record(table, context))
        warehouse.execute(
            f"INSERT INTO {REGISTRY} (table_name, context, version, key_check) VALUES"
            f" ({_text(table)}, {_text(context)}, {version}, {_text(keyed)})"
        )
        return "built"


def _of_batches(derived: Derived, batches: list[str], catalog: Catalog) -> str:
    """The derived table's SELECT over the rows of ``batches`` only: the filter on the
    fact's own ``batch_id``, whether or not the principal sees it. The ids as literals, so
    the engine skips the blocks of older batches by their min/max (DuckDB's zone maps, the
    fact's batch_id index on PostgreSQL): the cost follows the new rows, not the table."""
    select = sqlglot.parse_one(derived.sql, read=catalog.dialect)
    assert isinstance(select, exp.Select)
    source = select.args["from_"].this
    column = exp.column("batch_id", table=source.name, quoted=True)
    select = select.where(column.isin(*map(exp.Literal.string, batches)), copy=False)
    return select.sql(dialect=catalog.dialect)


def fresh_copies(
    project: Project,
    warehouse: Warehouse,
    policy: Policy,
    principal: Principal,
    catalog: Catalog,
    tables: tuple[str, ...],
) -> dict[str, str]:
    """Table -> the SELECT to read in place of its derived table, for each of ``tables``
    whose copy for ``principal``'s context is at the table's version now."""
    copied = set(copied_tables(project, catalog)) & set(tables)
    if not copied:
        return {}
    try:
        rows = warehouse.query(
            "SELECT r.table_name, r.context, r.version, r.key_check,"
            " COALESCE(v.version, 0) AS current FROM"
            f" {REGISTRY} r LEFT JOIN {VERSIONS} v ON v.table_name = r.table_name"
        ).to_pylist()
    except WarehouseError:  # no copy built yet: the first publish makes them
        return {}
    records = {(r["table_name"], r["context"]): r for r in rows}
    found: dict[str, str] = {}
    check: str | None = None
    for table in sorted(copied):
        derived = derived_table(policy, principal, table, catalog)
        if derived is None or derived.plain:
            continue
        record = records.get((table, derived.context))
        if record is None:
            continue
        if derived.hashes:
            check = key_check(project) if check is None else check
        if record["key_check"] != (check if derived.hashes else "") or (
            record["version"] != record["current"]
        ):
            continue
        if warehouse.dialect == "duckdb":  # one file, no writer while a reader has it open
            found[table] = f"SELECT * FROM {copy_table(table, derived.context)}"
        else:  # a load may commit between this read and the query: checked again in it
            found[table] = _guarded(derived, int(record["version"]))
    return found


def _guarded(derived: Derived, version: int) -> str:
    """The copy when its table is at ``version`` in the query's own snapshot, else the live
    derived table: for a warehouse where the version read before the query could be stale by
    the time it runs."""
    fresh = (
        f"COALESCE((SELECT MAX(version) FROM {VERSIONS} WHERE table_name ="
        f" {_text(derived.table)}), 0) = {version}"
    )
    return (
        f"SELECT * FROM {copy_table(derived.table, derived.context)} WHERE {fresh}"
        f" UNION ALL SELECT * FROM ({derived.sql}) AS live WHERE NOT ({fresh})"
    )


def _records(warehouse: Warehouse) -> list[dict[str, Any]]:
    return warehouse.query(
        f"SELECT table_name, context, version, key_check FROM {REGISTRY}"
    ).to_pylist()


def _delete_record(table: str, context: str) -> str:
    return (
        f"DELETE FROM {REGISTRY} WHERE table_name = {_text(table)} AND context = {_text(context)}"
    )


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
