"""Several read-only opens of one DuckDB warehouse in one process at once (the web app answers
a page's charts in parallel threads): DuckDB shares one database instance per file, and its
configuration lock with it. Every open must work, be UTC, and stay locked down."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.warehouse import WarehouseError


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "wh.duckdb"
    db = duckdb.connect(str(path))
    db.execute("create table t as select range as n from range(1000)")
    db.close()
    return path


def _setting(warehouse: DuckDBWarehouse, name: str) -> object:
    return warehouse.query(f"select current_setting('{name}') as v").column("v")[0].as_py()


def test_a_second_read_only_open_shares_the_locked_instance(warehouse: Path) -> None:
    first = DuckDBWarehouse(warehouse, read_only=True)
    second = DuckDBWarehouse(warehouse, read_only=True)  # was: configuration has been locked
    try:
        for opened in (first, second):
            assert _setting(opened, "TimeZone") in ("UTC", "Etc/UTC")
            assert _setting(opened, "enable_external_access") is False
            with pytest.raises(WarehouseError):
                opened.query("SET lock_configuration = false")
        assert second.query("select count(*) as c from t").column("c")[0].as_py() == 1000
    finally:
        second.close()
        first.close()


def test_many_threads_open_and_query_at_once(warehouse: Path) -> None:
    def count(_: int) -> int:
        opened = DuckDBWarehouse(warehouse, read_only=True)
        try:
            return int(opened.query("select sum(n) as s from t").column("s")[0].as_py())
        finally:
            opened.close()

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(count, range(64))) == {sum(range(1000))}
