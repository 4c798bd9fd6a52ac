#!/usr/bin/env python3
"""What governance costs a query (riverbed.govern), three figures, same run:

1. The gateway's overhead per query: ``govern`` (parse, check, rewrite) on a catalog the size
   of the demo's warehouse (12 tables of 15 columns) for a principal with a row filter and
   masks, over a mix of queries (a point lookup, a three-table join, a CTE, a UNION, an
   aggregate, a correlated subquery). p50 and p95 over ``--repeat`` rounds. Target: p95 < 5 ms.
2. A governed aggregate over ``--rows`` fact rows (default 1,000,000) on DuckDB, for a principal
   whose row filter keeps one region in four and who sees ``card`` masked (show_last_4), the
   aggregate counting distinct masked cards per day; against the same query run ungoverned (a)
   with the same filter and mask written by hand into it, over the same table: what the
   gateway's rewrite costs; (b) on a table holding just those rows, stored masked: what
   filtering and masking at query time cost against pre-computing them; and the same
   governed query answered from the principal's fresh governed copy (riverbed.serve.copies),
   which is that pre-computing. Best of nine interleaved rounds. Target: within 1.2x.
3. The publish step's refresh of the copies of 2 security contexts after a 10,000-row append
   to the fact, against the append itself (and a rebuild of both, what a rewrite costs).

Run:

    python bench/govern.py
    python bench/govern.py --rows 200000 --repeat 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from _server import command_line, machine

from riverbed.config.governance import (
    GovernanceConfig,
    GrantConfig,
    PrincipalConfig,
    RoleConfig,
)
from riverbed.config.loader import Project
from riverbed.config.models import RiverbedConfig
from riverbed.govern.gateway import Catalog, govern
from riverbed.govern.policy import Policy

QUERIES = [
    "select * from dim_customer where customer_id = 42",
    "select c.region, p.category, sum(f.amount) as revenue from fact_sales f"
    " join dim_customer c on c.customer_id = f.customer_id"
    " join dim_product p on p.product_id = f.product_id group by 1, 2 order by 3 desc limit 10",
    "with recent as (select * from fact_sales where day > date '2024-01-01')"
    " select card, count(*) from recent group by card having count(*) > 2",
    "select email from dim_customer union all select email from dim_supplier",
    "select day, count(distinct card) as cards, avg(amount) from fact_sales group by day",
    "select * from dim_customer c where exists (select 1 from fact_sales f"
    " where f.customer_id = c.customer_id and f.amount > 100)",
]
ROUNDS = 9  # of the aggregate, each query once per round
# the governed table as one would write it by hand: the same filter and mask, no gateway
BY_HAND = (
    "(SELECT id, customer_id, region, amount, '***' || right(card, 4) AS card, day"
    " FROM fact_sales WHERE region = 'EU') AS f"
)
AGGREGATE = (
    "SELECT day, count(DISTINCT card) AS cards, sum(amount) AS total FROM {table} GROUP BY day"
)


def demo_catalog() -> Catalog:
    tables: dict[str, dict[str, str]] = {}
    for name in ("dim_customer", "dim_product", "dim_supplier", "fact_sales") + tuple(
        f"table_{i}" for i in range(8)
    ):
        columns = {f"col_{i}": "VARCHAR" for i in range(9)}
        columns.update(
            customer_id="INTEGER", product_id="INTEGER", region="VARCHAR", email="VARCHAR",
            category="VARCHAR", card="VARCHAR", amount="INTEGER", day="DATE",
        )  # fmt: skip
        tables[name] = columns
    return Catalog("duckdb", "wh", "main", tables)


def eu_policy() -> Policy:
    grant = GrantConfig(
        tables=["*"],
        row_filter="region = principal.region",
        masks={"card": "show_last_4", "email": "email_domain"},
    )
    return Policy.from_config(
        RiverbedConfig(
            governance=GovernanceConfig(
                roles={"eu": RoleConfig(grants=[grant])},
                principals={"eva": PrincipalConfig(roles=["eu"], attributes={"region": "EU"})},
            )
        )
    )


def gateway_overhead(repeat: int) -> None:
    policy, catalog = eu_policy(), demo_catalog()
    principal = policy.principal("eva")
    for sql in QUERIES:  # warm: sqlglot's caches, the parsed row filter
        assert govern(policy, principal, sql, catalog).allowed
    times: list[float] = []
    for _ in range(repeat):
        for sql in QUERIES:
            started = time.perf_counter()
            govern(policy, principal, sql, catalog)
            times.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(times, n=100)[94]
    print(
        f"gateway   {len(times):,} calls of govern() over {len(QUERIES)} queries: "
        f"p50 {statistics.median(times):.2f} ms, p95 {p95:.2f} ms, max {max(times):.2f} ms "
        f"(target p95 < 5 ms: {'met' if p95 < 5 else 'NOT met'})"
    )


def best_of(runs: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


PROJECT = """
warehouse: {engine: duckdb, path: wh.duckdb}
tables:
  sales: {kind: fact, target: fact_sales, keys: [id]}
governance:
  copies: [fact_sales]
  roles:
    regional:
      grants: [{tables: ["*"], row_filter: "region = principal.region",
                masks: {card: show_last_4}}]
  principals:
    eva: {roles: [regional], attributes: {region: EU}}
    uma: {roles: [regional], attributes: {region: US}}
"""
APPENDED = 10_000  # rows of the batch whose publish refresh is timed


def fact_rows(start: int, stop: int, batch: str) -> str:
    return (
        "SELECT range AS id, (range % 50000)::INTEGER AS customer_id,"
        " ['EU', 'US', 'APAC', 'LATAM'][range % 4 + 1] AS region,"
        " (range * 7 % 1000)::INTEGER AS amount,"
        " lpad(((range * 2654435761) % 10000000000000000)::VARCHAR, 16, '0') AS card,"
        f" DATE '2024-01-01' + (range % 365)::INTEGER AS day, '{batch}' AS batch_id"
        f" FROM range({start}, {stop})"
    )


def governed_aggregate(rows: int) -> None:
    from riverbed.config import load_project
    from riverbed.govern.gateway import derived_table
    from riverbed.load.warehouse import open_warehouse
    from riverbed.serve.copies import copy_table, refresh_copies
    from riverbed.serve.queries import read_catalog

    with tempfile.TemporaryDirectory(prefix="riverbed-bench-govern-") as work:
        (Path(work) / "riverbed.yaml").write_text(PROJECT)
        project = load_project(Path(work) / "riverbed.yaml")
        path = Path(work) / "wh.duckdb"
        db = duckdb.connect(str(path))
        db.execute(f"CREATE TABLE fact_sales AS {fact_rows(0, rows, 'b0')}")
        # what an ungoverned reader would need: the EU rows, cards masked, stored beforehand
        db.execute(
            "CREATE TABLE fact_sales_eu AS SELECT id, customer_id, region, amount,"
            " '***' || right(card, 4) AS card, day FROM fact_sales WHERE region = 'EU'"
        )
        db.close()
        # the governed copies of eva's and uma's contexts, as the publish step builds them
        warehouse = open_warehouse(project.config.warehouse, project.root)
        catalog = read_catalog(warehouse)
        refresh_copies(project, warehouse, catalog)
        warehouse.close()
        policy = Policy.from_config(project.config)
        principal = policy.principal("eva")
        derived = derived_table(policy, principal, "fact_sales", catalog)
        assert derived is not None
        copies = {"fact_sales": f"SELECT * FROM {copy_table('fact_sales', derived.context)}"}
        db = duckdb.connect(str(path))

        def governed() -> object:
            sql = govern(policy, principal, AGGREGATE.format(table="fact_sales"), catalog).sql
            return db.execute(sql).fetchall()

        def copied() -> object:
            query = AGGREGATE.format(table="fact_sales")
            return db.execute(govern(policy, principal, query, catalog, copies).sql).fetchall()

        def stored() -> object:
            return db.execute(AGGREGATE.format(table="fact_sales_eu")).fetchall()

        def by_hand() -> object:
            return db.execute(AGGREGATE.format(table=BY_HAND)).fetchall()

        answer = sorted(map(str, governed()))
        assert answer == sorted(map(str, stored())) == sorted(map(str, by_hand()))
        assert answer == sorted(map(str, copied()))
        # interleaved rounds: a neighbour's burst on the shared cores hits all alike
        actions = {"governed": governed, "copied": copied, "by_hand": by_hand, "stored": stored}
        best = dict.fromkeys(actions, float("inf"))
        for _ in range(ROUNDS):
            for label, action in actions.items():
                best[label] = min(best[label], best_of(1, action))
        db.close()
        print(
            f"aggregate {rows:,} fact rows on DuckDB, EU rows (1 in 4), card masked; "
            f"best of {ROUNDS} interleaved rounds:"
        )
        for name, label in (
            ("governed", "governed live"),
            ("copied", "governed from a fresh governed copy (riverbed.serve.copies)"),
        ):
            for baseline, seconds in (
                ("ungoverned, filtered and masked by hand in the query", best["by_hand"]),
                ("ungoverned, on a table of the EU rows stored masked", best["stored"]),
            ):
                ratio = best[name] / seconds
                print(
                    f"          {label} {best[name] * 1000:.1f} ms vs {baseline} "
                    f"{seconds * 1000:.1f} ms: {ratio:.2f}x "
                    f"(target within 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})"
                )
        publish_refresh(project, rows)


def publish_refresh(project: Project, rows: int) -> None:
    """The publish step's cost after an append: the append of a batch of APPENDED rows (its
    insert and version bump, one transaction), then the refresh of both contexts' copies."""
    from riverbed.load.versions import bump, ensure_versions
    from riverbed.load.warehouse import open_warehouse
    from riverbed.serve.copies import refresh_copies
    from riverbed.serve.queries import read_catalog

    warehouse = open_warehouse(project.config.warehouse, project.root)
    try:
        ensure_versions(warehouse)
        started = time.perf_counter()
        with warehouse.transaction():
            warehouse.execute(f"INSERT INTO fact_sales {fact_rows(rows, rows + APPENDED, 'b1')}")
            bump(warehouse, "fact_sales", appended=["b1"])
        appended = time.perf_counter() - started
        started = time.perf_counter()
        done = refresh_copies(project, warehouse, read_catalog(warehouse))
        refreshed = time.perf_counter() - started
        # against what a rewrite (an update, an erasure) costs: both copies rebuilt
        with warehouse.transaction():
            bump(warehouse, "fact_sales")
        started = time.perf_counter()
        rebuilt = refresh_copies(project, warehouse, read_catalog(warehouse))
        rebuilding = time.perf_counter() - started
    finally:
        warehouse.close()
    assert done.appended == 2 and rebuilt.built == 2, (done, rebuilt)
    print(
        f"publish   append of {APPENDED:,} rows to the {rows:,}-row fact {appended * 1000:.1f} ms;"
        f" the refresh of its copies for 2 contexts {refreshed * 1000:.1f} ms"
        f" ({refreshed / appended:.2f}x the append; rebuilding them: {rebuilding * 1000:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="fact rows (1,000,000)")
    parser.add_argument("--repeat", type=int, default=500, help="rounds of the query mix (500)")
    options = parser.parse_args()
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"machine   {machine()}; load average {load} (others share the cores)")
    gateway_overhead(options.repeat)
    governed_aggregate(options.rows)
    print(f"command   {command_line()}")


if __name__ == "__main__":
    main()
