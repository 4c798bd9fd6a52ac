"""What a refresh must bring up to date: the keys whose grain rows the loads since the last
extract may have changed (changed_keys, for deltas), or the business days they fall on
(affected_days, when the days are summed again), found from the warehouse's history, not its
whole current state. A key set's range is spelled out beside its semi-join (``_among``): keys
grow with time, so the scan's zone maps skip the history's row groups.

Facts are event facts (one row per source change, ``batch_id`` naming the load), and the
datasets count the current truth, so a cell changes when any row it counts changes:

* an order item inserted, updated or deleted: the days of every version of that item (an
  update that moved its day empties the old day's cell and fills the new one);
* a return: the days of its item (the item measures sum the item's returns) and the request
  days of every version of the return;
* an order's status row (its customer): the days of the order's items and of their returns;
* a dimension attribute the datasets show (a product's name or category, a seller's name or
  region, a customer's region), found by comparing the dimensions' current rows with the
  copy the extract keeps of them (``snapshot_*``): the days of every item of the changed keys
  and of their returns. A new key counts as changed: items that arrived before their
  dimension row (inferred members) are recounted once it lands. A key whose changed
  attributes every dataset shows beside the key (a seller's name and region, a product's
  name) is no changed key: relabel.py labels its cells anew in place, with no pass over its
  history.

A TRUNCATE in a fact (a T row, which names no key) changes every cell: a full rebuild.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import sqlglot
from sqlglot import exp

from riverbed.lake.schema import OP
from riverbed.load.warehouse import Warehouse, capabilities

ITEM_FACT, STATUS_FACT, RETURN_FACT = "fact_order_items", "fact_order_status", "fact_returns"
FACTS = (ITEM_FACT, STATUS_FACT, RETURN_FACT)
# the dimension attributes the datasets show: snapshot table -> (dimension, key, attributes)
SNAPSHOTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "snapshot_product": ("dim_product", "product_id", ("name", "category")),
    "snapshot_seller": ("dim_seller", "seller_id", ("name", "region")),
    "snapshot_customer": ("dim_customer", "customer_id", ("region",)),
}


@dataclass
class Changed:
    """What changed since the extract: new batches per fact, dimension keys per snapshot."""

    batches: dict[str, list[str]] = field(default_factory=dict)
    keys: dict[str, list[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.batches.values()) or any(self.keys.values())


_KEPT_TABLES = itertools.count(1)  # _kept's temporary tables, numbered in a process


def snapshot_query(snapshot: str) -> exp.Select:
    dimension, key, attributes = SNAPSHOTS[snapshot]
    return _select(
        f"SELECT {', '.join((key, *attributes))} FROM {dimension} WHERE is_current_record"
    )


def affected_days(warehouse: Warehouse, changed: Changed) -> tuple[list[int], list[int]]:
    """(the item days, the return request days) whose cells ``changed`` touches."""
    items = _reached_items(warehouse, changed)
    if not items:
        return [], []
    item_set = " UNION ".join(items)
    item_days = _days(
        warehouse, f"SELECT DISTINCT date_key FROM {ITEM_FACT} WHERE order_item_id IN ({item_set})"
    )
    returns = [f"order_item_id IN ({item_set})"]
    if batches := changed.batches.get(RETURN_FACT):
        returns.append(
            f"return_id IN (SELECT return_id FROM {RETURN_FACT} WHERE {_in('batch_id', batches)})"
        )
    return_days = _days(
        warehouse, f"SELECT DISTINCT date_key FROM {RETURN_FACT} WHERE {' OR '.join(returns)}"
    )
    return item_days, return_days


def changed_keys(warehouse: Warehouse, changed: Changed) -> dict[str, str]:
    """fact table -> a condition on its rows: those of the keys the grains may read
    differently now. Every item a change reaches (as affected_days, and the items of every
    version of a changed return: a return moved to another item changes both items' sums),
    the returns of those items and the changed returns, and the orders of those items. Each
    grain row of a changed cell is one of these keys' (delta.py).

    Whole orders: the items are widened to every item of those orders (any version's order:
    an item that moved between orders brings both), so each order the keys hold is held with
    all its items, before and now, as a distinct count of orders needs (delta.py), and
    split_orders too (an order's days are all its items')."""
    items = _reached_items(warehouse, changed)
    returned = ""
    if batches := changed.batches.get(RETURN_FACT):
        returned = f" OR {_in('batch_id', batches)}"
    item_set = " UNION ".join(items) or f"SELECT order_item_id FROM {ITEM_FACT} WHERE FALSE"
    # each key set kept in a temporary table of this session (the warehouse is not written),
    # so the next reads it by a semi-join with its range spelled out, and no set is computed
    # again inside the next (nested, every step evaluated each one before it once more)
    reached = _kept(warehouse, "refresh_reached_items", "order_item_id", item_set)
    orders = _kept(
        warehouse,
        "refresh_orders",
        "order_id",
        f"SELECT DISTINCT order_id FROM {ITEM_FACT} WHERE {reached}",
    )
    # every version of their items: a delete's row may not name its order
    of_items = _kept(
        warehouse,
        "refresh_items",
        "order_item_id",
        f"SELECT DISTINCT order_item_id FROM {ITEM_FACT} WHERE {orders}",
    )
    # unbounded: the caller reads the items first and bounds it by their orders (between)
    return {
        ITEM_FACT: of_items,
        STATUS_FACT: f"order_id IN (SELECT order_id FROM {ITEM_FACT} WHERE {of_items})",
        RETURN_FACT: f"return_id IN (SELECT return_id FROM {RETURN_FACT} WHERE {of_items}{returned})",
    }


@dataclass(frozen=True)
class FactRows:
    """Each fact's rows and those of the new batches (fact -> (rows, new)), and whether a
    new batch holds a TRUNCATE."""

    counts: dict[str, tuple[int, int]]
    truncated: bool


def fact_rows(warehouse: Warehouse, changed: Changed) -> FactRows:
    """What ``changed``'s batches add to each fact, in one query: a refresh waits on it."""
    values = []
    for fact in FACTS:
        values.append(f"(SELECT COUNT(*) FROM {fact}) AS n_{fact}")
        batches = changed.batches.get(fact)
        # a scan of its own: the new batches' rows are a filter the zone maps narrow to the
        # appended row groups, which a FILTER inside the whole count is not
        new = f"FROM {fact} WHERE {_in('batch_id', batches)}" if batches else None
        values.append(f"(SELECT COUNT(*) {new}) AS new_{fact}" if new else f"0 AS new_{fact}")
        values.append(
            f"(SELECT COUNT(*) {new} AND {OP} = 'T') AS t_{fact}" if new else f"0 AS t_{fact}"
        )
    row = read(warehouse, f"SELECT {', '.join(values)}").to_pylist()[0]
    counts = {fact: (int(row[f"n_{fact}"]), int(row[f"new_{fact}"] or 0)) for fact in FACTS}
    return FactRows(counts, any(row[f"t_{fact}"] for fact in FACTS))


def _reached_items(warehouse: Warehouse, changed: Changed) -> list[str]:
    """SELECTs of the order item ids whose cells may have changed: those _changed_items
    names and the items of every version of a changed return (a return moved to another item
    changes both items' sums, on both items' days)."""
    items = _changed_items(warehouse, changed)
    if batches := changed.batches.get(RETURN_FACT):
        items.append(
            f"SELECT order_item_id FROM {RETURN_FACT} WHERE return_id IN"
            f" (SELECT return_id FROM {RETURN_FACT} WHERE {_in('batch_id', batches)})"
        )
    return items


def _changed_items(warehouse: Warehouse, changed: Changed) -> list[str]:
    """SELECTs of the order item ids whose cells may have changed."""
    found = []
    if batches := changed.batches.get(ITEM_FACT):
        found.append(f"SELECT order_item_id FROM {ITEM_FACT} WHERE {_in('batch_id', batches)}")
    if batches := changed.batches.get(RETURN_FACT):
        found.append(f"SELECT order_item_id FROM {RETURN_FACT} WHERE {_in('batch_id', batches)}")
    # one scan per condition, not one of them ORed: the new batches' rows are the appended
    # row groups (zone maps), and the customers' orders a scan of that column alone
    orders = []
    if batches := changed.batches.get(STATUS_FACT):
        orders.append(f"SELECT order_id FROM {STATUS_FACT} WHERE {_in('batch_id', batches)}")
    if customers := changed.keys.get("snapshot_customer"):
        orders.append(f"SELECT order_id FROM {STATUS_FACT} WHERE {_in('customer_id', customers)}")
    if orders:
        # kept: the items' set and its range read it once each, not each running it again
        changed_orders = _kept(
            warehouse, "refresh_changed_orders", "order_id", " UNION ".join(orders)
        )
        found.append(f"SELECT order_item_id FROM {ITEM_FACT} WHERE {changed_orders}")
    keyed = [
        _in(column, keys)
        for snapshot, column in (
            ("snapshot_product", "product_id"),
            ("snapshot_seller", "seller_id"),
        )
        if (keys := changed.keys.get(snapshot))
    ]
    if keyed:
        found.append(f"SELECT order_item_id FROM {ITEM_FACT} WHERE {' OR '.join(keyed)}")
    return found


def _among(warehouse: Warehouse, column: str, select: str) -> str:
    """``column IN (select)``, with the range of the values ``select`` returns spelled out:
    a scan's zone maps then skip the row groups outside it (keys grow with time, so a
    change's keys are the recent row groups'), which a semi-join alone does not."""
    bounds = read(
        warehouse, f"SELECT MIN({column}) AS lo, MAX({column}) AS hi FROM ({select}) AS k"
    )
    lo, hi = bounds.column(0)[0].as_py(), bounds.column(1)[0].as_py()
    return f"{between(column, lo, hi)} AND {column} IN ({select})"


def _kept(warehouse: Warehouse, table: str, column: str, select: str) -> str:
    """``column IN`` the values of ``select``, kept in the session's temporary ``table``, with
    their range spelled out (see _among)."""
    # numbered: a refresh may gather the keys twice in one session (changed_keys and
    # affected_days), and a DROP of the name could reach a warehouse table of that name
    table = f"{table}_{next(_KEPT_TABLES)}"
    warehouse.execute(_written(warehouse, f"CREATE TEMPORARY TABLE {table} AS {select}"))
    return _among(warehouse, column, f"SELECT {column} FROM {table}")


def between(column: str, lo: object, hi: object) -> str:
    """``column BETWEEN lo AND hi``, or FALSE when there are no values (``lo`` None)."""
    if lo is None:
        return "FALSE"
    return exp.to_column(column).between(_literal(lo), _literal(hi)).sql(dialect="duckdb")


def _days(warehouse: Warehouse, sql: str) -> list[int]:
    return sorted(int(d) for d in read(warehouse, sql).column(0).to_pylist() if d)


def _in(column: str, values: Sequence[str] | Sequence[int] | Iterable[object]) -> str:
    """``column IN (...)`` with ``values`` as SQL literals (batch ids and keys are ours, and
    still never pasted raw: each goes through sqlglot's literal)."""
    literals = [_literal(v) for v in values]
    return exp.In(this=exp.column(column), expressions=literals).sql(dialect="duckdb")


def _literal(value: object) -> exp.Expr:
    return exp.Literal.number(value) if isinstance(value, int) else exp.Literal.string(str(value))


def read(warehouse: Warehouse, sql: str) -> pa.Table:
    """The rows of ``sql``, written in DuckDB's dialect: sent as written to a DuckDB
    warehouse (parsing it costs more than running it: these are nested key sets on a
    refresh's path), else parsed for sqlglot to write it in the warehouse's dialect."""
    return warehouse.query(_written(warehouse, sql))


def _written(warehouse: Warehouse, sql: str) -> str | exp.Expr:
    """``sql`` (DuckDB's dialect) as written, or parsed for the warehouse's own dialect."""
    if capabilities(warehouse.dialect).duckdb_sql:
        return sql
    return sqlglot.parse_one(sql, read="duckdb")


def _select(sql: str) -> exp.Select:
    parsed = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(parsed, exp.Select)
    return parsed
