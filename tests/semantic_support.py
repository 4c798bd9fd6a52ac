"""The shop the semantic layer's tests count (test_semantic.py, test_extracts.py): seeded,
captured and run, then given live traffic and changes of our own that the facts must not
double count, captured and run again."""

from __future__ import annotations

from pathlib import Path

from test_e2e import SEED, cli

from conftest import Database

# changes the facts must count once, with their latest values, or not at all
OWN_CHANGES = (
    "update shop.order_items set quantity = quantity + 3 where order_item_id in"
    " (select order_item_id from shop.order_items order by order_item_id limit 7)",
    "update shop.order_items set unit_price = unit_price + 1.25 where order_item_id in"
    " (select order_item_id from shop.order_items order by order_item_id desc limit 7)",
    "delete from shop.order_items where order_item_id in (select i.order_item_id"
    " from shop.order_items i where not exists (select 1 from shop.returns r"
    " where r.order_item_id = i.order_item_id) order by i.order_item_id limit 9 offset 20)",
    "update shop.returns set status = 'refunded', refund_amount = 1.00 where return_id in"
    " (select return_id from shop.returns where status in ('requested', 'approved')"
    " order by return_id limit 5)",
)


def seed_and_change(source: Database, configs: dict[str, Path]) -> None:
    """Seed the shop in ``source`` (once), run each project of ``configs`` on it, then give it
    live traffic and OWN_CHANGES and run each again."""
    first = next(iter(configs.values()))
    cli(first, "shop", "seed", *SEED, "--months", "3", "--seed", "7", "-q")
    for config in configs.values():
        cli(config, "capture", "--once", "-q")
        cli(config, "run", "--once", "-q")
    workload = ("--rate", "400", "--duration", "6", "--dirty-ratio", "0", "--large-every", "1000")
    cli(first, "shop", "run", *workload, "--seed", "3", "--json", "-q")
    with source.connect(autocommit=True) as conn:
        for statement in OWN_CHANGES:
            conn.execute(statement)
    for config in configs.values():
        cli(config, "capture", "--once", "-q")
        cli(config, "run", "--once", "-q")
