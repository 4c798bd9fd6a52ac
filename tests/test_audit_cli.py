"""`riverbed audit`: the trail as a table that fits 80 columns, its filters, its JSON, and
`--verify` on an intact chain and on one edited behind the store's back."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import run_cli
from riverbed.govern.audit import record_change, record_decision
from riverbed.state import SQLiteStore
from riverbed.state.records import AuditEntry

NARROW = {"COLUMNS": "80"}  # what a pipe gets
LONG_SQL = (
    "select c.region, count(*) as orders, sum(o.total) as revenue\n"
    "  from fact_orders o join dim_customer c using (customer_key)\n"
    " where o.ordered_at >= date '2026-01-01' group by c.region order by revenue desc"
)


def state_db(folder: Path) -> Path:
    return folder / ".riverbed" / "state.db"  # the demo defaults' state.path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder whose trail holds an old read, an allowed one, a denied one and a change."""
    store = SQLiteStore(state_db(tmp_path))
    try:
        store.audit.append(
            AuditEntry(
                ts=time.time() - 3 * 86400,
                principal="analyst_eu",
                path="web",
                action="query",
                sql="select 1 from dim_date",
                tables=("dim_date",),
                rows=1,
                seconds=0.01,
            )
        )
        record_decision(
            store,
            principal="analyst_eu",
            path="cli",
            sql=LONG_SQL,
            tables=["fact_orders", "dim_customer"],
            allowed=True,
            reason=None,
            rows=12345,
            seconds=0.4,
        )
        record_decision(
            store,
            principal="intern",
            path="api",
            sql="select * from read_csv('/etc/passwd')",
            tables=[],
            allowed=False,
            reason="read_csv reads files: table functions are refused",
            rows=None,
            seconds=0.002,
        )
        record_change(store, principal="ops", action="rotate", detail={"key_ids": ["k1"]})
    finally:
        store.close()
    return tmp_path


def test_an_empty_trail_says_so(tmp_path: Path) -> None:
    result = run_cli("audit", cwd=tmp_path)
    assert result.code == 0, result.text
    assert "no audit records yet" in result.out
    verified = run_cli("audit", "--verify", cwd=tmp_path)
    assert verified.code == 0 and "audit chain intact: 0 records" in verified.out


def test_records_are_listed_newest_first_in_80_columns(project: Path) -> None:
    result = run_cli("audit", cwd=project, env=NARROW)
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["time", "(UTC)", "principal", "path", "allowed", "rows", "query"]
    rows = [line for line in lines[1:] if not line.startswith(" ")]
    assert [r.split()[2] for r in rows] == ["ops", "intern", "analyst_eu", "analyst_eu"]
    change, denied, allowed, old = rows
    assert "govern" in change and "rotate: key_ids=" in change
    assert "api" in denied and "DENIED" in denied
    assert "    read_csv reads files: table functions are refused" in lines
    assert "12,345" in allowed and "select c.region, count(*)" in allowed
    assert allowed.endswith("…") and "revenue desc" not in result.out  # cut, whole in --json
    assert "web" in old and "select 1 from dim_date" in old


def test_filters(project: Path) -> None:
    def principals(*args: str) -> list[str]:
        result = run_cli("audit", *args, cwd=project)
        assert result.code == 0, result.text
        return [line.split()[2] for line in result.out.splitlines()[1:] if line[:1].isdigit()]

    assert principals("--denied") == ["intern"]
    assert principals("--principal", "analyst_eu") == ["analyst_eu", "analyst_eu"]
    assert principals("--since", "1h") == ["ops", "intern", "analyst_eu"]
    assert principals("--since", time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400)))[
        -1:
    ] == ["analyst_eu"]
    assert principals("--limit", "1") == ["ops"]
    nobody = run_cli("audit", "--principal", "nobody", cwd=project)
    assert nobody.code == 0 and "no audit records match" in nobody.out


def test_json_has_every_field_and_the_whole_sql(project: Path) -> None:
    result = run_cli("audit", "--json", "--principal", "analyst_eu", "--since", "2h", cwd=project)
    assert result.code == 0, result.text
    (record,) = json.loads(result.out)
    assert record["sql"] == LONG_SQL
    assert record["tables"] == ["fact_orders", "dim_customer"]
    assert (record["path"], record["allowed"], record["rows"], record["id"]) == (
        "cli",
        True,
        12345,
        2,
    )
    assert record["time"].endswith("Z") and len(record["hash"]) == 64


def test_verify_says_intact_or_names_the_broken_record(project: Path) -> None:
    intact = run_cli("audit", "--verify", cwd=project)
    assert intact.code == 0, intact.text
    assert intact.out.strip() == "audit chain intact: 4 records"

    conn = sqlite3.connect(state_db(project), isolation_level=None)
    conn.execute("update audit_log set allowed = 1 where id = 3")  # the denial, made a grant
    conn.close()
    broken = run_cli("audit", "--verify", cwd=project)
    assert broken.code == 1, broken.text
    assert "audit chain broken at record 3: edited" in broken.err
    assert "Traceback" not in broken.text and len(broken.err.strip().splitlines()) == 1

    as_json = run_cli("audit", "--verify", "--json", cwd=project)
    assert as_json.code == 1
    assert json.loads(as_json.out) | {"head": None} == {
        "intact": False,
        "records": 2,
        "head": None,
        "problem": "edited",
        "record": 3,
        "why": "its fields do not match its hash",
    }


@pytest.mark.parametrize(
    "args",
    [
        ("--since", "yesterday"),
        ("--since", "2026-13-45"),
        ("--since", "-1h"),
        ("--verify", "--denied"),
        ("--limit", "0"),
    ],
    ids=" ".join,
)
def test_bad_options_exit_2_in_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_cli("audit", *args, cwd=tmp_path)
    assert result.code == 2, result.text
    assert "Traceback" not in result.text
    if args[0] == "--since":
        assert len(result.err.strip().splitlines()) == 1 and "--since" in result.err
