"""The guard on summing distinct orders over days: the live orders whose items span more than
one business day, kept in the extract's ``split_orders`` table (their ids).

A dataset's ``orders`` is each cell's own count distinct; rollup.py sums it over days (a
month's orders from its days', the seller table's from every day's) on the premise that an
order's items all share its day, as the shop writes them (an item's ``created_at`` is its
order's ``ordered_at``). A source that breaks it once (an item re-dated, an order amended a
day later) would have its order counted once per day. So while this table holds any order,
answer.py lets no distinct orders be summed (those charts are answered live, exact) and the
additive measures still come from the extract.

Built whole on a full build (one pass over the items' current view); a refresh redoes only
the orders of the items its new batches touch: an order's days change only when one of its
items is inserted, updated or deleted. A refresh by deltas has read every version of every
item of those orders already (delta.grains: whole orders, a superset), so it redoes them
from those, in the extract (``redo``); one by days reads them from the warehouse
(``update``). A batch withdrawn from the facts (``run --reprocess``; the refresh finds the
facts' rows fewer than it recorded, delta.consistent) took its rows away unseen: its orders
are in no new batch, so the table is built whole again, with the whole extract. The items read are the current
view's, a superset of the grain's (an item whose product is unknown counts here): the guard
errs towards live.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from riverbed.load.fact_current import current_rows
from riverbed.load.model import FactModel
from riverbed.load.warehouse import Warehouse
from riverbed.serve.extracts.changes import ITEM_FACT, Changed

TABLE = "split_orders"
_SPLIT = "SELECT order_id FROM {items} GROUP BY order_id HAVING MIN(date_key) <> MAX(date_key)"


def build(extract: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> None:
    """``split_orders`` made whole: every live order whose items span two days or more."""
    split = warehouse.query(_parsed(_SPLIT.format(items=f"{ITEM_FACT}_current")))
    extract.execute(f"CREATE OR REPLACE TABLE {TABLE} (order_id BIGINT)")
    _insert(extract, split)


def count(extract: duckdb.DuckDBPyConnection) -> int:
    """How many orders the extract knows to be split (0: distinct orders may be summed)."""
    found = extract.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()
    return int(found[0]) if found else 0


def update(
    extract: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    changed: Changed,
    facts: Sequence[FactModel],
) -> None:
    """Redo ``split_orders`` for the orders of the items in ``changed``'s new item batches."""
    batches = changed.batches.get(ITEM_FACT)
    fact = next((f for f in facts if f.name == ITEM_FACT), None)
    if not batches or fact is None:
        return
    # every version's order (a delete's row may not name it): an item's order never changes
    named = exp.In(
        this=exp.column("batch_id"), expressions=[exp.Literal.string(b) for b in batches]
    )
    items_of = f"SELECT order_item_id FROM {ITEM_FACT} WHERE {named.sql('duckdb')}"
    orders = f"SELECT order_id FROM {ITEM_FACT} WHERE order_item_id IN ({items_of})"
    touched = warehouse.query(_parsed(f"SELECT DISTINCT order_id FROM ({orders}) AS t"))
    items = current_rows(
        fact,
        ["order_id", "date_key"],
        keys_from=f"SELECT order_item_id FROM {ITEM_FACT} WHERE order_id IN ({orders})",
    )
    split = warehouse.query(_parsed(_SPLIT.format(items=f"({items.sql('duckdb')}) AS i")))
    extract.register("touched_orders", touched)
    try:
        extract.execute("BEGIN")
        extract.execute(
            f"DELETE FROM {TABLE} WHERE order_id IN (SELECT order_id FROM touched_orders)"
        )
        _insert(extract, split)
        extract.execute("COMMIT")
    finally:
        extract.unregister("touched_orders")


def redo(extract: duckdb.DuckDBPyConnection, versions: str, items: str) -> None:
    """``split_orders`` redone for the orders of the item versions in table ``versions``
    (every version of every item of those orders), whose current rows view ``items`` gives
    (delta.grains reads both for its whole orders: no pass over the warehouse here)."""
    extract.execute(f"DELETE FROM {TABLE} WHERE order_id IN (SELECT order_id FROM {versions})")
    split = _SPLIT.format(items=f'"{items}"')
    extract.execute(f"INSERT INTO {TABLE} {split}")


def _insert(extract: duckdb.DuckDBPyConnection, split: pa.Table) -> None:
    if split.num_rows:  # a PostgreSQL batch of no rows may have no type to insert from
        extract.register("split_now", split)
        try:
            extract.execute(f"INSERT INTO {TABLE} SELECT order_id FROM split_now")
        finally:
            extract.unregister("split_now")


def _parsed(sql: str) -> exp.Select:
    select = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(select, exp.Select)
    return select
