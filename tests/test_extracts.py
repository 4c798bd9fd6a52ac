"""Issue 19 item 4: extracts. The shop of test_semantic.py (seeded, run, then traffic with
updates, deletes and refunds, run again) on a DuckDB warehouse: the second run's publish
refreshed the extract incrementally. Every chart read from the extract equals the same chart
computed live, for the admin and the EU analyst; the incremental extract equals a full
rebuild; a refresh killed before it publishes leaves the previous generation current and the
next run catches up; readers are never blocked by a load's lock nor by a refresh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from calendar import monthrange
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from psycopg.rows import dict_row
from shop_support import seed_and_change
from test_e2e import cli, demo_project
from test_semantic import ITEMS as SOURCE_ITEMS

from conftest import Database, _fresh_database, run_cli
from riverbed.config import Project
from riverbed.config.loader import demo_config_text, load_project, parse_config
from riverbed.serve.extracts import as_of, store
from riverbed.serve.extracts.datasets import DATASETS, personal_held
from riverbed.serve.extracts.refresh import FAULT, refresh
from riverbed.serve.semantic import CHARTS, chart_data
from riverbed.source.embedded import EmbeddedServer
from riverbed.state import open_state

# its numbers come from the extract, its customers' personal columns from the warehouse
LOOKS_UP_LIVE = {"customer_refunds"}
# a principal whose row filter names a column no dataset has
BY_COUNTRY = {
    "roles": {
        "by_country": {
            "grants": [
                {"tables": ["*"]},
                {"tables": ["dim_customer"], "row_filter": "country = principal.country"},
            ]
        }
    },
    "principals": {"by_country": {"roles": ["by_country"], "attributes": {"country": "DE"}}},
}


@pytest.fixture(scope="module")
def source(pg_server: EmbeddedServer) -> Iterator[Database]:
    yield from _fresh_database(pg_server)


@pytest.fixture(scope="module")
def config(source: Database, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = demo_project(tmp_path_factory.mktemp("extracts") / "duck", source)
    text = yaml.safe_load(path.read_text())
    for key, more in BY_COUNTRY.items():
        text["governance"][key] |= more
    path.write_text(yaml.safe_dump(text))
    seed_and_change(source, {"duckdb": path})
    return path


@pytest.fixture(scope="module")
def project(config: Path) -> Project:
    return load_project(config)


def _filters(project: Project) -> list[dict[str, Any]]:
    seller = chart_data(project, "admin", "seller_performance", extracts=False).rows[0]
    category = chart_data(project, "admin", "revenue_by_category", extracts=False).rows[0]
    return [
        {},
        {"seller": seller["seller_id"]},
        {"category": category["category"], "region": "Europe"},
        {"date_from": f"{category['month']}-03", "date_to": f"{category['month']}-20"},
        _whole_month(category["month"]),
    ]


def _whole_month(month: str) -> dict[str, str]:
    year, number = (int(part) for part in month.split("-"))
    return {"date_from": f"{month}-01", "date_to": f"{month}-{monthrange(year, number)[1]}"}


def _expected(name: str, filters: dict[str, Any]) -> str:
    """Where a chart should be answered from: the consumer charts' dataset has no seller."""
    if CHARTS[name].page == "consumers" and "seller" in filters:
        return "live"
    return "extract"


def _both(project: Project, principal: str, name: str, filters: dict[str, Any]) -> tuple:
    extract = chart_data(project, principal, name, filters)
    live = chart_data(project, principal, name, filters, extracts=False)
    return extract, live


@pytest.mark.parametrize("principal", ["admin", "eu_analyst"])
def test_every_chart_from_the_extract_equals_the_live_answer(
    project: Project, principal: str
) -> None:
    assert as_of(project) is not None
    counted = 0
    for filters in _filters(project):
        for name in CHARTS:
            given = {"seller": 1} | filters if CHARTS[name].needs else filters
            extract, live = _both(project, principal, name, given)
            assert extract.rows == live.rows, (name, given)
            assert live.meta["answered_from"] == "live"
            assert extract.meta["answered_from"] == _expected(name, given), (name, given)
            counted += len(extract.rows)
    assert counted > 100


def test_the_eu_analyst_reads_eu_rows_only_and_an_inexpressible_filter_goes_live(
    project: Project,
) -> None:
    americas = chart_data(project, "admin", "revenue_by_category", {"region": "North America"})
    assert americas.rows and americas.meta["answered_from"] == "extract"
    for region in ("North America", "Asia Pacific"):
        other = chart_data(project, "eu_analyst", "revenue_by_category", {"region": region})
        assert other.meta["answered_from"] == "extract" and other.rows == []
    eu = chart_data(project, "eu_analyst", "revenue_by_category")
    europe = chart_data(project, "admin", "revenue_by_category", {"region": "Europe"})
    assert eu.meta["answered_from"] == "extract" and eu.rows == europe.rows
    # the audit trail names the extract's dataset as the table read
    store_ = open_state(project)
    try:
        records = store_.audit.records(principal="eu_analyst")
    finally:
        store_.close()
    assert any(t.startswith("extract_sales") for r in records for t in r.tables)
    for name in CHARTS:
        filters = {"seller": 1} if CHARTS[name].needs else {}
        extract, live = _both(project, "by_country", name, filters)
        assert extract.meta["answered_from"] == "live" and extract.rows == live.rows, name


@pytest.mark.parametrize("filters", [{}, {"region": "Europe"}])
def test_the_consumer_charts_read_each_customers_months_not_their_days(
    project: Project, filters: dict[str, Any]
) -> None:
    """With no category nor date condition, what a customer spent and how many orders they
    placed come from the per-customer totals, a row per customer, and the cohort charts from
    the customers counted per first month and month active."""
    for name, dataset in (
        ("new_vs_returning", "extract_cohorts"),
        ("cohort_retention", "extract_cohorts"),
        ("spending_distribution", "extract_customer_totals"),
        ("transaction_counts", "extract_customer_totals"),
    ):
        assert _read(project, name, filters) == {dataset}, name


def _read(project: Project, name: str, filters: dict[str, Any], principal: str = "admin") -> set:
    """The tables the chart ``name`` read (the audit trail's record of its queries)."""
    since = time.time()
    data = chart_data(project, principal, name, filters)
    assert data.rows and data.meta["answered_from"] == "extract"
    store_ = open_state(project)
    try:
        records = store_.audit.records(principal=principal, since=since)
    finally:
        store_.close()
    return {t for r in records for t in r.tables}


@pytest.mark.parametrize("principal", ["admin", "eu_analyst"])
def test_the_cohort_charts_count_the_sources_customers_under_every_filter(
    project: Project, source: Database, principal: str
) -> None:
    """New and returning customers and cohort retention from the extract equal the live
    answer and a count over the source: whole months and a region from the cohort counts,
    a range cutting a month and a category from the per-day dataset."""
    with source.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        items = cur.execute(SOURCE_ITEMS).fetchall()
    if principal == "eu_analyst":
        items = [i for i in items if i["customer_region"] == "Europe"]
    months = sorted({(i["day"].year, i["day"].month) for i in items})
    middle = f"{months[len(months) // 2][0]:04d}-{months[len(months) // 2][1]:02d}"
    category = items[0]["category"]
    for filters, dataset in (
        ({}, "extract_cohorts"),
        ({"region": "Europe"}, "extract_cohorts"),
        ({"date_from": f"{middle}-01"}, "extract_cohorts"),
        (_whole_month(middle), "extract_cohorts"),
        ({"date_from": f"{middle}-10", "date_to": _whole_month(middle)["date_to"]}, None),
        ({"category": category}, None),
    ):
        expected = _source_cohorts(items, filters)
        for name in ("new_vs_returning", "cohort_retention"):
            extract, live = _both(project, principal, name, filters)
            assert extract.rows == live.rows, (name, filters)
            assert _shown(name, extract.rows) == expected[name], (name, filters)
            read = _read(project, name, filters, principal)
            assert read == {dataset} if dataset else "extract_cohorts" not in read, read


def _source_cohorts(items: list[dict[str, Any]], filters: dict[str, Any]) -> dict[str, Any]:
    """The two charts' numbers over the source's items: a first month under the category
    and region, not the dates; months active under every filter."""
    kept = [
        i
        for i in items
        if i["category"] == filters.get("category", i["category"])
        and i["customer_region"] == filters.get("region", i["customer_region"])
    ]
    index = lambda day: day.year * 12 + day.month - 1  # noqa: E731
    firsts: dict[int, int] = {}
    for i in kept:
        firsts[i["customer_id"]] = min(firsts.get(i["customer_id"], 10**6), index(i["day"]))
    low, high = filters.get("date_from", "0000-00-00"), filters.get("date_to", "9999-99-99")
    active = {(i["customer_id"], index(i["day"])) for i in kept if low <= str(i["day"]) <= high}
    new, returning = Counter[int](), Counter[int]()
    cohorts, sizes = Counter[tuple[int, int]](), Counter(firsts.values())
    for customer, month in active:
        first = firsts[customer]
        (new if month == first else returning)[month] += 1
        cohorts[first, month - first] += 1
    label = lambda i: f"{i // 12:04d}-{i % 12 + 1:02d}"  # noqa: E731
    return {
        "new_vs_returning": {label(m): (new[m], returning[m]) for m in {*new, *returning}},
        "cohort_retention": {(label(f), k): (n, sizes[f]) for (f, k), n in cohorts.items()},
    }


def _shown(name: str, rows: list[dict[str, Any]]) -> dict[Any, Any]:
    if name == "new_vs_returning":
        return {r["month"]: (r["new_customers"], r["returning_customers"]) for r in rows}
    return {(r["cohort"], r["months_since"]): (r["customers"], r["cohort_size"]) for r in rows}


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as extract:
        return {
            d.name: sorted(extract.execute(f"SELECT * FROM {d.name}").fetchall(), key=repr)
            for d in DATASETS
        }


def _change(source: Database, config: Path, *statements: str, **env: str) -> Any:
    with source.connect(autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    cli(config, "capture", "--once", "-q")
    return run_cli("run", "--once", "-q", "-c", str(config), env=env)


def test_the_incremental_refresh_equals_a_full_rebuild(project: Project) -> None:
    incremental = store.current(project)
    assert incremental is not None and not incremental.full  # the second run's refresh
    before = _tables(store.path_of(project, incremental.name))
    (store.folder(project) / store.POINTER).unlink()
    manifest = open_state(project)
    try:
        rebuilt = refresh(project, manifest, None)
    finally:
        manifest.close()
    assert rebuilt is not None and rebuilt.generation.full
    assert _tables(store.path_of(project, rebuilt.generation.name)) == before


def test_a_killed_refresh_keeps_the_previous_generation_and_the_next_run_catches_up(
    project: Project, config: Path, source: Database
) -> None:
    previous = killed_from = store.current(project)
    assert previous is not None
    before = chart_data(project, "admin", "revenue_by_category").rows
    killed = _change(
        source,
        config,
        "update shop.order_items set quantity = quantity + 5 where order_item_id in"
        " (select order_item_id from shop.order_items order by order_item_id limit 3)",
        **{FAULT: "kill"},
    )
    assert killed.code == -9, killed
    assert store.current(project) == previous  # the pointer never moved
    stale = chart_data(project, "admin", "revenue_by_category")
    assert stale.meta["answered_from"] == "extract" and stale.rows == before
    assert stale.rows != chart_data(project, "admin", "revenue_by_category", extracts=False).rows
    # nothing new to load: the next run publishes what the killed one loaded, not "nothing
    # new" with the dashboards left behind the warehouse until more data comes
    published = run_cli("run", "--once", "-c", str(config), env={"COLUMNS": "80"})
    assert published.code == 0, published
    assert "nothing new to load; published what an earlier run loaded" in published.out
    # it did work: listed with the runs, not hidden among the idle ones
    run_id = published.out.split()[1].rstrip(":")
    listed = run_cli("runs", "-c", str(config), env={"COLUMNS": "80"})
    assert listed.code == 0 and run_id[-6:] in listed.out, listed
    previous = store.current(project)
    assert previous is not None and previous != killed_from
    extract, live = _both(project, "admin", "revenue_by_category", {})
    assert extract.meta["answered_from"] == "extract" and extract.rows == live.rows
    idle = run_cli("run", "--once", "-c", str(config))
    assert idle.code == 0 and "nothing new (" in idle.out, idle
    assert store.current(project) == previous  # published once, not at every idle run
    failed = _change(
        source,
        config,
        "delete from shop.order_items where order_item_id in (select i.order_item_id"
        " from shop.order_items i where not exists (select 1 from shop.returns r"
        " where r.order_item_id = i.order_item_id) order by i.order_item_id desc limit 2)",
        **{FAULT: "fail"},
    )
    assert failed.code == 0, failed  # the load stands
    assert "the extract could not be refreshed" in failed.err
    assert store.current(project) == previous
    # dimension attributes the datasets show change too: the cells of those keys' days move
    caught_up = _change(
        source,
        config,
        "update shop.products set category = 'Moved' where product_id in"
        " (select product_id from shop.products order by product_id limit 2)",
        "update shop.customers set region = 'Europe' where customer_id in (select customer_id"
        " from shop.customers where region <> 'Europe' order by customer_id limit 3)",
    )
    assert caught_up.code == 0, caught_up
    now = store.current(project)
    assert now is not None and now != previous and not now.full
    for principal in ("admin", "eu_analyst"):
        for name in CHARTS:
            filters = {"seller": 1} if CHARTS[name].needs else {}
            extract, live = _both(project, principal, name, filters)
            assert extract.rows == live.rows, (principal, name)
    moved = chart_data(project, "admin", "revenue_by_category", {"category": "Moved"})
    assert moved.rows and moved.meta["answered_from"] == "extract"
    manifest = open_state(project)
    try:
        failures = manifest.metrics.series("extract_refresh_failures", 0)
        loaded = manifest.metrics.newest("extract_loaded_at")["extract_loaded_at"][0]
    finally:
        manifest.close()
    assert sum(v for _, v in failures) >= 1 and loaded == now.loaded_at


def test_a_reader_of_the_old_generation_keeps_complete_data_while_a_refresh_publishes(
    project: Project,
) -> None:
    old = store.current(project)
    assert old is not None
    reader = duckdb.connect(str(store.path_of(project, old.name)), read_only=True)
    try:
        counted = reader.execute("SELECT COUNT(*), SUM(revenue) FROM extract_sales").fetchall()
        manifest = open_state(project)
        try:
            refresh(project, manifest, None)
        finally:
            manifest.close()
        store.prune(project, grace=0)
        assert not store.path_of(project, old.name).exists()
        again = reader.execute("SELECT COUNT(*), SUM(revenue) FROM extract_sales").fetchall()
        assert again == counted
    finally:
        reader.close()
    assert store.current(project) != old


def test_charts_answer_while_another_process_holds_the_warehouse_write_lock(
    project: Project, config: Path
) -> None:
    warehouse = config.parent / ".riverbed" / "warehouse.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
            " c.execute('BEGIN'); print('held', flush=True); time.sleep(60)",
            str(warehouse),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        for name in CHARTS:
            if name in LOOKS_UP_LIVE:
                continue
            filters = {"seller": 1} if CHARTS[name].needs else {}
            data = chart_data(project, "eu_analyst", name, filters, path="web")
            assert data.meta["answered_from"] == "extract", name
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()


def test_extract_files_are_private_and_the_pointer_is_json(project: Project) -> None:
    here = store.folder(project)
    assert here.stat().st_mode & 0o777 == 0o700
    for path in here.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    pointer = json.loads((here / store.POINTER).read_text())
    assert pointer["name"] == store.current(project).name  # type: ignore[union-attr]
    assert os.path.exists(store.path_of(project, pointer["name"]))


def test_a_generation_starts_as_a_clone_the_previous_one_never_sees_written(
    tmp_path: Path,
) -> None:
    previous, new = tmp_path / "previous.duckdb", tmp_path / "new.duckdb"
    with duckdb.connect(str(previous)) as extract:
        extract.execute("CREATE TABLE t AS SELECT range AS x FROM range(100000)")
    reflinked = store.clone(previous, new)
    assert isinstance(reflinked, bool) and new.read_bytes() == previous.read_bytes()
    with duckdb.connect(str(new)) as extract:
        extract.execute("DELETE FROM t WHERE x >= 10; CHECKPOINT")
    with duckdb.connect(str(previous), read_only=True) as extract:
        assert extract.execute("SELECT COUNT(*) FROM t").fetchone() == (100000,)


def test_no_extract_holds_a_personal_value(project: Project) -> None:
    """The datasets key customers by id only: no email, name or phone in any generation."""
    with duckdb.connect(str(project.home / "warehouse.duckdb"), read_only=True) as warehouse:
        people = warehouse.execute("SELECT email, full_name, phone FROM dim_customer").fetchall()
    values = {v for row in people for v in row if v}
    assert len(values) > 100
    for path in store.folder(project).glob(f"*{store.SUFFIX}"):
        with duckdb.connect(str(path), read_only=True) as extract:
            tables = [r[0] for r in extract.execute("SHOW TABLES").fetchall()]
            for table in tables:
                cells = extract.execute(f"SELECT * FROM {table}").fetchall()
                assert not {c for row in cells for c in row if isinstance(c, str)} & values


def test_a_refresh_refuses_a_dataset_column_tagged_personal() -> None:
    text = yaml.safe_load(demo_config_text())
    text["governance"]["tags"]["dim_seller.name"] = ["pii"]
    config = parse_config(yaml.safe_dump(text), "test")
    assert personal_held(config) == [
        "extract_seller_orders_monthly.seller (dim_seller.name)",
        "extract_sales_monthly.seller (dim_seller.name)",
        "extract_seller_category_orders_monthly.seller (dim_seller.name)",
        "extract_seller_orders.seller (dim_seller.name)",
        "extract_sales.seller (dim_seller.name)",
        "extract_seller_category_orders.seller (dim_seller.name)",
        "extract_returns.seller (dim_seller.name)",
    ]


def test_a_superseded_generation_is_closed_once_its_last_reader_ends(project: Project) -> None:
    from riverbed.serve.extracts import answer

    chart_data(project, "admin", "revenue_by_category")
    current = store.current(project)
    assert current is not None
    first = answer._OPEN[store.path_of(project, current.name)]
    first.users += 1  # a reader still on it
    for _ in range(2):  # two newer generations, each read: the first is superseded
        manifest = open_state(project)
        try:
            refresh(project, manifest, None)
        finally:
            manifest.close()
        chart_data(project, "admin", "revenue_by_category")
    assert first.superseded and first not in answer._OPEN.values()
    assert first.connection.execute("SELECT 1").fetchall() == [(1,)]  # its reader reads on
    answer._release(first)
    with pytest.raises(duckdb.Error):
        first.connection.execute("SELECT 1")


def test_customer_refunds_counts_from_the_extract_and_shows_personal_columns_as_masked(
    project: Project, source: Database
) -> None:
    """The top customers' numbers from the extract, their personal columns read for them
    alone through the gateway: the EU analyst's masks and row filter hold, both reads are
    audited as the analyst's."""
    with source.connect() as conn:
        people = conn.execute(
            "select customer_id, email, full_name, phone from shop.customers"
        ).fetchall()
    personal = [v for row in people for v in row[1:] if v]
    since = time.time()
    top = chart_data(project, "eu_analyst", "customer_refunds", limit=5)
    every = chart_data(project, "eu_analyst", "customer_refunds", extracts=False)
    assert top.meta["answered_from"] == "extract" and top.meta["limit"] == 5
    assert top.meta["rows_total"] == len(every.rows) > 5 and "limit" not in every.meta
    assert top.rows == every.rows[:5]
    ranked = sorted(
        every.rows, key=lambda r: (-r["refund_amount"], -r["refunds"], r["customer_id"])
    )
    assert every.rows == ranked and every.rows[0]["refund_amount"] > 0
    assert chart_data(project, "eu_analyst", "customer_refunds", extracts=False, limit=5).rows == (
        top.rows
    )
    shown = json.dumps([top.as_dict(), every.as_dict()], default=str).encode()
    assert not [v for v in personal if v.encode() in shown]
    assert {r["customer_region"] for r in every.rows} == {"Europe"}
    assert all(r["email"] and "@" not in r["email"] for r in top.rows)  # masked, not missing
    store_ = open_state(project)
    try:
        records = store_.audit.records(since=since)
    finally:
        store_.close()
    assert {r.principal for r in records} == {"eu_analyst"}
    read = {tuple(r.tables) for r in records}  # the counting, then the personal columns
    assert {("extract_customer_totals",), ("dim_customer",)} <= read
    # the admin (unmasked) reads what the warehouse holds, the analyst's mask is not on it
    clear = chart_data(project, "admin", "customer_refunds", limit=3)
    assert clear.rows == chart_data(project, "admin", "customer_refunds", extracts=False).rows[:3]
    assert not {r["email"] for r in clear.rows} & {r["email"] for r in top.rows}


def test_an_order_whose_items_span_two_days_is_counted_live_and_exactly(
    project: Project, config: Path, source: Database
) -> None:
    """Distinct orders summed over days would count such an order once per day: while the
    extract knows one (split_orders), those charts are answered live; undone, the extract
    answers again."""
    with source.connect() as conn:
        found = conn.execute(
            "select min(order_item_id) from shop.order_items where order_id = (select order_id"
            " from shop.order_items group by order_id having count(*) > 1 order by order_id"
            " limit 1)"
        ).fetchone()
    assert found is not None
    item = int(found[0])
    for shift, split in (("+", 1), ("-", 0)):
        moved = _change(
            source,
            config,
            f"update shop.order_items set created_at = created_at {shift} interval '1 day'"
            f" where order_item_id = {item}",
        )
        assert moved.code == 0, moved
        generation = store.current(project)
        assert generation is not None and not generation.full
        with duckdb.connect(str(store.path_of(project, generation.name)), read_only=True) as db:
            assert db.execute("SELECT COUNT(*) FROM split_orders").fetchone() == (split,)
        for name in ("transaction_counts", "customer_refunds", "seller_performance"):
            extract, live = _both(project, "admin", name, {})
            assert extract.rows == live.rows, name
            assert extract.meta["answered_from"] == ("live" if split else "extract"), name
        assert chart_data(project, "admin", "revenue_by_category").meta["answered_from"] == (
            "extract"
        )
        _orders_equal_the_source(project, source)


def _orders_equal_the_source(project: Project, source: Database) -> None:
    """Each seller's and each customer's distinct orders as the source counts them."""
    joins = (
        " from shop.order_items i join shop.orders o on o.order_id = i.order_id"
        " join shop.customers c on c.customer_id = o.customer_id"
        " join shop.products p on p.product_id = i.product_id"
        " join shop.sellers s on s.seller_id = i.seller_id"
    )
    with source.connect() as conn:
        sellers = conn.execute(f"select i.seller_id, count(distinct i.order_id){joins} group by 1")
        by_seller = dict(sellers.fetchall())
        customers = conn.execute(
            f"select n, count(*) from (select o.customer_id, count(distinct i.order_id) as n"
            f"{joins} group by 1) t group by 1"
        )
        by_count = dict(customers.fetchall())
    rows = chart_data(project, "admin", "seller_performance").rows
    assert {r["seller_id"]: r["orders"] for r in rows} == by_seller
    counts = chart_data(project, "admin", "transaction_counts").rows
    assert {r["orders"]: r["customers"] for r in counts} == by_count
