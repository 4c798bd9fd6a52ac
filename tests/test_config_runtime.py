"""Config mistakes only the source's columns reveal: one line naming the key and the fix at
run time, and the failed run is redrivable once the config is fixed."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Database, run_cli

TABLES = """\
tables:
  customers:
    kind: dimension
    target: dim_customer
    keys: [{key}]
    tracked: [name]
  orders:
    kind: fact
    target: fact_orders
    keys: [order_id]
    quality:
      - {{type: references, column: customer_id, reference: customers.{reference}}}
"""


def project(folder: Path, database: Database, key: str, reference: str) -> Path:
    config = folder / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: c\n  slot: slot_c\n'
        "lake:\n  path: lake\nstate:\n  path: state.db\n"
        "warehouse:\n  path: warehouse.duckdb\n" + TABLES.format(key=key, reference=reference)
    )
    return config


def captured(database: Database, folder: Path, key: str, reference: str) -> Path:
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema c;"
            "create table c.customers (customer_id int primary key, name text);"
            "create table c.orders (order_id int primary key, customer_id int);"
            "insert into c.customers values (1, 'ann');"
            "insert into c.orders values (10, 1)"
        )
    config = project(folder, database, key, reference)
    captured = run_cli("capture", "--once", "-q", "-c", str(config))
    assert captured.code == 0, captured.text
    return config


def failed_run_id(config: Path) -> str:
    shown = run_cli("runs", "--json", "-c", str(config))
    assert shown.code == 0, shown.text
    runs = json.loads(shown.out)
    runs = runs["runs"] if isinstance(runs, dict) else runs
    return str(runs[0]["run_id"])


def test_a_key_column_the_source_lacks_is_one_line_and_the_run_redrives(
    database: Database, tmp_path: Path
) -> None:
    config = captured(database, tmp_path, "customer_idd", "customer_id")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.code != 0
    assert "Traceback" not in result.text
    assert "tables.customers.keys: column customer_idd is not in customers (columns: " in result.err
    project(tmp_path, database, "customer_id", "customer_id")  # the fix
    redriven = run_cli("run", "--redrive", failed_run_id(config), "-c", str(config))
    assert redriven.code == 0, redriven.text


def test_a_reference_to_a_column_the_table_lacks_is_one_line_and_the_run_redrives(
    database: Database, tmp_path: Path
) -> None:
    config = captured(database, tmp_path, "customer_id", "customer_idd")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.code != 0
    assert "Traceback" not in result.text
    assert (
        "tables.orders.quality.0.reference: column customer_idd is not in customers (columns: "
        in result.err
    )
    project(tmp_path, database, "customer_id", "customer_id")  # the fix
    redriven = run_cli("run", "--redrive", failed_run_id(config), "-c", str(config))
    assert redriven.code == 0, redriven.text
