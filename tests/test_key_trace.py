"""The trace a failed warehouse check prints of its keys (tests/key_trace.py): the dimension's
versions of each key and the key's rows in the lake, compact, and never an error of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from key_trace import trace_keys

from conftest import run_cli
from riverbed.capture.snapshot import SNAPSHOT_SEQ


def test_a_key_is_traced_through_the_warehouse_and_the_lake(tmp_path: Path) -> None:
    assert run_cli("init", str(tmp_path)).code == 0  # an empty lake: no rows of any key
    asked: list[str] = []

    def ask(_project: Path, sql: str) -> list[dict[str, Any]]:
        asked.append(sql)
        if "_riverbed_scd2_positions" in sql:
            return [{"dimension": "dim_customer", "_lsn": 0x3000000, "_seq": 4}]
        return [
            {
                "customer_id": 7,
                "email": "hidden",
                "effective_date": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                "expiry_date": datetime(9999, 12, 31, tzinfo=UTC),
                "is_current_record": False,
                "is_deleted": True,
                "is_inferred": False,
                "_lsn": 0x30737C0,
                "_seq": SNAPSHOT_SEQ + 12,
            }
        ]

    text = trace_keys(
        tmp_path / "riverbed.yaml", "dim_customer", "customers", "customer_id", [7, 8, 9, 10], ask
    )

    assert "where customer_id in (7, 8, 9)" in asked[0]  # the first few keys only
    assert text.splitlines() == [
        "trace of dim_customer customer_id [7, 8, 9]:",
        "  dim_customer high-water mark: (0/3000000, 4)",
        "  dim_customer customer_id=7: 1 version(s)",
        "    effective_date=2026-01-02T03:04:05.000000 expiry_date=9999-12-31T00:00:00.000000"
        " is_current_record=False is_deleted=True is_inferred=False _lsn=0/30737C0 _seq=S+12",
        "  dim_customer customer_id=8: 0 version(s)",
        "  dim_customer customer_id=9: 0 version(s)",
        "  lake customers customer_id=7: 0 row(s)",
        "  lake customers customer_id=8: 0 row(s)",
        "  lake customers customer_id=9: 0 row(s)",
    ]


def test_a_trace_that_cannot_read_says_so(tmp_path: Path) -> None:
    def ask(_project: Path, _sql: str) -> list[dict[str, Any]]:
        raise AssertionError("riverbed query exited 1")

    text = trace_keys(tmp_path / "missing.yaml", "dim_seller", "sellers", "seller_id", [3], ask)

    lines = text.splitlines()
    assert lines[1].startswith("  warehouse: unreadable (AssertionError: riverbed query exited 1")
    assert lines[2].startswith("  lake: unreadable (ConfigError:")
