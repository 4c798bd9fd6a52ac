"""The command line as a whole: `--help` is the map, and `riverbed demo` runs end to end, twice."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from conftest import free_port, run_cli, write_config
from riverbed.cli import app
from riverbed.config import demo_config_text

NARROW = {"COLUMNS": "80"}  # what a pipe gets


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    """Every command under ``command`` (a click command, as typer builds it) with its words,
    and whether it is a group (one with subcommands)."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, False)]
    found = [(path, True)] if path else []
    for name, sub in subcommands.items():
        if not sub.hidden:
            found += _walk(sub, (*path, name))
    return found


TREE = _walk(typer.main.get_command(app))
COMMANDS = [path for path, group in TREE if not group]  # what a user runs
GROUPS = [path for path, group in TREE if group]  # `riverbed source`, `riverbed shop`, ...


def test_the_command_list_is_the_app() -> None:
    """The lists below are the app's, not a copy that misses a new command."""
    assert ("source", "up") in COMMANDS and ("status",) in COMMANDS and ("demo",) in COMMANDS
    assert ("source",) in GROUPS and ("source",) not in COMMANDS


def test_help_is_the_map_of_the_product() -> None:
    top = run_cli("--help")
    assert top.code == 0
    for name in ("init", "source", "shop", "demo"):
        assert name in top.out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help")
    assert result.code == 0, result.text
    assert "Example:" in result.out
    assert f"riverbed {' '.join(command)}" in result.out
    assert "--config" in result.out or command == ("init",)


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("sourse", "up")
    assert result.code == 2 and "Traceback" not in result.text


def test_demo_runs_end_to_end_and_is_safe_to_run_twice(tmp_path: Path) -> None:
    # the demo config as `riverbed init` writes it, on a port of its own
    text = demo_config_text().replace("port: 54329", f"port: {free_port()}")
    assert "port: 54329" not in text
    config = write_config(tmp_path, text)
    try:
        first = run_cli(
            "demo", "--duration", "8", "--every", "2", "-c", str(config), timeout=600, env=NARROW
        )
        assert first.code == 0, first.text
        out = first.out
        # through a pipe (80 columns) no table cuts a cell ("accepted_values(c…") or runs wider
        assert "…" not in out
        tables = [
            line for line in out.splitlines() if line.startswith(tuple("┏┃┡│└ ") + ("alarm",))
        ]
        assert tables and not [line for line in tables if len(line) > 80]
        # so does the summary's prose, and each run's line: wrapped at spaces, where a
        # terminal would break "253,938" or a run id in two
        summary = out[out.index("6. what landed") : out.index("9. where to look next")]
        runs = [line for line in out.splitlines() if line.startswith("run ")]
        wide = [line for line in summary.splitlines() + runs if len(line) > 80]
        assert not wide, wide
        # and every other line, from the first section's to the last's, but for a path (or
        # the psql command starting with one) on a line of its own, pasted whole
        wide = [
            line for line in out.splitlines() if len(line) > 80 and not line.strip().startswith("/")
        ]
        assert not wide, "\n".join(wide)
        # wrapped between figures, never inside one ("dirty rows: 1,234 of ...")
        assert re.search(r"dirty rows: [\d,]+ of [\d,]+ checkable", " ".join(out.split()))
        assert not [line for line in runs if line.endswith(" ")]
        assert "started" in out and "seeded" in out
        assert "changes/s" in out
        assert "what landed in the lake" in out and "snapshot rows" in out
        assert "fastest growing" in out and "fastest declining" in out
        assert "sellers by return rate" in out and "revenue by region" in out
        assert "riverbed source status" in out  # where to look next
        # the pipeline ran on a schedule during the traffic, and the summary says what it did
        assert "a pipeline run every" in out and "changes transformed" in out
        assert "dirty rows quarantined" in out and "dim_customer" in out
        assert "fact_order_items" in out and "runs:" in out and "succeeded" in out
        assert "capture_lag_high" in out  # the alarms table
        # a healthy demo trips none of its own alarms (issue 15: quality_failures_high did)
        states = dict(re.findall(r"^alarm\s+(\w+): (\w+)", out, re.MULTILINE))
        assert len(states) >= 4 and set(states.values()) == {"OK"}, states
        # governance: the same customers as admin and as the EU analyst, fewer and masked
        admin_sees = re.search(r"admin sees ([\d,]+) current customers", out)
        analyst_sees = re.search(r"eu_analyst sees ([\d,]+) current customers", out)
        assert admin_sees and analyst_sees, out
        assert 0 < int(analyst_sees[1].replace(",", "")) < int(admin_sees[1].replace(",", ""))
        assert "--as eu_analyst" in out and "***" in out
        # right to be forgotten: one customer erased, their versions kept without PII
        erased = re.search(r"riverbed forget customers (\d+)", " ".join(out.split()))
        assert erased, out
        subject = run_cli(
            "query",
            "--as",
            "admin",
            "--format",
            "json",
            "select count(*) as versions, count(email) as emails, count(full_name) as names"
            f" from dim_customer where customer_id = {erased[1]}",
            "-c",
            str(config),
        )
        assert subject.code == 0, subject.text
        counts = json.loads(subject.out)[0]
        assert counts["versions"] >= 1 and counts["emails"] == counts["names"] == 0, counts
        # query's note under a table of its first 50 rows fits 80 columns too
        shown = run_cli(
            "query",
            "--as",
            "admin",
            "select customer_id from dim_customer",
            "-c",
            str(config),
            env=NARROW,
        )
        assert shown.code == 0, shown.text
        assert "showing the first 50 rows" in " ".join(shown.out.split())
        assert not [line for line in shown.out.splitlines() if len(line) > 80], shown.out
        _the_printed_logins_work(out, config)

        second = run_cli("demo", "--duration", "2", "-c", str(config), timeout=600)
        assert second.code == 0, second.text
        assert "already running" in second.out and "already seeded" in second.out
        assert "capture resumed" in second.out
    finally:
        run_cli("source", "down", "-c", str(config))


def _the_printed_logins_work(out: str, config: Path) -> None:
    """The demo ends with the dashboards' address and a login for admin and an EU analyst;
    each logs in to the web app, and no password is in the JSON logs."""
    from fastapi.testclient import TestClient

    from riverbed.config import load_project
    from riverbed.serve.app import create_app

    tail = out[out.index("9. where to look next") :]
    assert "http://127.0.0.1:8000" in tail and "riverbed serve" in tail
    logins = dict(re.findall(r"^  (admin|eu_analyst) / (\S+)$", tail, re.MULTILINE))
    assert set(logins) == {"admin", "eu_analyst"}, tail
    logs = (config.parent / ".riverbed" / "logs").glob("*.jsonl*")
    text = "".join(path.read_text() for path in logs)
    assert text and not [p for p in logins.values() if p in text]
    client = TestClient(create_app(load_project(config)))
    for principal, password in logins.items():
        form = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert form
        answer = client.post(
            "/login",
            data={"principal": principal, "password": password, "csrf_token": form[1]},
            follow_redirects=False,
        )
        assert answer.status_code == 303, (principal, answer.text)
        client.cookies.clear()


PYTHON_TYPES = ("<bool>", "<str>", "<int>", "<float", "<path>", "list[")


@pytest.mark.parametrize("command", [*COMMANDS, *GROUPS], ids=" ".join)
def test_help_fits_80_columns_and_names_values_not_python_types(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help", env=NARROW)
    assert result.code == 0, result.text
    assert not [line for line in result.out.splitlines() if len(line) > 80]
    assert not [t for t in PYTHON_TYPES if t in result.out], result.out
    assert "…" not in result.out and not result.out.rstrip().endswith("...")
    assert "Example:" in result.out and f"riverbed {command[0]}" in result.out


def test_run_help_shows_every_option_whole() -> None:
    out = " ".join(run_cli("run", "--help", env=NARROW).out.split())
    for whole in (
        "--every SECONDS Run again every SECONDS until Ctrl-C "
        "(orchestration.cron/every_seconds in config schedule without it).",
        "--redrive RUN_ID",
        "--from LSN|TIME With --reprocess: an LSN (0/16B3748) or a UTC time.",
        "-c, --config PATH riverbed.yaml to use (default: ./riverbed.yaml, else the demo defaults).",
    ):
        assert whole in out


USAGE_ERRORS = [
    ("sourse", "up"),  # typer's own
    ("run", "--every", "0.01"),
    ("runs", "--limit", "many"),
    ("run", "--engine", "oracle"),
    ("run", "--stage", "publish"),
    ("run", "--once", "--every", "5"),
    ("run", "--reprocess", "orders"),
    ("run", "--stage", "load", "--every", "5"),
    ("capture",),
    ("shop", "seed", "--end-date", "2026-13-45"),
    ("runs", "shwo", "1a2b3c"),
    ("runs", "show"),
    ("ddl", "--dialect", "oracle"),
    ("query", "--as", "admin", "--format", "xml", "select 1"),
    ("query", "--as", "nobody", "select 1"),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_exit_2_in_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.code == 2, result.text
    assert "Traceback" not in result.text and result.err.strip()


def test_runtime_errors_exit_1(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, f'source:\n  dsn: "postgresql://riverbed@127.0.0.1:{free_port()}/nowhere"\n'
    )
    for args in (("capture", "--once"), ("runs", "show", "1a2b3c")):
        result = run_cli(*args, "-c", str(config))
        assert result.code == 1, result.text
        assert "Traceback" not in result.text and result.err.strip()


def test_status_tables_too_wide_for_80_columns_keep_every_name_and_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long table name or a batch of millions of rows made status's tables wider than 80
    columns, and rich fitted them by cutting cells ("customer_addre…", "2,487,6…")."""
    from riverbed.cli import status
    from riverbed.cli.common import console

    monkeypatch.setattr(console, "width", 80)
    rule = {"rule": "not_null(zip)", "status": "warn", "failed": 12_345, "checked": 2_500_000}
    batch = {"status": "staged", "rows_in": 2_500_000, "rows_out": 2_487_655}
    lake = {"files": 1_234, "rows": 123_456_789, "schema_version": 3, "landed_at": None}
    for name in ("customer_addresses", "orders"):
        with console.capture() as captured:
            status._print_lake({name: lake})
            status._print_quality(
                [{**batch, "table": name, "rows_quarantined": 12_345, "rules": [rule]}]
            )
        out = captured.get()
        assert "…" not in out and not [line for line in out.splitlines() if len(line) > 80]
        words = " ".join(out.split())
        for whole in (name, "1,234", "123,456,789", "2,500,000", "2,487,655", "12,345"):
            assert whole in words, out
