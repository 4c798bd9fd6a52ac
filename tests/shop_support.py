"""The demo shop with a history the dashboards can show, for the tests that read charts
(test_semantic, test_serve_browser): one shop seeded with three months, captured by a project
per warehouse (DuckDB and, when asked, PostgreSQL), then given live traffic (orders, status
changes, returns requested, approved and refunded) and changes of our own that the facts must
not double count (order items updated and deleted, returns refunded), captured and run again.

The demo policy's admin and eu_analyst get passwords (and the analyst an API token) from
{file:} secrets, so the web app can log them in.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from test_e2e import SEED, cli, demo_project

from conftest import Database
from riverbed.config import Project
from riverbed.config.loader import load_project

PASSWORDS = {"admin": "admin-dashboard-pw", "eu_analyst": "eu-dashboard-pw"}
EU_TOKEN = "eu-dashboard-token-0123456789"

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


def with_logins(config: Path) -> Path:
    """``config``'s admin and eu_analyst with a password each, the analyst with a token."""
    data = yaml.safe_load(config.read_text())
    principals = data["governance"]["principals"]
    secrets = {**PASSWORDS, "eu_token": EU_TOKEN}
    for name, value in secrets.items():
        path = config.parent / f"{name}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
    for name in PASSWORDS:
        principals[name]["password"] = {"file": str(config.parent / f"{name}.secret")}
    principals["eu_analyst"]["token"] = {"file": str(config.parent / "eu_token.secret")}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def shop_projects(
    home: Path, source: Database, warehouse_db: Database | None = None
) -> dict[str, Project]:
    """The shop in ``source`` with its history, loaded into a DuckDB project under home/duck
    (and a PostgreSQL one under home/pg when ``warehouse_db`` is given); by engine."""
    both = {"duckdb": with_logins(demo_project(home / "duck", source))}
    if warehouse_db is not None:
        both["postgres"] = with_logins(demo_project(home / "pg", source, warehouse_db))
    seed_and_change(source, both)
    return {name: load_project(config) for name, config in both.items()}


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
