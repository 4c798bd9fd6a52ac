"""An extract refreshed by deltas (riverbed.serve.extracts.delta) equals one rebuilt whole,
after each kind of change a cell can see: an item updated onto another day, deleted, added,
a return refunded or moved to another item, an order moved to another customer, a product's
category and a customer's region changed (counted again), a seller and a product renamed
(relabelled in place), an item whose product arrives after it (inferred
member), an order gaining an item in a cell it was not in and losing its last item in one,
an item moved to another order (the distinct orders, kept by deltas too); and a withdrawn batch, which deltas cannot read
the state before from, has the refresh sum the touched days again, equal too, its
split_orders as well. On a small DuckDB warehouse written directly in the warehouse's schema
(as bench/serve.py writes its 10M rows), no source database.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from riverbed.config import Project
from riverbed.config.loader import demo_config_text, load_project
from riverbed.load.fact_current import current_view_ddl
from riverbed.load.model import FactModel, warehouse_model
from riverbed.serve.extracts import changes, delta, split_orders, store
from riverbed.serve.extracts import refresh as refresh_module
from riverbed.serve.extracts.datasets import (
    CUSTOMER_ORDERS,
    CUSTOMERS,
    DATASETS,
    RETURNED,
    SALES,
    SELLER_ORDERS,
    Dataset,
)
from riverbed.serve.extracts.refresh import Refreshed, refresh
from riverbed.state import open_state
from riverbed.state.records import LoadBatch

FACTS = {
    "fact_order_items": ("order_items", ("order_item_id",)),
    "fact_order_status": ("orders", ("order_id",)),
    "fact_returns": ("returns", ("return_id",)),
}
DAY = 20260301  # the first of the facts' 20 days (dim_date begins a month before)
BUILD = f"""
CREATE TABLE dim_date AS SELECT CAST(strftime(d, '%Y%m%d') AS INTEGER) AS date_key,
  CAST(d AS DATE) AS date, year(d) AS year, month(d) AS month
FROM range(DATE '2026-02-01', DATE '2026-03-21', INTERVAL 1 DAY) t(d);
CREATE TABLE dim_product AS SELECT i AS product_id, 'product ' || i AS name,
  'category ' || (i % 3) AS category, TRUE AS is_current_record FROM range(1, 7) t(i);
CREATE TABLE dim_seller AS SELECT i AS seller_id, 'seller ' || i AS name,
  (['Europe', 'Asia Pacific'])[1 + i % 2] AS region, TRUE AS is_current_record
FROM range(1, 4) t(i);
CREATE TABLE dim_customer AS SELECT i AS customer_id, 'name ' || i AS full_name,
  'c' || i || '@example.com' AS email, '+1555' || i AS phone,
  (['Europe', 'North America', 'Asia Pacific'])[1 + i % 3] AS region, TRUE AS is_current_record
FROM range(1, 6) t(i);
CREATE TABLE fact_order_status AS SELECT i AS order_id, 1 + i % 5 AS customer_id,
  'delivered' AS status, {DAY} + i % 20 AS date_key, 'I' AS _op, i AS _lsn, 0 AS _seq,
  'b0' AS batch_id, now() AS event_ts FROM range(1, 41) t(i);
CREATE TABLE fact_order_items AS SELECT i AS order_item_id, 1 + (i - 1) // 3 AS order_id,
  1 + i % 6 AS product_id, 1 + i % 3 AS seller_id, 1 + i % 4 AS quantity,
  CAST(1 + i % 7 AS DECIMAL(12, 2)) AS unit_price, {DAY} + ((i - 1) // 3) % 20 AS date_key,
  'I' AS _op, 1000 + i AS _lsn, 0 AS _seq, 'b0' AS batch_id, now() AS event_ts
FROM range(1, 121) t(i);
CREATE TABLE fact_returns AS SELECT i // 4 AS return_id, i AS order_item_id,
  (['damaged', 'wrong size'])[1 + i % 2] AS reason,
  (['requested', 'refunded'])[1 + i % 2] AS status,
  CAST(i % 5 AS DECIMAL(12, 2)) AS refund_amount, {DAY} + (i // 4) % 20 AS date_key,
  'I' AS _op, 2000 + i AS _lsn, 0 AS _seq, 'b0' AS batch_id, now() AS event_ts
FROM range(4, 121, 4) t(i);
"""
# each a change as SQL over the warehouse, ``{b}`` its batch id and ``{lsn}`` a log position
# above every earlier one: new fact rows are appended as the facts state appends them
CHANGES = {
    "item moved to another day": "INSERT INTO fact_order_items SELECT order_item_id, order_id,"
    " product_id, seller_id, quantity + 2, unit_price, date_key + 5, 'U', {lsn}, 0, '{b}', now()"
    " FROM fact_order_items WHERE order_item_id IN (4, 5)",
    "item deleted": "INSERT INTO fact_order_items SELECT order_item_id, order_id, product_id,"
    " seller_id, quantity, unit_price, date_key, 'D', {lsn}, 0, '{b}', now()"
    " FROM fact_order_items WHERE order_item_id = 8",
    "item added": "INSERT INTO fact_order_items VALUES (500, 2, 3, 1, 9, 4.50, {day}, 'I',"
    " {lsn}, 0, '{b}', now())",
    "return refunded": "INSERT INTO fact_returns SELECT return_id, order_item_id, reason,"
    " 'refunded', 7.25, date_key, 'U', {lsn}, 0, '{b}', now() FROM fact_returns"
    " WHERE return_id = 2",
    "return moved to another item": "INSERT INTO fact_returns SELECT return_id, 13, reason,"
    " status, refund_amount, date_key, 'U', {lsn}, 0, '{b}', now() FROM fact_returns"
    " WHERE return_id = 3",
    "order moved to another customer": "INSERT INTO fact_order_status SELECT order_id, 5,"
    " 'returned', date_key, 'U', {lsn}, 0, '{b}', now() FROM fact_order_status WHERE order_id = 6",
    "product category changed": "UPDATE dim_product SET category = 'moved' WHERE product_id = 2",
    "customer region changed": "UPDATE dim_customer SET region = 'Latin America'"
    " WHERE customer_id = 1",
    # relabelled in place (relabel.py): every dataset showing them holds the key
    "seller renamed and moved": "UPDATE dim_seller SET name = 'seller two', region = 'Africa'"
    " WHERE seller_id = 2",
    "product renamed": "UPDATE dim_product SET name = 'renamed' WHERE product_id = 4",
    "item before its product": "INSERT INTO fact_order_items VALUES (501, 3, 99, 2, 1, 3.00,"
    " {day}, 'I', {lsn}, 0, '{b}', now())",
    "its product lands": "INSERT INTO dim_product VALUES (99, 'late', 'category 9', TRUE)",
    # a customer's first month moves (extract_cohorts: their cells taken away and added again)
    "an order a month earlier": "INSERT INTO fact_order_status VALUES (41, 2, 'delivered',"
    " 20260210, 'I', {lsn}, 0, '{b}', now()); INSERT INTO fact_order_items VALUES (502, 41, 1,"
    " 1, 1, 2.00, 20260210, 'I', {lsn}, 0, '{b}', now())",
    "the earlier order's item deleted": "INSERT INTO fact_order_items SELECT order_item_id,"
    " order_id, product_id, seller_id, quantity, unit_price, date_key, 'D', {lsn}, 0, '{b}',"
    " now() FROM fact_order_items WHERE order_item_id = 502",
    # distinct orders: order 42 joins the cells of day 2 where orders 2 and 22 (customer 3,
    # Europe) are, seller 1's, then seller 2's (one more order there), then a second item in
    # seller 2's (the same orders, one more item)
    "a new order of one seller": "INSERT INTO fact_order_status VALUES (42, 3, 'delivered',"
    f" {DAY + 1}, 'I', {{lsn}}, 0, '{{b}}', now()); INSERT INTO fact_order_items VALUES (503,"
    f" 42, 1, 1, 1, 2.00, {DAY + 1}, 'I', {{lsn}}, 0, '{{b}}', now())",
    "the order gains an item in another seller's cell": "INSERT INTO fact_order_items VALUES"
    f" (504, 42, 2, 2, 1, 3.00, {DAY + 1}, 'I', {{lsn}}, 0, '{{b}}', now())",
    "the order gains a second item in that cell": "INSERT INTO fact_order_items VALUES"
    f" (505, 42, 5, 2, 2, 1.50, {DAY + 1}, 'I', {{lsn}}, 0, '{{b}}', now())",
    "the order's first item in a cell deleted": "INSERT INTO fact_order_items SELECT"
    " order_item_id, order_id, product_id, seller_id, quantity, unit_price, date_key, 'D',"
    " {lsn}, 0, '{b}', now() FROM fact_order_items WHERE order_item_id = 504",
    # order 4's only item of seller 2: the order leaves that cell, seller 3's has it twice
    "an order's last item in a cell moved to another seller": "INSERT INTO fact_order_items"
    " SELECT order_item_id, order_id, product_id, 3, quantity, unit_price, date_key, 'U',"
    " {lsn}, 0, '{b}', now() FROM fact_order_items WHERE order_item_id = 10",
    # item 7 leaves order 3 for order 5 (on another day: order 5 now spans two)
    "an item moved to another order": "INSERT INTO fact_order_items SELECT order_item_id, 5,"
    " product_id, seller_id, quantity, unit_price, date_key, 'U', {lsn}, 0, '{b}', now()"
    " FROM fact_order_items WHERE order_item_id = 7",
    # order 26 joins order 6 (moved to customer 5 above) on their day: customer 2's cell of
    # that day loses its last order
    "an order moved to a customer with orders that day": "INSERT INTO fact_order_status"
    " SELECT order_id, 5, status, date_key, 'U', {lsn}, 0, '{b}', now() FROM fact_order_status"
    " WHERE order_id = 26",
}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    (tmp_path / "riverbed.yaml").write_text(demo_config_text())
    (tmp_path / ".riverbed").mkdir(mode=0o700)
    with duckdb.connect(str(_warehouse(tmp_path))) as con:
        con.execute(BUILD)
        for name, (source, keys) in FACTS.items():
            columns = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
            view = current_view_ddl(FactModel(source, name, keys, ()), columns)
            con.execute(view.sql("duckdb"))
    project = load_project(tmp_path / "riverbed.yaml")
    _loaded(project, "b0")
    first = _refresh(project)
    assert first.way == "whole"
    yield project


def test_each_change_refreshed_by_deltas_equals_a_rebuild(project: Project) -> None:
    for number, (change, sql) in enumerate(CHANGES.items(), start=1):
        _change(project, number, sql)
        refreshed = _refresh(project)
        assert (refreshed.way, refreshed.by_days) == ("deltas", ()), change
        assert _tables(project, refreshed) == _tables(project, _rebuilt(project)), change


def test_several_changes_in_one_run_by_deltas_equal_a_rebuild(project: Project) -> None:
    for sql in CHANGES.values():
        _change(project, 1, sql, record=False)
    _loaded(project, "b1")
    refreshed = _refresh(project)
    assert (refreshed.way, refreshed.by_days) == ("deltas", ()) and refreshed.cells > 0
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_a_seller_renamed_is_relabelled_in_place_with_no_day_counted_again(
    project: Project,
) -> None:
    """A refresh after a rename costs the seller's cells, not their history: no day of it is
    summed again from the warehouse, and the extract equals one rebuilt."""
    _change(project, 1, CHANGES["seller renamed and moved"], record=False)
    refreshed = _refresh(project)
    assert (refreshed.way, refreshed.days) == ("deltas", 0) and refreshed.cells > 0
    path = store.path_of(project, refreshed.generation.name)
    with duckdb.connect(str(path), read_only=True) as extract:
        shown = extract.execute(
            f"SELECT DISTINCT seller, seller_region FROM {SALES.name} WHERE seller_id = 2"
        ).fetchall()
        held = extract.execute(f"SELECT COUNT(*) FROM {SALES.name} WHERE seller_id = 2").fetchall()
    assert shown == [("seller two", "Africa")]
    # what the rename cost is reported (metrics extract_cells_relabelled and _seconds)
    assert refreshed.relabelled is not None and refreshed.relabelled.cells >= held[0][0] > 0
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_refreshes_that_leave_deleted_cells_and_those_that_reclaim_them_stay_exact(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most refreshes leave the cells they replaced as deleted rows (their checkpoint merges
    no row groups); every VACUUM_EVERY-th may reclaim them. A chain of both kinds, each
    generation made from the last, equals a rebuild."""
    monkeypatch.setattr(refresh_module, "VACUUM_EVERY", 3)
    since = []
    for number, sql in enumerate(CHANGES.values(), start=1):
        _change(project, number, sql)
        refreshed = _refresh(project)
        assert refreshed.way == "deltas"
        since.append(refreshed.generation.unvacuumed)
    assert since == [(n % 3) for n in range(1, len(CHANGES) + 1)]
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_distinct_orders_kept_by_deltas_while_an_order_spans_two_days(project: Project) -> None:
    """The months' distinct orders are their days' summed, as a full build stores them, even
    while an order spans two days (split_orders holds it and no summed orders are read):
    deltas keep that sum, equal to a rebuild's, through the order's split and its mending."""
    _change(project, 1, CHANGES["item moved to another day"])  # order 2 over two days
    refreshed = _refresh(project)
    assert (refreshed.way, refreshed.by_days, _split(project, refreshed)) == ("deltas", (), [2])
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))
    _change(
        project,
        2,
        "INSERT INTO fact_order_items SELECT order_item_id, order_id, product_id, seller_id,"
        " quantity, unit_price, date_key + 5, 'U', {lsn}, 0, '{b}', now() FROM fact_order_items"
        " WHERE order_item_id = 6",
    )  # its third item joins the other two: one day again
    refreshed = _refresh(project)
    assert (refreshed.way, refreshed.by_days, _split(project, refreshed)) == ("deltas", (), [])
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_a_withdrawn_batch_has_the_extract_built_whole(project: Project) -> None:
    """Deltas read the state before a run from the facts less its batches: a batch deleted
    from a fact (``run --reprocess`` withdraws one and loads its replacement) leaves that
    state unreadable, and its keys named by no new batch."""
    _change(project, 1, CHANGES["item moved to another day"])
    assert _refresh(project).way == "deltas"
    with duckdb.connect(str(_warehouse(project.root))) as con:
        con.execute("DELETE FROM fact_order_items WHERE batch_id = 'b1'")
    _change(project, 2, CHANGES["item moved to another day"].replace("+ 2", "+ 3"))
    refreshed = _refresh(project)
    assert refreshed.way == "whole"
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_a_withdrawn_batch_with_no_new_one_is_not_kept_counted(project: Project) -> None:
    """A batch withdrawn and none loaded since: no new batch names its keys, and its rows
    must leave the extract all the same."""
    _change(project, 1, CHANGES["item moved to another day"])
    counted = _tables(project, _refresh(project))
    with duckdb.connect(str(_warehouse(project.root))) as con:
        con.execute("DELETE FROM fact_order_items WHERE batch_id = 'b1'")
    refreshed = _refresh(project)
    assert refreshed.way == "whole"
    assert _tables(project, refreshed) != counted
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_a_withdrawn_batch_has_split_orders_made_again(project: Project) -> None:
    """split_orders is redone for the orders of a refresh's new items: the orders of a
    withdrawn batch's items, gone from the facts, are found by no new batch."""
    _change(project, 1, CHANGES["item moved to another day"])  # order 2 now over two days
    assert _split(project, _refresh(project)) == [2]
    with duckdb.connect(str(_warehouse(project.root))) as con:
        con.execute("DELETE FROM fact_order_items WHERE batch_id = 'b1'")
    # other orders of the same two days: the days summed again are those b1 touched too
    _change(
        project,
        2,
        "INSERT INTO fact_order_items SELECT order_item_id, order_id, product_id, seller_id,"
        " quantity + 1, unit_price, date_key, 'U', {lsn}, 0, '{b}', now() FROM fact_order_items"
        " WHERE order_item_id IN (64, 79)",
    )
    refreshed = _refresh(project)
    assert refreshed.way == "whole" and _split(project, refreshed) == []
    assert _tables(project, refreshed) == _tables(project, _rebuilt(project))


def test_a_dataset_holding_a_distinct_count_is_left_to_its_days(project: Project) -> None:
    """A count distinct is not additive (an order counted in a cell and again in its delta):
    that dataset takes the days path, the others of its grain keep their deltas. Distinct
    orders are kept by deltas (the keys taken whole orders), as is every dataset of the
    extract."""
    distinct = Dataset("extract_distinct", CUSTOMERS.relation, CUSTOMERS.columns, ("customers",))
    facts = warehouse_model(project.config).facts
    datasets = [SALES, distinct, SELLER_ORDERS, CUSTOMER_ORDERS, RETURNED]
    assert delta.maintained(datasets, facts) == [SALES, SELLER_ORDERS, CUSTOMER_ORDERS, RETURNED]
    bases = [d for d in DATASETS if d.rollup_of is None]
    assert delta.maintained(bases, facts) == bases


_positions = itertools.count(10_000, 10)


def _change(project: Project, number: int, sql: str, record: bool = True) -> None:
    batch = f"b{number}"
    with duckdb.connect(str(_warehouse(project.root))) as con:
        con.execute(sql.format(b=batch, lsn=next(_positions), day=DAY + 19))
    if record:
        _loaded(project, batch)


def _loaded(project: Project, batch: str) -> None:
    time.sleep(0.01)  # a later loaded_at than the extract's watermark
    manifest = open_state(project)
    try:
        manifest.loads.record_loaded(
            LoadBatch(batch_id=batch, table=s, target=t, rows=0, seconds=0, loaded_at=time.time())
            for t, (s, _) in FACTS.items()
        )
    finally:
        manifest.close()


def _refresh(project: Project) -> Refreshed:
    manifest = open_state(project)
    try:
        done = refresh(project, manifest, None)
    finally:
        manifest.close()
    assert done is not None
    return done


def _rebuilt(project: Project) -> Refreshed:
    """A whole build of the same warehouse (the pointer removed: no previous generation)."""
    (store.folder(project) / store.POINTER).unlink()
    rebuilt = _refresh(project)
    assert rebuilt.way == "whole"
    return rebuilt


def _tables(project: Project, refreshed: Refreshed) -> dict[str, list[tuple[Any, ...]]]:
    path = store.path_of(project, refreshed.generation.name)
    with duckdb.connect(str(path), read_only=True) as extract:
        return {
            name: sorted(extract.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
            # the snapshots too: the next refresh's deltas read them as the state before
            for name in (*(d.name for d in DATASETS), split_orders.TABLE, *changes.SNAPSHOTS)
        }


def _split(project: Project, refreshed: Refreshed) -> list[int]:
    path = store.path_of(project, refreshed.generation.name)
    with duckdb.connect(str(path), read_only=True) as extract:
        rows = extract.execute(f"SELECT order_id FROM {split_orders.TABLE} ORDER BY 1")
        return [int(r[0]) for r in rows.fetchall()]


def _warehouse(root: Path) -> Path:
    return root / ".riverbed" / "warehouse.duckdb"
