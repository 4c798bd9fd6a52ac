"""`riverbed govern apply` on a real PostgreSQL warehouse, checked by logging in directly as
each principal's role with psycopg, as psql or a BI tool would: rows filtered, columns masked
or absent, nothing writable, no way around the views; a policy change converges; `govern
show` prints the policy and the SQL at 80 columns, never a password."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from conftest import Database, run_cli, write_config
from riverbed.config.loader import load_project
from riverbed.load.warehouse import Warehouse, WarehouseError, open_warehouse
from riverbed.serve.queries import decide
from riverbed.serve.roles import principal_role

KEY = "a-test-pii-key"
PASSWORDS = {"gp_eva": "eva-secret-1", "gp_boss": "boss-secret-2"}
SCHEMA = [
    "create table dim_customer (id integer, full_name text, email text, phone text,"
    " region text, score integer)",
    "create table orders (id integer, customer_id integer, amount integer)",
    "create table payroll (id integer, salary integer)",
    "insert into dim_customer values"
    " (1, 'Ann Eu', 'ann@eu.example', '+33 1 23 45 67', 'EU', 7),"
    " (2, 'Bob Us', 'bob@us.example', '+1 555 0100', 'US', 9),"
    " (3, 'Cy Eu', 'cy@eu.example', NULL, 'EU', 3)",
    "insert into orders values (10, 1, 100), (11, 2, 200), (12, 3, 300)",
    "insert into payroll values (1, 100000)",
]
POLICY = """
governance:
  pii_key: {env: RIVERBED_TEST_PII_KEY}
  roles:
    boss: {grants: [{tables: ["*"]}]}
    analyst:
      grants:
        - tables: [dim_customer]
          columns: {exclude: [score]}
          row_filter: "region = principal.region"
          masks: {email: email_domain, phone: redact, full_name: hash}
        - tables: [orders]
  principals:
    gp_boss: {roles: [boss], password: {env: GP_BOSS_PASSWORD}}
    gp_eva: {roles: [analyst], attributes: {region: EU}, password: {env: GP_EVA_PASSWORD}}
    gp_nopass: {roles: [analyst], attributes: {region: US}}
"""
ENV = {
    "RIVERBED_TEST_PII_KEY": KEY,
    "GP_EVA_PASSWORD": PASSWORDS["gp_eva"],
    "GP_BOSS_PASSWORD": PASSWORDS["gp_boss"],
}


@pytest.fixture
def project(
    warehouse_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
    section = f'warehouse:\n  engine: postgres\n  dsn: "{warehouse_database.dsn}"\n'
    yield write_config(tmp_path / "project", section + "state:\n  path: state.db\n" + POLICY)


def login(database: Database, role: str) -> psycopg.Connection[Any]:
    """A direct connection as ``role``, with its password, as a BI tool makes one."""
    return psycopg.connect(
        make_conninfo(database.dsn, user=role, password=PASSWORDS[role], passfile="/dev/null"),
        autocommit=True,
    )


def fetch(conn: psycopg.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql).fetchall())


def denied(conn: psycopg.Connection[Any], sql: str) -> str:
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(sql)
    return str(refused.value)


def current_user(warehouse: Warehouse) -> str:
    return str(warehouse.query("select current_user as u").to_pylist()[0]["u"])


def granted(database: Database) -> list[Any]:
    """Every privilege, row policy and view apply manages, as the catalog has them."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        return [
            fetch(conn, sql)
            for sql in (
                "select grantee, table_schema, table_name, column_name, privilege_type"
                " from information_schema.column_privileges where grantee like 'gp_%'"
                " order by 1, 2, 3, 4, 5",
                "select tablename, policyname, roles::text, cmd, qual from pg_policies"
                " order by 1, 2",
                "select schemaname, viewname, viewowner, definition from pg_views"
                " where schemaname like 'gp_%' order by 1, 2",
                "select rolname, rolcanlogin, rolsuper, rolconfig from pg_roles"
                " join pg_db_role_setting on setrole = pg_roles.oid"
                " where rolname like 'gp_%' order by 1",
            )
        ]


def apply(config: Path) -> str:
    result = run_cli("govern", "apply", "-c", str(config), env=ENV)
    assert result.code == 0, result.text
    return result.out


def test_apply_twice_then_each_role_sees_what_the_gateway_shows(
    project: Path, warehouse_database: Database
) -> None:
    apply(project)
    first = granted(warehouse_database)
    out = apply(project)  # idempotent: a rerun succeeds and leaves the same
    assert granted(warehouse_database) == first
    assert "gp_eva: role gp_eva, schema gp_eva, 2 views" in out
    digest = hmac.new(KEY.encode(), b"Ann Eu", hashlib.sha256).hexdigest()
    with login(warehouse_database, "gp_eva") as eva:
        rows = fetch(eva, "select * from dim_customer order by id")
        assert rows == [
            (1, digest, "***@eu.example", "***", "EU"),
            (3, hmac.new(KEY.encode(), b"Cy Eu", hashlib.sha256).hexdigest(),
             "***@eu.example", None, "EU"),
        ]  # fmt: skip
        # masked values only, in WHERE too: no clear email to filter on
        assert fetch(eva, "select id from dim_customer where email like 'ann%'") == []
        assert fetch(eva, "select count(*) from orders") == [(3,)]
        assert "score" in denied(eva, "select score from dim_customer")
        assert "payroll" in denied(eva, "select * from payroll")
        # the tables around the views: no privilege, whatever the path
        for table in ("public.dim_customer", "public.payroll", "gp_eva_views.x"):
            message = denied(eva, f"select * from {table}")
            assert "permission denied" in message or "does not exist" in message
        assert "permission denied" in denied(eva, "set role gp_eva_views")
        # nothing writable
        assert "permission denied" in denied(eva, "insert into orders values (1, 1, 1)")
        assert "permission denied" in denied(eva, "delete from public.orders")
        assert "permission denied" in denied(eva, "create table gp_eva.x (a int)")
        # the server's files: not for a principal
        assert "permission denied" in denied(eva, "copy (select 1) to '/tmp/gp_eva_out'")
        assert "permission denied" in denied(eva, "select pg_read_file('/etc/passwd')")
        assert "permission denied" in denied(eva, "select lo_export(0, '/tmp/gp_eva_lo')")
        # a BI tool's catalog: what it may read and nothing else
        listed = fetch(
            eva,
            "select table_schema, table_name from information_schema.tables"
            " where table_schema not in ('pg_catalog', 'information_schema') order by 2",
        )
        assert listed == [("gp_eva", "dim_customer"), ("gp_eva", "orders")]
        columns = fetch(
            eva,
            "select column_name from information_schema.columns"
            " where table_name = 'dim_customer' order by ordinal_position",
        )
        assert [c for (c,) in columns] == ["id", "full_name", "email", "phone", "region"]
    with login(warehouse_database, "gp_boss") as boss:
        assert len(fetch(boss, "select * from dim_customer")) == 3
        assert fetch(boss, "select salary from payroll") == [(100000,)]
        assert "permission denied" in denied(boss, "update payroll set salary = 0")
    with pytest.raises(psycopg.OperationalError):  # no password configured: no password login
        psycopg.connect(
            make_conninfo(warehouse_database.dsn, user="gp_nopass", password="x", passfile="")
        ).close()


def test_the_gateway_runs_as_the_principals_least_privileged_role(project: Path) -> None:
    loaded = load_project(project)
    warehouse = open_warehouse(loaded.config.warehouse, loaded.root, read_only=True)
    try:
        with principal_role(warehouse, "gp_eva") as entered:
            assert not entered  # not applied: the DSN's role, as before
        apply(project)
        governed = decide(loaded, warehouse, "gp_eva", "select id, region from dim_customer")
        with principal_role(warehouse, "gp_eva") as entered:
            assert entered
            assert current_user(warehouse) == "gp_eva_views"
            rows = warehouse.query(governed.sql).to_pylist()
            assert sorted(r["id"] for r in rows) == [1, 3]
            # the row policy holds even for SQL the gateway would never let through
            assert len(warehouse.query("select id from public.dim_customer").to_pylist()) == 2
            for sql in ("select score from public.dim_customer", "select * from payroll",
                        "select pg_read_file('/etc/passwd')",
                        "copy (select 1) to '/tmp/gp_gateway_out'"):  # fmt: skip
                with pytest.raises(WarehouseError, match="permission denied"):
                    warehouse.query(sql)
        assert current_user(warehouse) == "postgres"  # the role does not outlive the block
        with principal_role(warehouse, "gp_boss"):
            assert len(warehouse.query("select * from payroll").to_pylist()) == 1
    finally:
        warehouse.close()


def test_a_policy_change_converges(project: Path, warehouse_database: Database) -> None:
    apply(project)
    changed = project.read_text().replace(
        "columns: {exclude: [score]}", "columns: {include: [id, region]}"
    )
    changed = changed.replace("        - tables: [orders]\n", "")
    changed = changed.replace("region: EU", "region: US")
    changed = changed.replace("    gp_nopass: {roles: [analyst], attributes: {region: US}}\n", "")
    project.write_text(changed)
    apply(project)
    with login(warehouse_database, "gp_eva") as eva:
        assert fetch(eva, "select * from dim_customer") == [(2, "US")]
        assert "orders" in denied(eva, "select * from orders")
        assert "email" in denied(eva, "select email from dim_customer")
    with psycopg.connect(warehouse_database.dsn, autocommit=True) as owner:
        assert fetch(owner, "select 1 from pg_roles where rolname like 'gp_nopass%'") == []
        assert fetch(owner, "select 1 from pg_namespace where nspname = 'gp_nopass'") == []
        policies = fetch(owner, "select policyname from pg_policies where tablename = 'orders'")
        assert sorted(p for (p,) in policies) == ["riverbed_gp_boss", "riverbed_owner"]
    audit = run_cli("audit", "--json", "-c", str(project), env=ENV)
    assert audit.code == 0, audit.text
    assert audit.out.count('"action": "apply"') == 2
    assert not any(secret in audit.out for secret in (*PASSWORDS.values(), KEY))


def test_show_prints_the_policy_and_the_sql_at_80_columns(project: Path) -> None:
    result = run_cli(
        "govern", "show", "--dialect", "postgres", "-c", str(project), env={**ENV, "COLUMNS": "80"}
    )
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert not [line for line in lines if len(line) > 80], result.out
    assert "principal gp_eva (roles: analyst; a password)" in result.out
    assert "rows: region = 'EU'" in result.out
    assert "mask email: email_domain" in result.out
    assert "CREATE POLICY" in result.out and "FORCE ROW LEVEL SECURITY" in result.out
    assert "<SCRAM verifier of governance.principals.gp_eva.password>" in result.out
    assert "PASSWORD NULL" in result.out  # gp_nopass
    assert not any(secret in result.out for secret in (*PASSWORDS.values(), KEY))
    one = run_cli("govern", "show", "--principal", "gp_boss", "-c", str(project), env=ENV)
    assert one.code == 0 and "gp_eva" not in one.out and "payroll: id, salary" in one.out


def test_the_pipelines_role_still_reads_and_writes_every_row(
    project: Path, warehouse_database: Database
) -> None:
    # FORCE ROW LEVEL SECURITY holds a table's owner to the policies too: a warehouse owned by
    # a role that is no superuser keeps loading through riverbed_owner
    with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:
        conn.execute("drop role if exists gp_loader")
        conn.execute("create role gp_loader nologin")
        for table in ("dim_customer", "orders", "payroll"):
            conn.execute(f"alter table {table} owner to gp_loader")
    try:
        apply(project)
        with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:
            conn.execute("set role gp_loader")
            conn.execute("insert into dim_customer (id, region) values (4, 'APAC')")
            conn.execute("update orders set amount = amount + 1")
            assert fetch(conn, "select count(*) from dim_customer") == [(4,)]
            forced = fetch(
                conn,
                "select relname from pg_class where relforcerowsecurity"
                " and relname in ('dim_customer', 'orders', 'payroll') order by 1",
            )
            assert forced == [("dim_customer",), ("orders",), ("payroll",)]
        with login(warehouse_database, "gp_eva") as eva:  # the new row is not the EU's
            assert [r[0] for r in fetch(eva, "select id from dim_customer")] == [1, 3]
    finally:
        with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:
            for table in ("dim_customer", "orders", "payroll"):
                conn.execute(f"alter table {table} owner to postgres")
            conn.execute("drop owned by gp_loader")
            conn.execute("drop role gp_loader")


def test_a_role_riverbed_did_not_create_is_never_taken_over(
    project: Path, warehouse_database: Database
) -> None:
    with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:
        conn.execute("drop role if exists gp_eva_views")
        conn.execute("create role gp_eva_views superuser")
    try:
        result = run_cli("govern", "apply", "-c", str(project), env=ENV)
        assert result.code == 1
        assert "role gp_eva_views exists and is not Riverbed's" in result.err
        with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:  # unchanged
            assert fetch(conn, "select 1 from pg_namespace where nspname = 'gp_eva'") == []
    finally:
        with psycopg.connect(warehouse_database.dsn, autocommit=True) as conn:
            conn.execute("drop role gp_eva_views")


def test_on_duckdb_show_prints_the_policy_and_apply_refuses(tmp_path: Path) -> None:
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb")) as db:
        for statement in SCHEMA:
            db.execute(statement)
    config = write_config(tmp_path, "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n" + POLICY)
    result = run_cli("govern", "apply", "-c", str(config), env=ENV)
    assert result.code == 2
    assert "warehouse.engine is duckdb, where the gateway alone governs" in result.err
    # show needs neither the PII key nor a password: it prints where they come from
    shown = run_cli("govern", "show", "--dialect", "postgres", "-c", str(config))
    assert shown.code == 0, shown.text
    assert "rows: region = 'EU'" in shown.out and 'CREATE ROLE "gp_eva"' in shown.out
    assert "TO CURRENT_USER" in shown.out
    assert not (tmp_path / ".riverbed" / "pii.key").exists()
