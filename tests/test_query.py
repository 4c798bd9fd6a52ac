"""`riverbed query` on both warehouses: rows stream as they come in bounded memory, a table
shows a screenful, a timeout and Ctrl-C stop a query with one line, and every column type
prints the same way in csv and json."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from conftest import Database, run_cli, start_cli, write_config

# a query that would never end, streaming wide rows: (DuckDB, PostgreSQL); PostgreSQL's
# generate_series streams from the select list (in FROM it is collected first)
ENDLESS = {
    "duckdb": "select range as n, repeat('x', 100) as s from range(1000000000000)",
    "postgres": "select g as n, repeat('x', 100) as s"
    " from (select generate_series(1, 1000000000000) as g) t",
}
# a query that works a long time before its one row
SLOW = {
    "duckdb": "select sum(range) as n from range(1000000000000) where range % 7 = 3",
    "postgres": "select pg_sleep(600) as n",
}
NUMBERS = {  # 0 .. 119
    "duckdb": "select range as n from range(120)",
    "postgres": "select generate_series(0, 119) as n",
}


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def project(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A project whose warehouse (``engine``) exists and holds nothing the tests need."""
    folder = tmp_path / "project"
    if engine == "duckdb":
        folder.mkdir()
        duckdb.connect(str(folder / "wh.duckdb")).close()
        section = "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n"
    else:
        database: Database = request.getfixturevalue("warehouse_database")
        section = f'warehouse:\n  engine: postgres\n  dsn: "{database.dsn}"\n'
    return write_config(folder, section)


def query(project: Path, *args: str) -> subprocess.Popen[str]:
    return start_cli("query", "--as", "admin", *args, "-c", str(project))


@pytest.fixture
def killed_after_a_minute() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes to kill if a test is still waiting for them after a minute: a query that
    never prints would otherwise hang the test instead of failing it."""
    started: list[subprocess.Popen[str]] = []
    timer = threading.Timer(60, lambda: [p.kill() for p in started])
    timer.start()
    yield started
    timer.cancel()
    for process in started:
        process.kill()
        process.communicate()


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_rows_stream_as_they_come_in_bounded_memory(
    engine: str, project: Path, killed_after_a_minute: list[subprocess.Popen[str]]
) -> None:
    proc = query(project, "--format", "csv", ENDLESS[engine])
    killed_after_a_minute.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == '"n","s"\n'
    first = proc.stdout.readline()
    assert first.startswith(("0,", "1,")), first  # rows of a query that never ends
    # two million rows (220 MB of csv) later, the process still holds only a fraction of them
    for _ in range(2_000_000):
        assert proc.stdout.readline().endswith('x"\n')
    assert peak_memory_mb(proc.pid) < 300


def test_ctrl_c_stops_a_query_with_one_line(
    engine: str, project: Path, killed_after_a_minute: list[subprocess.Popen[str]]
) -> None:
    proc = query(project, "--format", "csv", ENDLESS[engine])
    killed_after_a_minute.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == '"n","s"\n'  # the query runs
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err


def test_a_query_past_its_timeout_stops_with_one_line(engine: str, project: Path) -> None:
    result = run_cli(
        "query", "--as", "admin", "--timeout", "1", SLOW[engine], "-c", str(project), timeout=60
    )
    assert result.code == 1, result.text
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "stopped after 1 s (--timeout)" in result.err
    # the configured timeout, named in the message
    config = project.read_text() + "  query:\n    timeout_seconds: 1\n"
    project.write_text(config)
    result = run_cli("query", "--as", "admin", SLOW[engine], "-c", str(project), timeout=60)
    assert result.code == 1 and "warehouse.query.timeout_seconds" in result.err, result.text


def test_a_table_shows_a_screenful_and_how_to_get_the_rest(engine: str, project: Path) -> None:
    shown = run_cli("query", "--as", "admin", NUMBERS[engine], "-c", str(project))
    assert shown.code == 0, shown.text
    lines = shown.out.splitlines()
    assert "│ 49 │" in shown.out and "│ 50 │" not in shown.out
    assert "showing the first 50 rows" in lines[-1] and "--format csv" in lines[-1]
    five = run_cli("query", "--as", "admin", "--limit", "5", NUMBERS[engine], "-c", str(project))
    assert "│ 4 │" in five.out and "│ 5 │" not in five.out and "first 5 rows" in five.out
    everything = run_cli(
        "query", "--as", "admin", "--limit", "500", NUMBERS[engine], "-c", str(project)
    )
    assert "│ 119 │" in everything.out and everything.out.splitlines()[-1] == "120 rows"
    # a query that never ends still shows its first rows
    endless = run_cli("query", "--as", "admin", ENDLESS[engine], "-c", str(project), timeout=60)
    assert endless.code == 0 and "showing the first 50 rows" in endless.out, endless.text
    as_csv = run_cli(
        "query",
        "--as",
        "admin",
        "--format",
        "csv",
        "--limit",
        "3",
        ENDLESS[engine],
        "-c",
        str(project),
        timeout=60,
    )
    assert as_csv.code == 0 and len(as_csv.out.splitlines()) == 4, as_csv.text


NESTED = {
    "duckdb": "select [1, 2] as l, {'a': 1, 'b': 'x, \"y\"'} as s, map([1], ['a']) as m,"
    " interval '1 year 2 months 3 days 04:05:06.5' as i",
    "postgres": "select array[1, 2] as l, json_build_object('a', 1, 'b', 'x, \"y\"') as s,"
    " jsonb_build_object('1', 'a') as m, interval '1 year 2 months 3 days 04:05:06.5' as i",
}


def test_nested_and_interval_columns_are_json_text_in_csv(engine: str, project: Path) -> None:
    result = run_cli(
        "query", "--as", "admin", "--format", "csv", NESTED[engine], "-c", str(project)
    )
    assert result.code == 0, result.text
    header, row = list(csv.reader(io.StringIO(result.out)))
    cells = dict(zip(header, row, strict=True))
    assert json.loads(cells["l"]) == [1, 2]
    assert json.loads(cells["s"]) == {"a": 1, "b": 'x, "y"'}
    assert json.loads(cells["m"]) == {"1": "a"}
    assert cells["i"] == "1 year 2 mons 3 days 04:05:06.5"  # as PostgreSQL writes it
    as_json = run_cli(
        "query", "--as", "admin", "--format", "json", NESTED[engine], "-c", str(project)
    )
    assert json.loads(as_json.out) == [
        {"l": [1, 2], "s": {"a": 1, "b": 'x, "y"'}, "m": {"1": "a"}, "i": cells["i"]}
    ]


def test_timestamps_read_the_same_in_csv_and_json(project: Path) -> None:
    sql = (
        "select timestamptz '2024-01-02 03:04:05.5+00' as tz, timestamp '2024-01-02 03:04:05'"
        " as ts, date '2024-01-02' as d, time '01:02:03' as t, cast(1.50 as decimal(5, 2)) as n"
    )
    as_csv = run_cli("query", "--as", "admin", "--format", "csv", sql, "-c", str(project))
    as_json = run_cli("query", "--as", "admin", "--format", "json", sql, "-c", str(project))
    assert as_csv.code == 0 and as_json.code == 0, as_csv.text + as_json.text
    header, row = list(csv.reader(io.StringIO(as_csv.out)))
    assert dict(zip(header, row, strict=True)) == json.loads(as_json.out)[0]
    assert row[0] == "2024-01-02 03:04:05.500000+00:00"


def test_query_limits_are_checked_and_applied(tmp_path: Path) -> None:
    duckdb.connect(str(tmp_path / "wh.duckdb")).close()
    section = "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n  query:\n"
    wrong = write_config(tmp_path / "wrong", section + "    memory_limit: lots\n")
    result = run_cli("query", "--as", "admin", "select 1", "-c", str(wrong))
    assert result.code == 2 and "warehouse.query.memory_limit" in result.err, result.text
    (tmp_path / "right").mkdir()
    (tmp_path / "right" / "wh.duckdb").write_bytes((tmp_path / "wh.duckdb").read_bytes())
    right = write_config(tmp_path / "right", section + "    memory_limit: 300MB\n")
    result = run_cli("query", "--as", "admin", "select 42 as n", "-c", str(right))
    assert result.code == 0 and "42" in result.out, result.text
    # the gateway lets no query read a setting (admin's neither): the limit is read on the
    # warehouse as `riverbed query` opens it
    from riverbed.config.loader import load_project
    from riverbed.load.warehouse import open_warehouse

    project = load_project(right)
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        setting = warehouse.query("select current_setting('memory_limit') as m")
        assert setting.to_pylist() == [{"m": "286.1 MiB"}]
    finally:
        warehouse.close()


def test_a_table_too_wide_for_the_terminal_says_its_values_are_cut(project: Path) -> None:
    # 12 columns in 80: rich cuts 1234567 to "1…"; a number read as 1 must not pass unnoticed
    wide = "select " + ", ".join(f"1234567 as column_{n}" for n in range(12))
    result = run_cli("query", "--as", "admin", wide, "-c", str(project), env={"COLUMNS": "80"})
    assert result.code == 0, result.text
    assert "…" in result.out
    lines = result.out.splitlines()
    assert "values cut (…) to fit 80 columns" in lines[-2] and "--format csv" in lines[-2]
    assert lines[-1] == "1 row"
    narrow = run_cli("query", "--as", "admin", "select 1234567 as n", "-c", str(project))
    assert "1234567" in narrow.out and "cut" not in narrow.out


def test_the_default_memory_limit_is_a_quarter_of_the_machine(tmp_path: Path) -> None:
    # 2GB fixed was too little for a live chart over 10M fact rows (DuckDB cannot spill a
    # current-state window joined and counted distinct): the default follows the machine
    from riverbed.config.loader import load_project
    from riverbed.load.warehouse import open_warehouse

    duckdb.connect(str(tmp_path / "wh.duckdb")).close()
    config = write_config(tmp_path, "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n")
    project = load_project(config)
    assert project.config.warehouse.query.memory_limit == "auto"
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        setting = warehouse.query("select current_setting('memory_limit') as m").to_pylist()
    finally:
        warehouse.close()
    value, unit = setting[0]["m"].split()
    limit = float(value) * {"MiB": 2**20, "GiB": 2**30}[unit]
    assert limit >= 2 * 2**30 * 0.99
    assert abs(limit - max(2 * 2**30, physical // 4)) < 0.02 * limit
