"""The load stage through the whole pipeline, on both warehouses: source changes -> capture ->
transform -> staging, SCD2 dimensions, event facts with keys as of the event time."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from conftest import Database, run_cli
from conftest import capture_and_run as pipeline
from conftest import run_sql as sql
from riverbed.config import load_project, parse_config
from riverbed.load import facts as load_facts
from riverbed.load import runner as load_runner
from riverbed.load.model import warehouse_model
from riverbed.load.postgres_warehouse import PostgresWarehouse
from riverbed.load.runner import run_load
from riverbed.load.warehouse import WarehouseError, open_warehouse
from riverbed.source.embedded import EmbeddedServer

TABLES = """
tables:
  customers:
    kind: dimension
    target: dim_customer
    keys: [customer_id]
    tracked: [name, city]
    type1: [phone]
  orders:
    kind: fact
    target: fact_orders
    keys: [order_id]
    transforms:
      amount_cents: "CAST(amount * 100 AS BIGINT)"
    sort_key: [order_id]
    dist_key: customer_id
"""


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_section(request: pytest.FixtureRequest, pg_server: EmbeddedServer) -> Iterator[str]:
    if request.param == "duckdb":
        yield "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n"
        return
    name = f"w_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    yield f'warehouse:\n  engine: postgres\n  dsn: "{pg_server.dsn(name)}"\n'
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"drop database {name} with (force)")


@pytest.fixture
def project(database: Database, tmp_path: Path, warehouse_section: str) -> Path:
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema w;"
            "create table w.customers (customer_id int primary key, name text, city text, phone text);"
            "create table w.orders (order_id int primary key, customer_id int, amount numeric(10,2),"
            " status text)"
        )
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: w_{uuid.uuid4().hex[:8]}\n'
        f"lake:\n  path: lake\nstate:\n  path: state.db\n{warehouse_section}{TABLES}"
    )
    return config


def rows(config: Path, query: str) -> list[dict[str, Any]]:
    result = run_cli("query", "--as", "admin", "--format", "json", query, "-c", str(config))
    assert result.code == 0, result.text
    return json.loads(result.out)  # type: ignore[no-any-return]


def catalog_rows(config: Path, query: str) -> list[dict[str, Any]]:
    """``query`` over the warehouse's system catalogs, which `riverbed query` refuses to
    every principal (governance): on the warehouse opened read-only, as the gateway's
    queries run."""
    project = load_project(config)
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        return warehouse.query(query).to_pylist()
    finally:
        warehouse.close()


def test_dimension_versions_and_facts_keyed_as_of_the_event(
    database: Database, project: Path
) -> None:
    sql(database, "insert into w.customers values (1, 'Ann', 'Oslo', '111')")
    pipeline(project)
    sql(
        database,
        "insert into w.orders values (10, 1, 5.00, 'placed')",  # Ann lives in Oslo
        "update w.customers set city = 'Rome' where customer_id = 1",  # a tracked change
        "update w.customers set phone = '222' where customer_id = 1",  # type 1: no version
        "insert into w.orders values (11, 1, 7.50, 'placed')",  # Ann lives in Rome
        "update w.customers set city = 'Lima' where customer_id = 1",
        "update w.customers set city = 'Kyiv' where customer_id = 1",  # two versions, one batch
        "delete from w.customers where customer_id = 1",
        "insert into w.customers values (1, 'Ann', 'Oslo', '333')",  # a re-insert
    )
    report = pipeline(project)
    assert report["load"]["tables"]["fact_orders"]["rows"] == 2
    versions = rows(
        project,
        "select customer_key, city, phone, effective_date, expiry_date, is_current_record,"
        " is_deleted from dim_customer where customer_id = 1 order by effective_date",
    )
    assert [v["city"] for v in versions] == ["Oslo", "Rome", "Lima", "Kyiv", "Oslo"]
    assert [v["is_current_record"] for v in versions] == [False, False, False, False, True]
    assert [v["is_deleted"] for v in versions] == [False, False, False, True, False]
    assert versions[1]["phone"] == "222"  # type 1 overwrote the version it happened in
    for older, newer in zip(versions[:3], versions[1:4], strict=True):
        assert older["expiry_date"] == newer["effective_date"]  # no gap, no overlap
    assert versions[-1]["expiry_date"].startswith("9999-12-31")
    facts = rows(
        project,
        "select order_id, customer_key, amount_cents, date_key from fact_orders order by order_id",
    )
    assert [f["customer_key"] for f in facts] == [
        versions[0]["customer_key"],
        versions[1]["customer_key"],
    ]
    assert [f["amount_cents"] for f in facts] == [500, 750]
    assert all(len(str(f["date_key"])) == 8 for f in facts)
    # running again with nothing new changes nothing
    again = pipeline(project)
    assert again["load"]["batches"] == 0
    assert len(rows(project, "select * from dim_customer")) == 5


def test_an_event_before_its_dimension_row_gets_an_inferred_member(
    database: Database, project: Path
) -> None:
    sql(database, "insert into w.orders values (20, 2, 1.00, 'placed')")  # customer 2 unknown yet
    pipeline(project)
    inferred = rows(
        project, "select customer_key, name, is_inferred from dim_customer where customer_id = 2"
    )
    assert len(inferred) == 1 and inferred[0]["is_inferred"] and inferred[0]["name"] is None
    sql(database, "insert into w.customers values (2, 'Bo', 'Pisa', null)")
    pipeline(project)
    completed = rows(
        project,
        "select customer_key, name, is_inferred, is_current_record from dim_customer where customer_id = 2",
    )
    assert completed == [
        {
            "customer_key": inferred[0]["customer_key"],
            "name": "Bo",
            "is_inferred": False,
            "is_current_record": True,
        }
    ]
    fact = rows(project, "select customer_key from fact_orders where order_id = 20")
    assert fact == [{"customer_key": inferred[0]["customer_key"]}]


def test_a_fact_load_that_dies_is_redone_without_duplicates(
    database: Database, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(database, "insert into w.customers values (3, 'Cy', 'Nice', null)")
    sql(
        database,
        *(f"insert into w.orders values ({i}, 3, {i}.00, 'placed')" for i in range(30, 40)),
    )
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    assert run_cli("run", "--once", "--stage", "transform", "-q", "-c", str(project)).code == 0

    # 1. dies between the preaction and the insert: the transaction rolls back
    real_append = load_facts.append_statements

    def dying_append(*args: Any, **kwargs: Any) -> list[Any]:
        preaction, *_insert = real_append(*args, **kwargs)
        return [preaction, "select no_such_function()"]

    monkeypatch.setattr(load_facts, "append_statements", dying_append)
    with pytest.raises(Exception):  # noqa: B017 - whatever the warehouse raises
        run_load(load_project(project))
    monkeypatch.setattr(load_facts, "append_statements", real_append)

    # 2. dies after the warehouse committed, before the state store recorded the batch
    project_cfg = load_project(project)
    real_loaded = load_runner.Loader._loaded

    def killed(_self: Any, *_args: Any) -> int:
        raise RuntimeError("killed: committed in the warehouse, never recorded as loaded")

    monkeypatch.setattr(load_runner.Loader, "_loaded", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_load(project_cfg)
    monkeypatch.setattr(load_runner.Loader, "_loaded", real_loaded)
    run_load(project_cfg)
    facts = rows(project, "select order_id, _lsn, _seq from fact_orders order by order_id")
    assert [f["order_id"] for f in facts] == list(range(30, 40))
    assert len({(f["_lsn"], f["_seq"]) for f in facts}) == 10


def test_a_new_source_column_evolves_the_warehouse_tables(
    database: Database, project: Path
) -> None:
    sql(database, "insert into w.customers values (4, 'Di', 'Bern', null)")
    sql(database, "insert into w.orders values (40, 4, 2.00, 'placed')")
    pipeline(project)
    sql(
        database,
        "alter table w.orders add column channel text",
        "alter table w.customers add column tier text",
    )
    sql(database, "insert into w.orders values (41, 4, 3.00, 'placed', 'web')")
    sql(database, "update w.customers set tier = 'gold', city = 'Zug' where customer_id = 4")
    pipeline(project)
    facts = rows(project, "select order_id, channel from fact_orders order by order_id")
    assert facts == [{"order_id": 40, "channel": None}, {"order_id": 41, "channel": "web"}]
    current = rows(
        project, "select tier, city from dim_customer where customer_id = 4 and is_current_record"
    )
    assert current == [{"tier": "gold", "city": "Zug"}]


def test_a_dimension_added_to_the_config_later_keys_the_facts_loaded_before(
    database: Database, project: Path
) -> None:
    text = project.read_text()
    customers = text[text.index("  customers:") : text.index("  orders:")]
    project.write_text(text.replace(customers, ""))  # orders alone, at first
    sql(database, "insert into w.customers values (5, 'Eve', 'Rome', null)")
    sql(database, "insert into w.orders values (50, 5, 1.00, 'placed')")
    pipeline(project)
    assert "customer_key" not in rows(project, "select * from fact_orders")[0]
    project.write_text(text)  # then customers as a dimension: fact_orders gains customer_key
    sql(database, "insert into w.orders values (51, 5, 2.00, 'placed')")
    pipeline(project)
    keys = rows(
        project,
        "select f.order_id, c.customer_id from fact_orders f"
        " left join dim_customer c using (customer_key) order by f.order_id",
    )
    # the order loaded before the dimension existed is keyed too: to Eve's first version,
    # the dimension knowing nothing of her before it
    assert keys == [{"order_id": 50, "customer_id": 5}, {"order_id": 51, "customer_id": 5}]


def test_a_widened_source_column_widens_the_warehouse_tables(
    database: Database, project: Path
) -> None:
    sql(
        database,
        "alter table w.customers add column points int, add column balance numeric(10,2)",
        "insert into w.customers values (9, 'Ida', 'Riga', null, 1, 1.50)",
        "insert into w.orders values (90, 9, 2.00, 'placed')",
    )
    pipeline(project)
    sql(
        database,
        "alter table w.customers alter column points type bigint,"
        " alter column balance type numeric(14,4), alter column customer_id type bigint",
        "alter table w.orders alter column amount type numeric(14,4),"
        " alter column customer_id type bigint",
    )
    sql(
        database,
        "update w.customers set points = 5000000000, balance = 1.2345, city = 'Kaunas'"
        " where customer_id = 9",
        "insert into w.customers values (5000000001, 'Jo', 'Oslo', null, 2, 0.0001)",
        "insert into w.orders values (91, 5000000001, 1.2345, 'placed')",
    )
    pipeline(project)  # failed before: integer out of range, or 1.2345 stored as 1.23
    current = rows(
        project,
        "select customer_id, points, cast(balance as text) as balance from dim_customer"
        " where is_current_record order by customer_id",
    )
    assert current == [
        {"customer_id": 9, "points": 5000000000, "balance": "1.2345"},
        {"customer_id": 5000000001, "points": 2, "balance": "0.0001"},
    ]
    facts = rows(
        project,
        "select f.order_id, cast(f.amount as text) as amount, d.customer_id from fact_orders f"
        " join dim_customer d on d.customer_key = f.customer_key order by f.order_id",
    )
    assert facts == [
        {"order_id": 90, "amount": "2.0000", "customer_id": 9},
        {"order_id": 91, "amount": "1.2345", "customer_id": 5000000001},
    ]
    # narrowed again: the wider warehouse types hold the values, nothing to change
    sql(
        database,
        "update w.customers set points = 3 where customer_id in (9, 5000000001)",
        "alter table w.customers alter column points type int",
        "update w.customers set city = 'Tartu' where customer_id = 9",
    )
    pipeline(project)
    assert rows(
        project, "select points from dim_customer where customer_id = 9 and is_current_record"
    ) == [{"points": 3}]


def test_a_type_change_no_type_holds_stops_the_load_and_says_how_to_go_on(
    database: Database, project: Path
) -> None:
    sql(database, "insert into w.orders values (92, 9, 2.00, 'placed')")
    pipeline(project)
    sql(database, "alter table w.orders alter column status type int using 7")
    sql(database, "insert into w.orders values (93, 9, 3.00, 8)")
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    failed = run_cli("run", "--once", "-c", str(project))
    assert failed.code != 0 and "Traceback" not in failed.err
    message = " ".join(failed.err.split())
    assert "cannot load orders into fact_orders" in message, message
    assert '"status" is INT in the source now' in message, message
    assert "stg_orders: " in message and "fact_orders: " in message, message
    assert 'ALTER TABLE fact_orders ALTER COLUMN "status" SET DATA TYPE INT USING' in message
    assert "DROP VIEW IF EXISTS fact_orders_current" in message  # PostgreSQL's ALTER needs it
    # nothing already landed is lost, and the fix the message gives lets the load go on
    assert rows(project, "select order_id, status from fact_orders") == [
        {"order_id": 92, "status": "placed"}
    ]
    cfg = load_project(project)
    warehouse = open_warehouse(cfg.config.warehouse, cfg.root)
    try:
        warehouse.execute("drop view if exists fact_orders_current")
        for table in ("stg_orders", "fact_orders"):
            warehouse.execute(
                f'alter table {table} alter column "status" type int'
                f' using case when "status" ~ \'^[0-9]+$\' then cast("status" as int) end'
            )
    finally:
        warehouse.close()
    pipeline(project)
    assert rows(project, "select order_id, status from fact_orders order by order_id") == [
        {"order_id": 92, "status": None},
        {"order_id": 93, "status": 8},
    ]


def test_query_is_read_only_and_speaks_formats(database: Database, project: Path) -> None:
    sql(database, "insert into w.customers values (5, 'Ed', 'Graz', null)")
    pipeline(project)
    csv = run_cli(
        "query",
        "--as",
        "admin",
        "--format",
        "csv",
        "select customer_id, name from dim_customer",
        "-c",
        str(project),
    )
    assert csv.code == 0 and csv.out.splitlines()[1] == '5,"Ed"'
    table = run_cli(
        "query", "--as", "admin", "select count(*) as n from dim_customer", "-c", str(project)
    )
    assert table.code == 0 and "1 row\n" in table.out
    write = run_cli("query", "--as", "admin", "delete from dim_customer", "-c", str(project))
    assert write.code != 0 and "Traceback" not in write.err
    assert len(rows(project, "select * from dim_customer")) == 1
    nobody = run_cli("query", "--as", "mallory", "select 1", "-c", str(project))
    assert nobody.code != 0 and "mallory" in nobody.err
    # values print as they are: no emoji codes in a table, strict JSON for non-finite floats
    odd = "select ':x:' as a, cast('NaN' as float8) as n, cast('-Infinity' as float8) as i"
    shown = run_cli("query", "--as", "admin", odd, "-c", str(project))
    assert shown.code == 0 and ":x:" in shown.out, shown.text
    as_json = run_cli("query", "--as", "admin", "--format", "json", odd, "-c", str(project))
    assert as_json.code == 0, as_json.text

    def strict(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    assert json.loads(as_json.out, parse_constant=strict) == [
        {"a": ":x:", "n": "NaN", "i": "-Infinity"}
    ]


def canary(project: Path) -> None:
    """A table ``canary`` holding the one row n = 1, with an index (PostgreSQL)."""
    cfg = load_project(project)
    warehouse = open_warehouse(cfg.config.warehouse, cfg.root)
    try:
        warehouse.execute("create table canary (n int primary key)")
        warehouse.execute("insert into canary values (1)")
    finally:
        warehouse.close()


def refused(project: Path, statement: str) -> str:
    """Run ``statement`` through `riverbed query`, which must refuse it in one line."""
    result = run_cli("query", "--as", "admin", statement, "-c", str(project))
    assert result.code != 0, f"{statement!r} ran: {result.text}"
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result.err
    return result.err


def pg_files(project: Path) -> list[dict[str, Any]]:
    """The file nodes of canary and its index: VACUUM FULL and REINDEX give them new ones."""
    return catalog_rows(
        project,
        "select relname, pg_relation_filenode(oid) as node from pg_class"
        " where relname in ('canary', 'canary_pkey') order by relname",
    )


def test_query_runs_one_statement_and_keeps_nothing(project: Path, tmp_path: Path) -> None:
    pipeline(project)
    canary(project)
    if "engine: postgres" in project.read_text():
        postgres_attacks(project)
    else:
        duckdb_attacks(project, tmp_path / "outside")
    assert rows(project, "select n from canary") == [{"n": 1}]
    with_query = rows(project, "with c as (select n from canary) select n + 1 as m from c")
    assert with_query == [{"m": 2}]


def postgres_attacks(project: Path) -> None:
    """Writes, a second statement that turns read-only off, VACUUM, REINDEX: none is kept."""
    files = pg_files(project)
    for attack in (
        "set transaction read write; insert into canary values (42)",
        "set transaction read write; drop table canary",
        "select set_config('default_transaction_read_only','off',false); commit;"
        " insert into canary values (7)",
        "insert into canary values (8)",
        "create table intruder (n int)",
        "vacuum full canary",
    ):
        refused(project, attack)
    assert rows(project, "select n from canary") == [{"n": 1}]
    assert catalog_rows(
        project, "select count(*) as n from pg_tables where tablename = 'intruder'"
    ) == [{"n": 0}]
    assert "not REINDEX" in refused(project, "reindex table canary")  # the gateway
    assert pg_files(project) == files
    assert "2 statements, not one" in refused(project, "select 1; select 2")
    assert "riverbed run" in refused(project, "delete from canary")
    # the server's guard holds without the friendly check before it
    cfg = load_project(project)
    warehouse = open_warehouse(cfg.config.warehouse, cfg.root, read_only=True)
    try:
        warehouse._one_statement = lambda _text: None  # type: ignore[attr-defined]
        with pytest.raises(WarehouseError, match="multiple commands"):
            warehouse.query("set transaction read write; insert into canary values (9)")
        # one statement that turns read-only off leaves the next query read-only still
        warehouse.query("select set_config('default_transaction_read_only', 'off', false)")
        with pytest.raises(WarehouseError, match="read-only transaction"):
            warehouse.query("insert into canary values (10)")
        with pytest.raises(WarehouseError, match="REINDEX returns no rows"):
            warehouse.query("reindex table canary")
    finally:
        warehouse.close()
    assert rows(project, "select n from canary") == [{"n": 1}]
    catalog = catalog_rows(
        project, "select relname from pg_stat_user_tables where relname = 'canary'"
    )
    assert catalog == [{"relname": "canary"}]


def duckdb_attacks(project: Path, outside: Path) -> None:
    """A write, a second statement, files written or attached outside the warehouse, a
    setting: none is kept."""
    outside.mkdir()
    for attack in (
        f"COPY (select 1) TO '{outside}/x.csv'",
        f"ATTACH '{outside}/other.duckdb' AS o; create table o.t as select 1",
        f"ATTACH '{outside}/other.duckdb' AS o",
        f"EXPORT DATABASE '{outside}/export'",
        "SET enable_external_access = true",
        "insert into canary values (8)",
        f"select 1; COPY (select 1) TO '{outside}/y.csv'",
    ):
        refused(project, attack)
    assert list(outside.iterdir()) == []
    assert rows(project, "select n from canary") == [{"n": 1}]
    assert "2 statements, not one" in refused(project, "select 42; select 43")
    assert "riverbed run" in refused(project, "delete from canary")
    catalog = catalog_rows(
        project, "select table_name from duckdb_tables() where table_name = 'canary'"
    )
    assert catalog == [{"table_name": "canary"}]


def test_ddl_for_every_dialect(database: Database, project: Path) -> None:
    sql(database, "insert into w.customers values (6, 'Fi', 'Oulu', null)")
    sql(database, "insert into w.orders values (60, 6, 1.00, 'placed')")
    pipeline(project)
    redshift = run_cli("ddl", "--dialect", "redshift", "-c", str(project))
    assert redshift.code == 0, redshift.text
    assert "DISTKEY" in redshift.out and "SORTKEY" in redshift.out and "ENCODE ZSTD" in redshift.out
    for dialect in ("duckdb", "postgres"):
        out = run_cli("ddl", "--dialect", dialect, "-c", str(project))
        assert out.code == 0 and "dim_customer" in out.out and "fact_orders" in out.out
        assert 'CREATE OR REPLACE VIEW "fact_orders_current"' in out.out
        # PostgreSQL gets the loader's indexes; batch_id's keeps each append's preaction an
        # index lookup however large the fact table grows
        assert ("INDEX IF NOT EXISTS fact_orders_batch_id_brin" in out.out) == (
            dialect == "postgres"
        )
        # and one per dimension key of the rows it is missing in, which each append checks
        assert ("INDEX IF NOT EXISTS fact_orders_customer_key_missing" in out.out) == (
            dialect == "postgres"
        )
    if "engine: postgres" in project.read_text():
        indexes = catalog_rows(
            project, "select indexname from pg_indexes where tablename = 'fact_orders'"
        )
        assert {
            "fact_orders_batch_id_brin",
            "fact_orders_order_id_idx",
            "fact_orders_customer_key_missing",
        } <= {i["indexname"] for i in indexes}
    bad = run_cli("ddl", "--dialect", "oracle", "-c", str(project))
    assert bad.code != 0 and "--dialect" in bad.err


def test_warehouse_is_reachable_from_code(project: Path, database: Database) -> None:
    sql(database, "insert into w.customers values (7, 'Gu', 'Faro', null)")
    pipeline(project)
    cfg = load_project(project)
    warehouse = open_warehouse(cfg.config.warehouse, cfg.root)
    try:
        assert warehouse.query("select count(*) as n from dim_date").column("n")[0].as_py() > 14_000
    finally:
        warehouse.close()


def test_reprocessed_batches_replace_their_facts(database: Database, project: Path) -> None:
    sql(database, "insert into w.customers values (8, 'Hu', 'Baku', null)")
    sql(database, *(f"insert into w.orders values ({i}, 8, 1.00, 'placed')" for i in range(80, 85)))
    pipeline(project)
    again = run_cli("run", "--reprocess", "orders", "--from", "0/0", "--json", "-c", str(project))
    assert again.code == 0, again.text
    assert json.loads(again.out)["load"]["tables"]["fact_orders"]["rows"] == 5
    assert [b["rows"] for b in json.loads(again.out)["reprocessed"]] == [5]
    facts = rows(project, "select order_id, batch_id from fact_orders order by order_id")
    assert [f["order_id"] for f in facts] == list(range(80, 85))
    assert len({f["batch_id"] for f in facts}) == 1


def test_load_order_sorts_only_batches_out_of_sort_key_order() -> None:
    import pyarrow as pa

    from riverbed.load.facts import load_order

    def batch(keys: list[Any], lsns: list[int]) -> pa.Table:
        return pa.table({"ordered_at": keys, "_lsn": lsns, "_seq": [0] * len(keys)})

    full = ["ordered_at", "_lsn", "_seq"]
    assert load_order(batch([1, 2, 2, 5], [10, 11, 12, 13]), ["ordered_at"]) == []
    assert load_order(batch([1, 3, 2, 5], [10, 11, 12, 13]), ["ordered_at"]) == full
    # a tie on the sort key is broken by the source position
    assert load_order(batch([1, 2, 2, 5], [10, 12, 11, 13]), ["ordered_at"]) == full
    assert load_order(batch([1, None, 2], [10, 11, 12]), ["ordered_at"]) == full
    # no sort key in the batch: source order is the load order
    assert load_order(batch([3, 1, 2], [10, 11, 12]), ["missing"]) == []


@pytest.mark.parametrize("warehouse_section", ["postgres"], indirect=True)
def test_a_bulk_load_refreshes_the_planner_statistics_and_a_small_one_does_not(
    database: Database, project: Path
) -> None:
    # PostgreSQL's autovacuum analyzes a table up to a minute after a bulk load; until then
    # the planner plans each small append for the empty table it last saw
    sql(
        database,
        "insert into w.customers select g, 'n' || g, 'c', null from generate_series(1, 2000) g",
        "insert into w.orders select g, g, 1.00, 'placed' from generate_series(1, 2000) g",
    )
    pipeline(project)
    stats = (
        "select c.relname, c.reltuples, s.last_analyze from pg_class c"
        " join pg_stat_user_tables s on s.relid = c.oid"
        " where c.relname in ('dim_customer', 'fact_orders') order by c.relname"
    )
    first = catalog_rows(project, stats)
    assert [(r["relname"], r["reltuples"]) for r in first] == [
        ("dim_customer", 2000),
        ("fact_orders", 2000),
    ]
    assert all(r["last_analyze"] for r in first)
    sql(
        database,
        "update w.customers set city = 'd' where customer_id <= 10",
        "insert into w.orders select g, g, 1.00, 'placed' from generate_series(2001, 2010) g",
    )
    pipeline(project)
    assert catalog_rows(project, stats) == first  # ten rows on two thousand: left to autovacuum


def test_a_truncate_of_a_dimension_source_deletes_every_live_key(
    database: Database, project: Path
) -> None:
    sql(
        database, "insert into w.customers values (1, 'Ann', 'Oslo', null), (2, 'Bo', 'Rome', null)"
    )
    pipeline(project)
    sql(
        database,
        "insert into w.customers values (3, 'Cy', 'Nice', null)",  # live only in this batch
        "truncate w.customers",
        "insert into w.customers values (1, 'Ann', 'Lima', null)",  # back after the truncate
        "insert into w.orders values (50, 1, 4.00, 'placed')",
    )
    report = pipeline(project)
    assert report["status"] == "succeeded"
    versions = rows(
        project,
        "select customer_id, city, is_current_record, is_deleted, effective_date, expiry_date"
        " from dim_customer order by customer_id, effective_date",
    )
    assert [
        (v["customer_id"], v["city"], v["is_current_record"], v["is_deleted"]) for v in versions
    ] == [
        (1, "Oslo", False, True),
        (1, "Lima", True, False),
        (2, "Rome", False, True),
        (3, "Nice", False, True),
    ]
    truncated = {v["expiry_date"] for v in versions if v["is_deleted"]}
    assert len(truncated) == 1  # all three closed at the truncate's commit time
    assert versions[1]["effective_date"] > truncated.pop()
    facts = rows(
        project,
        "select f.order_id, d.city from fact_orders f join dim_customer d using (customer_key)",
    )
    assert facts == [{"order_id": 50, "city": "Lima"}]


def test_a_refused_warehouse_connection_is_terminal_and_an_unanswered_one_transient(
    pg_server: EmbeddedServer,
) -> None:
    # a wrong password, role or database repeats on every retry: the run fails at once
    with pytest.raises(WarehouseError) as refused:
        PostgresWarehouse(pg_server.dsn("no_such_database"))
    assert not refused.value.transient
    assert "no_such_database" in str(refused.value)
    with socket.socket() as probe:  # a port nothing listens on: the server may come back
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WarehouseError) as unanswered:
        PostgresWarehouse(f"host=127.0.0.1 port={port} dbname=w user=w")
    assert unanswered.value.transient


def test_ddl_builds_the_tables_the_loader_builds(
    database: Database, project: Path, tmp_path: Path, pg_server: EmbeddedServer
) -> None:
    # a second dimension the fact has no key of: the fact carries no surrogate key for it
    sql(
        database,
        "create table w.sellers (seller_id int primary key, name text)",
        "insert into w.sellers values (1, 'Shop')",
        "insert into w.customers values (9, 'Ida', 'Riga', null)",
        "insert into w.orders values (90, 9, 3.00, 'placed')",
    )
    project.write_text(
        project.read_text()
        + "  sellers:\n    kind: dimension\n    target: dim_seller\n    keys: [seller_id]\n"
        "    tracked: [name]\n"
    )
    pipeline(project)
    printed = run_cli("ddl", "-c", str(project))  # the warehouse's own dialect
    assert printed.code == 0, printed.text
    columns = (
        "select table_name, column_name, data_type from information_schema.columns"
        " where table_schema in ('main', 'public') order by table_name, ordinal_position"
    )
    loaded = [tuple(r.values()) for r in catalog_rows(project, columns)]
    if "engine: postgres" in project.read_text():
        name = f"w_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"create database {name}")
        try:
            with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
                conn.execute(printed.out.encode())
                fresh = [tuple(r) for r in conn.execute(columns.encode()).fetchall()]
        finally:
            with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f"drop database {name} with (force)")
    else:
        with duckdb.connect(str(tmp_path / "fresh.duckdb")) as conn:
            conn.execute(printed.out)
            fresh = [tuple(r) for r in conn.execute(columns).fetchall()]
    assert printed.out.count("CREATE TABLE IF NOT EXISTS _riverbed_scd2_positions") == 1
    assert "seller_key" not in {c for t, c, _ in loaded if t == "fact_orders"}
    assert fresh == loaded


@pytest.mark.parametrize(
    ("current", "dialect", "incoming", "held"),
    [
        ("INTEGER", "duckdb", "BIGINT", "BIGINT"),
        ("bigint", "postgres", "INT", "BIGINT"),  # narrowed again: the wider type stays
        ("DECIMAL(12,2)", "duckdb", "DECIMAL(14, 4)", "DECIMAL(14, 4)"),
        ("numeric(14,4)", "postgres", "DECIMAL(12, 2)", "DECIMAL(14, 4)"),
        ("numeric(10,2)", "postgres", "DECIMAL(8, 4)", "DECIMAL(12, 4)"),
        ("integer", "postgres", "DECIMAL(5, 2)", "DECIMAL(12, 2)"),
        ("real", "postgres", "DOUBLE", "DOUBLE"),
        ("INTEGER", "duckdb", "FLOAT", "DOUBLE"),
        ("SMALLINT", "duckdb", "FLOAT", "FLOAT"),
        ("character varying(10)", "postgres", "TEXT", "TEXT"),
        ("DATE", "duckdb", "TIMESTAMP", "TIMESTAMP"),
        ("TIMESTAMP WITH TIME ZONE", "duckdb", "TIMESTAMPTZ", "TIMESTAMPTZ"),
        ("text", "postgres", "INT", None),
        ("INTEGER", "duckdb", "TEXT", None),
        ("BIGINT", "duckdb", "DOUBLE", None),
        ("DECIMAL(10,2)", "duckdb", "DOUBLE", None),
        ("TIMESTAMP", "duckdb", "TIMESTAMPTZ", None),
    ],
)
def test_holding_type_widens_only_without_loss(
    current: str, dialect: str, incoming: str, held: str | None
) -> None:
    from sqlglot import exp

    from riverbed.load.model import holding_type

    found = holding_type(exp.DataType.build(current, dialect=dialect), exp.DataType.build(incoming))
    assert (found.sql() if found is not None else None) == held


def test_a_sort_or_dist_key_naming_no_column_is_refused_before_the_load(
    database: Database, project: Path
) -> None:
    """A typo in sort_key was passed over on DuckDB, failed mid-load on PostgreSQL (CREATE INDEX
    on a missing column) and went into the Redshift DDL."""
    sql(database, "insert into w.customers values (9, 'Iv', 'Oslo', null)")
    sql(database, "insert into w.orders values (90, 9, 2.00, 'placed')")
    project.write_text(project.read_text().replace("sort_key: [order_id]", "sort_key: [orderid]"))
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    ran = run_cli("run", "--once", "-c", str(project))
    assert ran.code != 0 and "Traceback" not in ran.text
    assert "tables.orders.sort_key: 'orderid' is not a column of fact_orders" in ran.err, ran.err
    for dialect in ("duckdb", "postgres", "redshift"):
        ddl = run_cli("ddl", "--dialect", dialect, "-c", str(project))
        assert ddl.code != 0 and "tables.orders.sort_key" in ddl.err, ddl.text
    project.write_text(project.read_text().replace("dist_key: customer_id", "dist_key: cust"))
    project.write_text(project.read_text().replace("sort_key: [orderid]", "sort_key: [order_id]"))
    ran = run_cli(
        "run",
        "--redrive",
        json.loads(run_cli("runs", "--json", "-c", str(project)).out)[0]["run_id"],
        "-c",
        str(project),
    )
    assert ran.code != 0 and "tables.orders.dist_key: 'cust'" in ran.err, ran.text
    project.write_text(project.read_text().replace("dist_key: cust", "dist_key: customer_id"))
    assert run_cli("run", "--once", "-q", "-c", str(project)).code == 0
    assert [r["order_id"] for r in rows(project, "select order_id from fact_orders")] == [90]


def test_the_current_view_sums_like_the_source(database: Database, project: Path) -> None:
    """Through the pipeline: an order whose insert was quarantined, then deleted (a delete
    without a key: counted, not appended); an update that changes nothing (not appended); a
    real update and a delete; then a TRUNCATE and new orders. The view, named by
    ``current_view``, sums like the source at every step."""
    project.write_text(
        project.read_text().replace(
            "    dist_key: customer_id\n",
            "    dist_key: customer_id\n    current_view: orders_now\n"
            "    quality: [{type: not_null, column: status}]\n",
        )
    )
    sql(database, "insert into w.customers values (4, 'Di', 'Bern', null)")
    sql(database, *(f"insert into w.orders values ({i}, 4, {i}.00, 'placed')" for i in (1, 2, 3)))
    sql(database, "insert into w.orders values (9, 4, 9.00, null)")  # quarantined
    pipeline(project)
    view_sum = "select cast(coalesce(sum(amount_cents), 0) as bigint) as s from orders_now"

    def source_sum() -> list[dict[str, int]]:  # but for the quarantined row
        with database.connect() as conn:
            found = conn.execute(
                "select cast(coalesce(sum(amount * 100), 0) as bigint) from w.orders"
                " where status is not null"
            ).fetchone()
        assert found is not None
        return [{"s": found[0]}]

    assert rows(project, view_sum) == source_sum() == [{"s": 600}]
    sql(
        database,
        "delete from w.orders where order_id = 9",
        "update w.orders set status = status",  # changes nothing
        "update w.orders set amount = 20.00 where order_id = 2",
        "delete from w.orders where order_id = 3",
    )
    report = pipeline(project)["load"]["tables"]["fact_orders"]
    assert report["deletes_without_key"] == 1 and report["unchanged_updates"] == 3
    assert rows(project, view_sum) == source_sum() == [{"s": 2100}]
    ops = rows(project, "select _op, count(*) as n from fact_orders group by _op order by _op")
    # the first capture took the orders in its snapshot (L)
    assert ops == [{"_op": "D", "n": 1}, {"_op": "L", "n": 3}, {"_op": "U", "n": 1}]
    sql(database, "truncate w.orders", "insert into w.orders values (5, 4, 0.50, 'placed')")
    pipeline(project)
    assert rows(
        project, "select order_id, amount_cents, customer_key is not null as k from orders_now"
    ) == [{"order_id": 5, "amount_cents": 50, "k": True}]


def test_a_dimension_key_inside_a_composite_fact_key_still_keys_into_it() -> None:
    """feedings keyed by (animal_id, fed_on) refer to animals: they get animal_key. A fact
    keyed by the dimension's key alone is that row itself, not an event about it: none."""
    config = parse_config(
        "tables:\n"
        "  animals: {kind: dimension, target: dim_animal, keys: [animal_id], tracked: [name]}\n"
        "  feedings: {kind: fact, target: fact_feedings, keys: [animal_id, fed_on]}\n"
        "  profiles: {kind: fact, target: fact_profiles, keys: [animal_id]}\n",
        "<test>",
    )
    facts = {f.source: f for f in warehouse_model(config).facts}
    assert [dim.name for _, dim in facts["feedings"].dimensions] == ["dim_animal"]
    assert facts["profiles"].dimensions == ()
