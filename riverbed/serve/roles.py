"""Governance on an open PostgreSQL warehouse: what `riverbed govern apply` finds there
(``read_state``), and the principal's role a governed query runs as (``principal_role``).

The policy's SQL is riverbed.govern.postgres's, which opens nothing; these two touch the
warehouse, which only a part that shows the stages (serve) may hold beside the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from riverbed.govern.gateway import Catalog
from riverbed.govern.postgres import _VIEWS, MARKER, State, ident, literal, views_role
from riverbed.load.warehouse import Warehouse, WarehouseError


def read_state(warehouse: Warehouse, catalog: Catalog) -> State:
    """What the warehouse holds now."""

    def run(sql: str) -> list[dict[str, Any]]:
        return warehouse.query(sql).to_pylist()

    schema = literal(catalog.schema)
    tables = run(
        "SELECT c.relname AS name, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
        f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {schema}"
        " AND c.relkind IN ('r', 'p')"
    )
    roles = run(
        "SELECT rolname AS name, coalesce(shobj_description(oid, 'pg_authid'), '') AS note"
        " FROM pg_roles"
    )
    schemas = run(
        "SELECT nspname AS name, coalesce(obj_description(oid, 'pg_namespace'), '') AS note"
        " FROM pg_namespace"
    )
    policies = run(
        "SELECT tablename AS t, policyname AS p FROM pg_policies"
        f" WHERE schemaname = {schema} AND policyname LIKE 'riverbed%'"
    )
    elsewhere = run(
        "SELECT DISTINCT r.rolname AS name FROM pg_shdepend d JOIN pg_roles r"
        " ON r.oid = d.refobjid WHERE d.dbid NOT IN"
        " (0, (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
    return State(
        {r["name"]: r["owner"] for r in tables},
        {r["name"]: r["note"] for r in roles},
        {r["name"]: r["note"] for r in schemas},
        [(r["t"], r["p"]) for r in policies],
        frozenset(r["name"] for r in elsewhere),
    )


@contextmanager
def principal_role(warehouse: Warehouse, principal: str) -> Iterator[bool]:
    """Inside the block, on a PostgreSQL warehouse where apply has run for ``principal``, the
    session is its views role (``SET ROLE``): the gateway's query runs with the policy's
    privileges only, never the DSN's (whose superuser's ``COPY ... TO`` file or
    ``pg_read_file`` a READ ONLY transaction does not stop). Yields False, as the DSN's role,
    where apply has not run (the gateway alone governs then). ``RESET ROLE`` before and after,
    so a connection serving one principal after another never carries a role over. Enter it
    after the gateway read the catalog and set the mask key; stream the query inside it."""
    role = views_role(principal)
    warehouse.execute("RESET ROLE")
    found = warehouse.query(
        "SELECT count(*) AS n FROM pg_roles r JOIN pg_namespace n ON n.nspname ="
        f" {literal(principal)} WHERE r.rolname = {literal(role)} AND"
        f" shobj_description(r.oid, 'pg_authid') LIKE {literal(MARKER + '%')} AND"
        f" obj_description(n.oid, 'pg_namespace') = {literal(_VIEWS + principal)}"
    ).to_pylist()
    if not found or not found[0]["n"]:
        yield False
        return
    warehouse.execute(f"SET ROLE {ident(role)}")
    try:
        yield True
    finally:
        with suppress(WarehouseError):  # a lost connection took the role with it
            warehouse.execute("RESET ROLE")
