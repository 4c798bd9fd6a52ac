"""Transactions that strain the pipeline, under live traffic: one of BIG_ROWS rows (200,000
in CI instead of the issue's 1,000,000: it takes the same paths, one transaction spread over
many raw files and batches, and a million costs minutes on this 2-core machine;
RIVERBED_CHAOS_BIG_ROWS sets it), a transaction held open across many runs while small ones
commit around it, and an ALTER TABLE of a captured table (a column added) committed while
capture is down. Each lands once, by its commit order; the warehouse ends exact."""

from __future__ import annotations

import os
import time

from chaos.conftest import MakeChaos
from chaos.frame import assert_exact
from conftest import Database

BIG_ROWS = int(os.environ.get("RIVERBED_CHAOS_BIG_ROWS", "200000"))
HELD_OPEN_RUNS = 4  # runs that succeed while the long transaction is open

BIG_INSERT = """
insert into shop.order_items (order_id, product_id, seller_id, quantity, unit_price)
select o.order_id, p.product_id, p.seller_id, 1 + (o.order_id + p.product_id + g) % 3, p.price
from (select order_id from shop.orders order by order_id limit 500) o
cross join (select product_id, seller_id, price from shop.products order by product_id limit 50) p
cross join generate_series(1, {times}) g
"""  # 25,000 rows a time


def test_a_big_a_long_and_an_altering_transaction(
    database: Database, make_chaos: MakeChaos
) -> None:
    chaos = make_chaos(database)
    chaos.start()
    chaos.flowing()

    # a transaction open across many runs, writing before and after they pass
    with database.connect() as long:
        long.execute("update shop.customers set city = 'Held Open' where customer_id % 7 = 0")
        since = time.time()
        chaos.wait(
            f"{HELD_OPEN_RUNS} runs while a transaction is open",
            lambda: chaos.runs_succeeded_since(since) >= HELD_OPEN_RUNS,
            180,
        )
        long.execute("update shop.sellers set city = 'Held Open' where seller_id % 3 = 0")
        long.commit()

    # capture down: a column added to a captured table, rows using it, the big transaction
    with chaos.held("capture") as capture:
        capture.current.interrupt()
        with database.connect(autocommit=True) as conn:
            conn.execute("alter table shop.products add column ean text")
            conn.execute("update shop.products set ean = 'ean-' || product_id, price = price + 1")
            conn.execute(BIG_INSERT.format(times=max(1, BIG_ROWS // 25_000)))
    chaos.flowing()
    chaos.end_workload()

    chaos.catch_up(timeout=300)
    chaos.stop()
    chaos.no_manual_step()
    assert_exact(chaos.config, database)
