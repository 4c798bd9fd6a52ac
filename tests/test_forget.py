"""Erasure (issue 18 item 6): `riverbed forget customers 42` takes a data subject's email,
name and phone out of every file Riverbed owns (lake, warehouse, state store, logs), bytes
included, keeps their history rows, leaves the other customers alone, scrubs the changes
captured later, and finishes after a kill -9 at any step."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_lake_storage import Lake, lake, s3_endpoint  # noqa: F401 - fixtures

from conftest import Database, run_cli
from conftest import capture_and_run as pipeline
from conftest import run_sql as sql
from riverbed.config import parse_config
from riverbed.config.personal import personal_columns, scrubs, scrubs_of
from riverbed.lake.parquet import write_table
from riverbed.lake.scrub import scrub, scrub_file
from riverbed.lake.storage import open_storage
from riverbed.load.erase import erase_rows
from riverbed.load.postgres_warehouse import PostgresWarehouse
from riverbed.state import LakeFile
from riverbed.state.store import StateStore

EMAIL = "zelda.quux@forgetme.test"
NAME = "Zelda Quuxington"
PHONE = "+47 9988 7766"
SECRETS = (EMAIL, NAME, PHONE)
OTHER = ("otto.other@keepme.test", "Otto Other", "+1 555 0101")

TABLES = """
tables:
  customers:
    kind: dimension
    target: dim_customer
    keys: [customer_id]
    tracked: [email, full_name, phone, city]
    pii: {email: hash}
    quality:
      - {type: accepted_values, column: city, values: [Oslo, Bergen, Rome], action: quarantine}
  orders:
    kind: fact
    target: fact_orders
    keys: [order_id]
governance:
  tags: {dim_customer.full_name: [pii], dim_customer.phone: [pii], fact_orders.ship_to: [pii]}
  # governed copies holding personal values in clear: the erasure must reach them too
  copies: [dim_customer, fact_orders]
  roles:
    admin: {grants: [{tables: ["*"]}], unmasked: ["*"]}
    oslo:
      grants: [{tables: ["*"], row_filter: "customer_id > 0"}]
      unmasked: ["*"]
  principals: {admin: {roles: [admin]}, oslo: {roles: [oslo]}}
"""


@pytest.fixture
def project(database: Database, tmp_path: Path) -> Path:
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema w;"
            "create table w.customers (customer_id int primary key, email text, full_name text,"
            " phone text, city text);"
            "create table w.orders (order_id int primary key, customer_id int, ship_to text,"
            " amount numeric(10,2))"
        )
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: f_{uuid.uuid4().hex[:8]}\n'
        "lake:\n  path: .riverbed/lake\nstate:\n  path: .riverbed/state.db\n"
        "warehouse:\n  engine: duckdb\n  path: .riverbed/warehouse.duckdb\n"
        f"logs:\n  path: .riverbed/logs/riverbed.jsonl\n  level: debug\n{TABLES}"
    )
    return config


def history(database: Database, config: Path) -> None:
    """Zelda and Otto, their orders, and Zelda's changes: versions, a quarantined change."""
    email, name, phone = OTHER
    sql(
        database,
        f"insert into w.customers values (1, '{email}', '{name}', '{phone}', 'Rome')",
        f"insert into w.customers values (42, '{EMAIL}', '{NAME}', '+47 1111 2222', 'Oslo')",
        f"insert into w.orders values (100, 42, '{NAME}', 12.50)",
        f"insert into w.orders values (101, 1, '{name}', 3.00)",
    )
    pipeline(config)
    sql(
        database,
        f"update w.customers set phone = '{PHONE}' where customer_id = 42",
        "update w.customers set city = 'Bergen' where customer_id = 42",
        "update w.customers set city = 'Atlantis' where customer_id = 42",  # quarantined
        f"insert into w.orders values (102, 42, '{NAME}', 7.00)",
    )
    pipeline(config)


def files_holding(home: Path, values: tuple[str, ...]) -> dict[str, list[str]]:
    """Every file under ``home`` whose bytes hold one of ``values``, or whose Parquet cells
    do (Parquet pages are compressed: their bytes alone would hide them)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [v for v in values if v.encode() in data]
        if path.suffix == ".parquet":
            cells = json.dumps(pq.read_table(path).to_pylist(), default=str)
            hits += [v for v in values if v in cells and v not in hits]
        if hits:
            found[str(path.relative_to(home))] = hits
    return found


def warehouse_tables(config: Path) -> dict[str, list[dict[str, Any]]]:
    with duckdb.connect(
        str(config.parent / ".riverbed" / "warehouse.duckdb"), read_only=True
    ) as db:
        names = [
            name if schema == "main" else f'{schema}."{name}"'
            for schema, name in db.sql(
                "select schema_name, table_name from duckdb_tables()"
            ).fetchall()
        ]
        return {
            name: db.sql(f"select * from {name}").to_arrow_table().to_pylist() for name in names
        }


def holding(tables: dict[str, list[dict[str, Any]]], values: tuple[str, ...]) -> list[str]:
    return [
        f"{name}: {row}"
        for name, rows in tables.items()
        for row in rows
        if any(v in str(cell) for cell in row.values() for v in values)
    ]


def versions(config: Path, key: int) -> list[dict[str, Any]]:
    rows = warehouse_tables(config)["dim_customer"]
    return sorted((r for r in rows if r["customer_id"] == key), key=lambda r: r["effective_date"])


def test_forget_erases_a_customer_everywhere_and_keeps_the_history(
    database: Database, project: Path
) -> None:
    history(database, project)
    home = project.parent / ".riverbed"
    # the search finds them before: in the lake's raw, staged and quarantined rows, the warehouse
    before = files_holding(home, SECRETS)
    assert any(p.startswith("lake/raw/") for p in before), before
    assert any(p.startswith("lake/quarantine/") for p in before), before
    assert "warehouse.duckdb" in before  # its bytes hold them: the search reaches the file
    assert holding(warehouse_tables(project), SECRETS)
    # and so do the governed copies of the principal who sees them in clear, some rows only
    tables = warehouse_tables(project)
    copies = {n: r for n, r in tables.items() if "riverbed_governed." in n}
    assert len(copies) == 3 and holding(copies, SECRETS), copies.keys()
    # each at its table's version: the second run's publish caught them up
    current = {r["table_name"]: r["version"] for r in tables['riverbed_load."riverbed_versions"']}
    recorded = tables['riverbed_governed."riverbed_copies"']
    assert {r["table_name"]: r["version"] for r in recorded} == {
        "dim_customer": current["dim_customer"],
        "fact_orders": current["fact_orders"],
    }
    versions_of = {r["table_name"]: r for r in tables['riverbed_load."riverbed_versions"']}
    assert versions_of["fact_orders"]["rewritten"] == 0  # appends only: caught up, not rebuilt
    (orders,) = [r for n, r in copies.items() if "fact_orders__" in n]
    assert sorted(r["order_id"] for r in orders) == [100, 101, 102]
    kept = versions(project, 42)
    assert [v["city"] for v in kept] == ["Oslo", "Oslo", "Bergen"]  # Atlantis quarantined
    other = versions(project, 1)

    forgot = run_cli("forget", "customers", "42", "-c", str(project))
    assert forgot.code == 0, forgot.text
    assert "customers: 1 key erased (42)" in forgot.out

    assert holding(warehouse_tables(project), SECRETS) == []
    assert files_holding(home, SECRETS) == {}
    assert holding(warehouse_tables(project), SECRETS) == []
    erased = versions(project, 42)
    assert len(erased) == len(kept)  # history stays ...
    assert [v["city"] for v in erased] == ["Oslo", "Oslo", "Bergen"]
    assert [v["effective_date"] for v in erased] == [v["effective_date"] for v in kept]
    for version in erased:  # ... without its personal values (the hashed email's digest too)
        assert (version["email"], version["full_name"], version["phone"]) == (None,) * 3
    assert versions(project, 1) == other  # Otto keeps everything
    assert files_holding(home, OTHER[1:])  # and so does the lake
    facts = {r["order_id"]: r for r in warehouse_tables(project)["fact_orders"]}
    assert facts[100]["ship_to"] is None and facts[102]["ship_to"] is None
    assert facts[101]["ship_to"] == OTHER[1]
    # the compacted warehouse kept its views
    current = run_cli(
        "query",
        "--as",
        "admin",
        "--format",
        "json",
        "select order_id from fact_orders_current",
        "-c",
        str(project),
    )
    assert current.code == 0, current.text
    assert sorted(r["order_id"] for r in json.loads(current.out)) == [100, 101, 102]

    audit = json.loads(run_cli("audit", "--json", "-c", str(project)).out)
    change = next(r for r in audit if r["action"] == "forget")
    assert change["detail"]["table"] == "customers" and change["detail"]["keys"] == ["42"]
    assert not any(v in json.dumps(audit) for v in SECRETS)

    # idempotent: again, nothing left to rewrite, still clean
    again = run_cli("forget", "customers", "42", "--json", "-c", str(project))
    assert again.code == 0, again.text
    assert json.loads(again.out)["customers"]["files"] == 0
    assert files_holding(home, SECRETS) == {}

    # a later change of the key, captured from the source that still holds the values
    sql(database, "update w.customers set city = 'Rome' where customer_id = 42")
    pipeline(project)
    latest = versions(project, 42)
    assert [v["city"] for v in latest] == ["Oslo", "Oslo", "Bergen", "Rome"]
    assert (latest[-1]["email"], latest[-1]["full_name"], latest[-1]["phone"]) == (None,) * 3
    assert latest[-1]["is_current_record"]
    assert holding(warehouse_tables(project), SECRETS) == []
    # the raw file that brought the values back is scrubbed once its batch is staged
    assert files_holding(home, SECRETS) == {}


# `riverbed forget ...` that dies like kill -9 right after one of its steps: "lake" (the
# first lake file rewritten), "warehouse" (the warehouse's UPDATEs committed, before the
# compaction), "compacted" (the warehouse file replaced), "vacuumed" (the state store
# compacted, the erasure not yet marked done)
KILLED_AT = """
import os, sys
from riverbed.lake import scrub
from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.state.sql.erasure import SQLErasureLog

def die_after(owner, name, before=False):
    original = getattr(owner, name)
    def step(*args, **kwargs):
        if before:
            os._exit(137)
        done = original(*args, **kwargs)
        os._exit(137)
    setattr(owner, name, step)

point = sys.argv.pop(1)
if point == "lake":
    die_after(scrub, "write_table")
elif point == "warehouse":
    die_after(DuckDBWarehouse, "compact", before=True)
elif point == "compacted":
    die_after(DuckDBWarehouse, "compact")
else:
    die_after(SQLErasureLog, "compact")
from riverbed.cli import main
sys.argv[0] = "riverbed"
main()
"""


def killed_forget(project: Path, point: str) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT, point, "forget", "customers", "42", "-c", str(project)],
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 137, killed.stderr


def test_a_forget_killed_at_each_step_is_completed_by_the_next(
    database: Database, project: Path
) -> None:
    history(database, project)
    home = project.parent / ".riverbed"
    killed_forget(project, "lake")
    # half-way: a lake file rewritten, the warehouse untouched, the erasure under way
    assert holding(warehouse_tables(project), SECRETS)
    assert files_holding(home, SECRETS)
    audit = json.loads(run_cli("audit", "--json", "-c", str(project)).out)
    assert not any(r["action"] == "forget" for r in audit)
    for point in ("warehouse", "compacted", "vacuumed"):
        killed_forget(project, point)
    audit = json.loads(run_cli("audit", "--json", "-c", str(project)).out)
    assert not any(r["action"] == "forget" for r in audit)

    finished = run_cli("forget", "customers", "42", "-c", str(project))
    assert finished.code == 0, finished.text
    assert files_holding(home, SECRETS) == {}
    assert holding(warehouse_tables(project), SECRETS) == []
    assert [v["city"] for v in versions(project, 42)] == ["Oslo", "Oslo", "Bergen"]
    assert not list(home.glob("*.compact*"))  # no stray copy of the warehouse
    audit = json.loads(run_cli("audit", "--json", "-c", str(project)).out)
    assert [r["detail"]["keys"] for r in audit if r["action"] == "forget"] == [["42"]]


def test_forget_refuses_a_table_without_personal_columns_and_a_wrong_key(project: Path) -> None:
    bare = project.parent / "bare"
    bare.mkdir()
    text = (
        project.read_text()
        .replace(
            "  tags: {dim_customer.full_name: [pii], dim_customer.phone: [pii], "
            "fact_orders.ship_to: [pii]}\n",
            "",
        )
        .replace("    pii: {email: hash}\n", "")
    )
    (bare / "riverbed.yaml").write_text(text)
    none = run_cli("forget", "customers", "42", "-c", str(bare / "riverbed.yaml"))
    assert none.code == 2
    assert none.err.strip().splitlines() == [
        "error: customers has no personal columns to erase; tag them in riverbed.yaml, e.g. "
        "governance.tags: {dim_customer.email: [pii]}, or list them under tables.customers.pii"
    ]
    unknown = run_cli("forget", "clients", "42", "-c", str(project))
    assert unknown.code == 2 and "not a table in config" in unknown.err


def test_a_postgres_warehouse_nulls_every_version_and_vacuums_the_old_tuples_away(
    warehouse_database: Database,
) -> None:
    """On PostgreSQL the UPDATE leaves dead tuples holding the values: VACUUM FULL writes
    each changed table anew. The versions stay, their personal columns NULL."""
    with warehouse_database.connect(autocommit=True) as conn:
        conn.execute(
            "create table dim_customer (customer_key int, customer_id int, email text,"
            " full_name text, phone text, city text);"
            f"insert into dim_customer values (1, 42, 'h1', '{NAME}', '{PHONE}', 'Oslo'),"
            f" (2, 42, 'h1', '{NAME}', '{PHONE}', 'Bergen'), (3, 1, 'h2', 'Otto', '1', 'Rome');"
            "create table fact_orders (order_id int, customer_id int, ship_to text);"
            f"insert into fact_orders values (100, 42, '{NAME}'), (101, 1, 'Otto')"
        )
        before = conn.execute("select pg_relation_filepath('dim_customer')").fetchone()
    config = parse_config(TABLES, "test")
    warehouse = PostgresWarehouse(warehouse_database.dsn)
    try:
        changed = erase_rows(warehouse, config, "customers", ["42"])
        assert changed == {"dim_customer": 2, "fact_orders": 1}
        assert erase_rows(warehouse, config, "customers", ["42"]) == {
            "dim_customer": 0,
            "fact_orders": 0,
        }
    finally:
        warehouse.close()
    with warehouse_database.connect() as conn:
        rows = conn.execute(
            "select customer_id, email, full_name, phone, city from dim_customer order by 1, 5"
        ).fetchall()
        assert rows == [
            (1, "h2", "Otto", "1", "Rome"),
            (42, None, None, None, "Bergen"),
            (42, None, None, None, "Oslo"),
        ]
        assert conn.execute("select ship_to from fact_orders order by order_id").fetchall() == [
            (None,),
            ("Otto",),
        ]
        # VACUUM FULL gave the table a new file: the old one, dead tuples and all, is gone
        assert conn.execute("select pg_relation_filepath('dim_customer')").fetchone() != before


def test_personal_columns_come_from_pii_and_tags() -> None:
    config = parse_config(TABLES, "test")
    assert personal_columns(config, "customers") == ["email", "full_name", "phone"]
    assert personal_columns(config, "orders") == ["ship_to"]
    found = scrubs(config, "customers")
    assert [(s.table, s.columns, s.match) for s in found] == [
        ("customers", ("email", "full_name", "phone"), ("customer_id",)),
        ("orders", ("ship_to",), ("customer_id",)),
    ]
    assert [erased for erased, _ in scrubs_of(config, "orders")] == ["customers", "orders"]


def test_scrub_nulls_the_personal_columns_of_the_erased_keys_only() -> None:
    rows = pa.table(
        {"id": [1, 42, 3, 42], "email": ["a", "b", None, None], "age": [30, 40, 50, None]}
    )
    scrubbed, count = scrub(rows, ["email", "age"], ["id"], {"42"})
    assert count == 1  # the last row of 42 held nothing to erase
    assert scrubbed.column("email").to_pylist() == ["a", None, None, None]
    assert scrubbed.column("age").to_pylist() == [30, None, 50, None]
    assert scrubbed.schema == rows.schema
    assert scrub(scrubbed, ["email", "age"], ["id"], {"42"}) == (scrubbed, 0)
    pair = pa.table({"a": [1, 1], "b": ["x", "y"], "email": ["p", "q"]})
    assert scrub(pair, ["email"], ["a", "b"], {"1,y"})[0].column("email").to_pylist() == [
        "p",
        None,
    ]


def test_a_lake_file_is_scrubbed_in_place_on_either_storage(lake: Lake) -> None:  # noqa: F811
    """Local or S3: the file keeps its path and schema, the key's values go, the rest stays;
    a file without the key, or without its columns, is not written."""
    storage = open_storage(lake.config, lake.root)
    path = "raw/customers/date=2026-12-06/hour=10/0_1_v1_0000.parquet"
    rows = pa.table({"customer_id": [1, 42], "email": [OTHER[0], EMAIL], "_lsn": [5, 6]})
    rows = rows.replace_schema_metadata({"riverbed": "kept"})
    write_table(storage, path, rows)
    size, count = scrub_file(storage, path, ["email"], ["customer_id"], {"42"}) or (0, 0)
    assert count == 1
    back = pq.read_table(pa.BufferReader(storage.read(path)))
    assert back.column("email").to_pylist() == [OTHER[0], None]
    assert back.schema.metadata == rows.schema.metadata and size == len(storage.read(path))
    assert scrub_file(storage, path, ["email"], ["customer_id"], {"42"}) == (size, 0)
    assert scrub_file(storage, path, ["email"], ["customer_id"], {"7"}) is None
    assert scrub_file(storage, path, ["email"], ["order_id"], {"42"}) is None
    assert [p for p in storage.list("raw/") if p != path] == []  # no temp file left


def test_erasure_requests_are_tombstones_and_reopen_on_a_rerun(state_store: StateStore) -> None:
    state_store.erasure.request("customers", ["42", "7"])
    assert [(t.key, t.done) for t in state_store.erasure.tombstones("customers")] == [
        ("42", False),
        ("7", False),
    ]
    state_store.erasure.complete("customers", ["42"])
    assert {t.key: t.done for t in state_store.erasure.tombstones()} == {"42": True, "7": False}
    state_store.erasure.request("customers", ["42"])  # a rerun: under way again
    assert not any(t.done for t in state_store.erasure.tombstones("customers"))
    assert state_store.erasure.tombstones("orders") == []
    state_store.erasure.compact()
    assert len(state_store.erasure.tombstones()) == 2


def test_a_file_rewritten_in_place_keeps_its_record_but_its_size(state_store: StateStore) -> None:
    file = LakeFile(
        path="raw/customers/a.parquet",
        stage="raw",
        table="customers",
        rows=5,
        bytes=100,
        min_lsn=10,
        max_lsn=20,
        schema_version=1,
    )
    state_store.capture.commit("s", [file], 20)
    state_store.lake.resized(file.path, 90)
    (back,) = state_store.lake.files("raw", "customers")
    assert back == dataclasses.replace(file, bytes=90)
    assert state_store.capture.position("s") == 20
