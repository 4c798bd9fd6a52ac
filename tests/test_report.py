"""Issue 19 item 5: `riverbed report --as PRINCIPAL --out DIR`, a dashboard snapshot that holds
the principal's rows and masks (a scheduled report runs with its reader's security, not its
owner's: metabase#12091, superset#13954), and the same report written by a run after publish.

One small shop (the demo config on a DuckDB warehouse, its EU analyst's customers filtered to
Europe, emails redacted, names and phones masked as PII), captured and run once with
``orchestration.reports`` set; then the reports are made by the command line.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.rows import dict_row
from test_e2e import cli, demo_project

from conftest import Database, _fresh_database, run_cli
from riverbed.config import load_project
from riverbed.serve.report import PAGES
from riverbed.serve.screenshots import chromium
from riverbed.source.embedded import EmbeddedServer
from riverbed.state import open_state

SMALL = ("--customers", "80", "--sellers", "10", "--products", "40", "--orders", "600")


@pytest.fixture(scope="module")
def source(pg_server: EmbeddedServer) -> Iterator[Database]:
    yield from _fresh_database(pg_server)


@pytest.fixture(scope="module")
def project(source: Database, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's riverbed.yaml, after one run that wrote the EU analyst's report."""
    config = demo_project(tmp_path_factory.mktemp("report") / "shop", source)
    data = yaml.safe_load(config.read_text())
    data["orchestration"]["reports"] = [
        {"as": "eu_analyst", "out": "reports/eu", "formats": ["html"]}
    ]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    cli(config, "shop", "seed", *SMALL, "--months", "2", "--seed", "5", "-q")
    cli(config, "capture", "--once", "-q")
    cli(config, "run", "--once", "-q")
    return config


@pytest.fixture(scope="module")
def customers(source: Database) -> list[dict[str, Any]]:
    with source.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select email, full_name, phone, region from shop.customers").fetchall()


def _bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file())


def _forms(value: str) -> list[bytes]:
    """``value`` as it may stand in a file: as is, HTML-escaped, JSON-escaped."""
    return [v.encode() for v in {value, html.escape(value), json.dumps(value)[1:-1]}]


def _rows(folder: Path, page: str) -> int:
    data = json.loads((folder / f"{page}.json").read_text())
    return sum(len(chart["rows"]) for chart in data["charts"])


def _report(config: Path, principal: str, out: Path, *more: str) -> Any:
    return run_cli("report", "--as", principal, "--out", str(out), *more, "-c", str(config))


def test_the_eu_analysts_report_holds_only_their_rows_and_masks(
    project: Path, customers: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "eu"
    started = time.time()
    result = _report(project, "eu_analyst", out)
    assert result.code == 0, result.text
    has_chromium = chromium() is not None
    for page in PAGES:  # a line per page, and its files
        assert page in result.out
        assert (out / f"{page}.html").is_file() and (out / f"{page}.json").is_file()
        if has_chromium:
            assert (out / f"{page}.png").read_bytes().startswith(b"\x89PNG")
    if not has_chromium:
        said = " ".join(result.out.split())  # wrapped to the terminal's width
        assert "PNG skipped" in said and "apt install chromium" in said
    # the report opens with no server and no network: its scripts are beside it
    shown = (out / "product-trends.html").read_text()
    assert '<script src="plotly.min.js">' in shown and (out / "plotly.min.js").stat().st_size
    assert "http://" not in shown and "https://" not in shown
    assert "Revenue by category" in shown or "revenue" in shown.lower()
    # private: the folder 0700, every file 0600
    assert out.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}
    # no other region's customer, and no clear value of a column masked for the analyst
    everything = _bytes(out)
    eu = [c for c in customers if c["region"] == "Europe"]
    others = [c for c in customers if c["region"] != "Europe"]
    assert eu and others
    eu_names = {c["full_name"] for c in eu}
    leaked = [
        value
        for c in others
        for value in (c["email"], c["phone"], c["full_name"])
        if value and value not in eu_names
        for form in _forms(value)
        if form in everything
    ]
    assert not leaked, leaked[:5]
    masked = [
        value
        for c in eu
        for value in (c["email"], c["phone"], c["full_name"])
        if value
        for form in _forms(value)
        if form in everything
    ]
    assert not masked, masked[:5]
    refunds = json.loads((out / "consumer-statistics.json").read_text())["charts"]
    per_customer = next(c for c in refunds if c["name"] == "customer_refunds")["rows"]
    assert per_customer and {r["customer_region"] for r in per_customer} == {"Europe"}
    # every chart's query was audited as the analyst, with the path export
    store = open_state(load_project(project))
    try:
        records = [
            r
            for r in store.audit.records(principal="eu_analyst", since=started - 1)
            if r.path == "export"
        ]
    finally:
        store.close()
    assert len(records) >= 10 and all(r.allowed for r in records)

    # the admin's report of the same pages has more rows
    admin = tmp_path / "admin"
    mine = _report(project, "admin", admin, "--format", "html", "--page", "consumer-statistics")
    assert mine.code == 0, mine.text
    assert sorted(p.name for p in admin.glob("*.html")) == ["consumer-statistics.html"]
    assert _rows(admin, "consumer-statistics") > _rows(out, "consumer-statistics")
    assert any(c["phone"].encode() in _bytes(admin) for c in others if c["phone"])


def test_an_unknown_principal_page_or_format_is_one_usage_line(
    project: Path, tmp_path: Path
) -> None:
    for args, says in (
        (("--as", "mallory"), "no such principal"),
        (("--as", "admin", "--page", "nowhere"), "no such page"),
        (("--as", "admin", "--format", "pdf"), "--format pdf"),
    ):
        result = run_cli("report", *args, "--out", str(tmp_path / "r"), "-c", str(project))
        assert result.code == 2, result.text
        [line] = result.err.strip().splitlines()
        assert says in line
    assert not (tmp_path / "r").exists()


def test_a_run_writes_its_reports_after_publish(project: Path) -> None:
    out = project.parent / "reports" / "eu"
    assert sorted(p.name for p in out.glob("*.html")) == sorted(f"{p}.html" for p in PAGES)
    assert not list(out.glob("*.png"))  # formats: [html]
    store = open_state(load_project(project))
    try:
        [run] = store.runs.latest(1)
        events = [e.state for e in store.runs.events(run.run_id)]
    finally:
        store.close()
    assert run.status == "succeeded"
    assert events.index("report") > events.index("publish")


def test_a_report_that_fails_fails_its_state_not_the_load(
    project: Path, source: Database, tmp_path: Path
) -> None:
    data = yaml.safe_load(project.read_text())
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    data["orchestration"]["reports"] = [{"as": "admin", "out": str(blocker / "r")}]
    config = project.parent / "failing.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with source.connect(autocommit=True) as conn:
        conn.execute("update shop.customers set city = 'Reportville' where customer_id = 1")
    cli(config, "capture", "--once", "-q")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.code != 0
    assert "report as admin" in result.text
    # the load it followed stays: the change is in the warehouse
    city = cli(
        config,
        "query",
        "--as",
        "admin",
        "--format",
        "json",
        "select city from dim_customer where customer_id = 1 and is_current_record",
    )
    assert json.loads(city.out) == [{"city": "Reportville"}]


def test_a_busy_warehouse_is_waited_for_then_one_line(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riverbed.errors import RiverbedError
    from riverbed.serve import report

    loaded = load_project(project)
    warehouse = loaded.path(loaded.config.warehouse.path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(warehouse)!r}); print('held', flush=True);"
            " time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(report, "BUSY_TRIES", 2)
        monkeypatch.setattr(report, "BUSY_PAUSE", 0.1)
        monkeypatch.setattr("riverbed.load.duckdb_warehouse.LOCK_WAIT_SECONDS", 0.5)
        # the product trends are answered from the extract, which no load locks
        trends = report.Request("admin", tmp_path / "trends", ("product-trends",), ("html",))
        assert report.make_report(loaded, trends)
        # the seller table too now; customer_refunds reads its customers' personal columns
        # live: it waits, then says so
        sellers = report.Request("admin", tmp_path / "sellers", ("seller-behaviour",), ("html",))
        assert report.make_report(loaded, sellers)
        request = report.Request("admin", tmp_path / "busy", ("consumer-statistics",), ("html",))
        with pytest.raises(RiverbedError, match="locked by a load") as raised:
            report.make_report(loaded, request)
        assert "\n" not in str(raised.value)
    finally:
        holder.kill()
        holder.wait()


def test_reports_are_off_by_default_and_checked_at_load() -> None:
    from riverbed.config import demo_config_text, parse_config
    from riverbed.errors import ConfigError
    from riverbed.orchestrate.machine import default_machine

    plain = parse_config(demo_config_text(), "demo")
    assert plain.orchestration.reports == []
    assert "report" not in default_machine(plain).states
    text = demo_config_text().replace(
        "  notify: [console]\n\n",
        "  notify: [console]\n  reports: [{as: eu_analyst, out: r}]\n\n",
        1,
    )
    configured = parse_config(text, "demo")
    machine = default_machine(configured)
    assert machine.states["publish"].next == "report"  # type: ignore[union-attr]
    for wrong, says in (
        ("{as: mallory, out: r}", "orchestration.reports[0].as: 'mallory' is not a principal"),
        ("{as: admin, out: r, pages: [nowhere]}", "orchestration.reports.0.pages.0"),
        ("{as: admin, out: r, formats: [pdf]}", "orchestration.reports.0.formats.0"),
    ):
        bad = text.replace("{as: eu_analyst, out: r}", wrong)
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse_config(bad, "demo")


def test_without_chromium_the_report_is_html_and_one_line_saying_so(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riverbed.serve import report, screenshots

    monkeypatch.setattr(screenshots, "chromium", lambda: None)
    lines: list[str] = []
    request = report.Request("eu_analyst", tmp_path / "r", ("seller-behaviour",))
    report.make_report(load_project(project), request, lines.append)
    assert lines[0] == report.NO_CHROMIUM and "apt install chromium" in lines[0]
    assert [line for line in lines if line.startswith("seller-behaviour: ")]
    assert not list((tmp_path / "r").glob("*.png"))
    assert (tmp_path / "r" / "seller-behaviour.html").is_file()


def test_without_playwright_the_line_names_the_package_not_chromium(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a pip install without the test extra has no Playwright, whatever apt installed
    from riverbed.serve import report

    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import fails
    lines: list[str] = []
    request = report.Request("eu_analyst", tmp_path / "r", ("seller-behaviour",))
    report.make_report(load_project(project), request, lines.append)
    assert lines[0].startswith("PNG skipped: Playwright is not installed"), lines[0]
    assert "pip install" in lines[0] and "apt install chromium" not in lines[0]
    assert (tmp_path / "r" / "seller-behaviour.html").is_file()
