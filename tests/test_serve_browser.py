"""Issue 19: the dashboards in a real browser. Playwright for Python drives Debian's chromium
(``executable_path``: Playwright's own browser download cannot work here) against a real
`riverbed serve` on the shop with a history of conftest's shop_history.

The admin logs in, opens each page and sees every chart drawn by plotly with data, narrows by
region and sees the numbers change, drills from a category to its products and from a seller
to its returns by reason, downloads a chart's CSV and logs out; the EU analyst sees Europe's
rows only, and no personal value in clear. No console error and no Content-Security-Policy
violation on any page (plotly.js runs under ``script-src 'self'``, no eval).

Screenshots: with RIVERBED_SCREENSHOTS=docs/screenshots the test saves each page there (what
the README shows): ``RIVERBED_SCREENSHOTS=docs/screenshots pytest tests/test_serve_browser.py``.
Without a chromium executable the tests skip, saying so; CI (.ci/run) installs it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shop_support import PASSWORDS

from conftest import Database, start_cli
from riverbed.config import Project

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium executable on PATH (apt-get install chromium)"
)
PAGES = ("product-trends", "seller-behaviour", "consumer-statistics", "pipeline-health")
# a securitypolicyviolation listener, installed before any page script runs
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""
# each drawn figure: its chart, plotly's traces and points, whether plotly drew its svg
PLOTS = """
() => Array.from(document.querySelectorAll('.plot')).map(n => ({
  chart: n.dataset.chart || n.dataset.health, measure: n.dataset.measure,
  state: n.closest('figure').dataset.state,
  svg: !!n.querySelector('.main-svg'),
  traces: (n.data || []).length,
  points: (n.data || []).reduce((s, t) => s + (t.z || t.x || t.y || []).length, 0),
  total: (n.data || []).reduce((s, t) => s + (t.y || []).reduce((a, v) => a + (+v || 0), 0), 0),
  names: (n.data || []).map(t => t.name),
}))
"""


@pytest.fixture(scope="module")
def duck(shop_history: dict[str, Project]) -> Project:
    return shop_history["duckdb"]


@pytest.fixture(scope="module")
def server(duck: Project) -> Iterator[str]:
    """A real `riverbed serve` on a free port; its URL."""
    assert duck.config_path is not None
    proc = start_cli("serve", "--port", "0", "-c", str(duck.config_path))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+) ", line)
        assert found, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield found.group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield launched
        launched.close()


class Tab:
    """A logged-in browser tab that records console errors, page errors and CSP violations."""

    def __init__(self, browser: Any, url: str, principal: str) -> None:
        self.url = url
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.add_init_script(WATCH_CSP)
        self.page.goto(f"{url}/login")
        self.page.fill("#principal", principal)
        self.page.fill("#password", PASSWORDS[principal])
        self.page.click("form.login button[type=submit]")
        self.page.wait_for_url(f"{url}/product-trends")
        self.ready()

    def ready(self) -> None:
        self.page.wait_for_selector("main[data-ready=true]", timeout=30_000)
        self.problems += [f"CSP: {v}" for v in self.page.evaluate("window.__csp")]

    def open(self, path: str) -> None:
        self.page.goto(f"{self.url}{path}")
        self.ready()

    def plots(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.page.evaluate(PLOTS)
        return found

    def plot(self, chart: str, measure: str = "") -> dict[str, Any]:
        return next(p for p in self.plots() if p["chart"] == chart and p["measure"] == measure)

    def table(self, chart: str) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = self.page.evaluate(
            """chart => {
              const t = document.querySelector(`.plot-table[data-chart="${chart}"] table`);
              const head = Array.from(t.querySelectorAll('th')).map(h => h.textContent);
              return Array.from(t.querySelectorAll('tbody tr')).map(r => Object.fromEntries(
                Array.from(r.children).map((c, i) => [head[i], c.textContent])));
            }""",
            chart,
        )
        return rows

    def all_drawn(self) -> None:
        """Every chart of the page drawn by plotly with data; no 'no data' message."""
        for plot in self.plots():
            if plot["chart"] == "lag":
                continue  # capture lag: recorded only while capture --follow runs
            assert plot["state"] == "drawn" and plot["svg"], plot
            assert plot["traces"] and plot["points"], plot
        assert "No data for these filters" not in self.page.inner_text("main")
        assert "Could not load" not in self.page.inner_text("main")

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("RIVERBED_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_the_admin_reads_filters_drills_exports_and_logs_out(
    browser: Any, server: str, tmp_path: Path
) -> None:
    tab = Tab(browser, server, "admin")
    for name in PAGES:
        tab.open(f"/{name}")
        tab.all_drawn()
        assert "Data as of the last successful run, " in tab.page.inner_text("#freshness")
        tab.screenshot(name)
    # a filter changes every number: Europe's revenue is part of everyone's
    tab.open("/product-trends")
    everyone = tab.plot("revenue_by_category", "revenue")["total"]
    tab.page.fill("#f-region", "Europe")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url(re.compile(r"region=Europe"))
    tab.ready()
    tab.all_drawn()
    europe = tab.plot("revenue_by_category", "revenue")["total"]
    assert 0 < europe < everyone
    # drill: a category to its products
    link = tab.page.locator("#fig-revenue_by_category-revenue .drill-links a").first
    category = link.inner_text()
    link.click()
    tab.page.wait_for_url(re.compile(r"category="))
    tab.ready()
    tab.all_drawn()
    products = tab.plot("revenue_by_product", "revenue")
    assert products["traces"] >= 1
    assert tab.plot("revenue_by_category", "revenue")["names"] == [category]
    # drill: a seller to its returns by reason
    tab.open("/seller-behaviour")
    sellers = tab.table("seller_performance")
    assert sellers and {s["bucket"] for s in sellers} >= {"high", "low"}
    tab.page.locator('.plot-table[data-chart="seller_performance"] td a').first.click()
    tab.page.wait_for_url(re.compile(r"seller=\d+"))
    tab.ready()
    tab.all_drawn()
    assert tab.plot("seller_returns_by_reason")["points"] >= 1
    # the CSV of the sellers' table: the rows the page shows
    tab.open("/seller-behaviour")
    with tab.page.expect_download() as download:
        tab.page.click("#fig-seller_performance a.csv")
    saved = tmp_path / "sellers.csv"
    download.value.save_as(saved)
    exported = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [r["seller_id"] for r in exported] == [s["seller_id"] for s in sellers]
    assert [r["bucket"] for r in exported] == [s["bucket"] for s in sellers]
    # log out: the session is over
    tab.page.click("form.logout button")
    tab.page.wait_for_url(f"{server}/login")
    tab.page.goto(f"{server}/product-trends")
    assert "/login" in tab.page.url
    assert tab.problems == []
    tab.context.close()


def test_the_eu_analyst_sees_europe_only_and_personal_values_masked(
    browser: Any, server: str, shop_source: Database
) -> None:
    tab = Tab(browser, server, "eu_analyst")
    tab.all_drawn()
    mine = tab.plot("revenue_by_category", "revenue")["total"]
    tab.open("/consumer-statistics")
    tab.all_drawn()
    customers = tab.table("customer_refunds")
    assert customers and {c["customer_region"] for c in customers} == {"Europe"}
    assert _listed(tab, "regions") == ["Europe"]  # the regions the analyst may see
    with shop_source.connect() as conn:
        emails = {r[0] for r in conn.execute("select email from shop.customers").fetchall()}
        every = sorted(r[0] for r in conn.execute("select distinct region from shop.customers"))
    assert not {c["email"] for c in customers} & emails
    # every chart's data, fetched by the page's own session: Europe only
    regions = tab.page.evaluate(
        """async () => {
          const found = [];
          for (const c of ['customer_refunds', 'seller_performance']) {
            const body = await (await fetch('/api/charts/' + c)).json();
            found.push(...body.rows.map(r => r.customer_region || 'seller:' + r.seller_region));
          }
          return found;
        }"""
    )
    assert "Europe" in regions and not {r for r in regions if not r.startswith("seller:")} - {
        "Europe"
    }
    tab.page.close()
    # the admin narrowed to Europe sees the analyst's revenue
    admin = Tab(browser, server, "admin")
    admin.open("/product-trends?region=Europe")
    assert admin.plot("revenue_by_category", "revenue")["total"] == pytest.approx(mine)
    # the region filter offers every customer region, not those of the top customers shown
    admin.open("/consumer-statistics?region=Europe")
    assert _listed(admin, "regions") == every
    assert tab.problems == [] and admin.problems == []
    tab.context.close()
    admin.context.close()


def _listed(tab: Tab, datalist: str) -> list[str]:
    """The values a filter's datalist offers."""
    found: list[str] = tab.page.eval_on_selector_all(
        f"#{datalist} option", "options => options.map(o => o.value)"
    )
    return found
