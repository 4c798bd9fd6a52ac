"""The web app as its users meet it: the pages after a login, the governed query page, the
JSON API and CSV export (the EU analyst's rows only, emails redacted, in each), /api/me,
/docs without internet, /metrics without a login, each request audited with the way it came
in, a 503 while a load holds the warehouse, and `riverbed serve` as a real process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_support import (
    EMAILS,
    EU_IDS,
    EU_TOKEN,
    PASSWORDS,
    audit_records,
    client,
    form_token,
    log_in,
    make_project,
)

from conftest import run_cli, start_cli

EU_ROWS = [[i, "***", "EU"] for i in EU_IDS]
ALL = "select * from dim_customer order by customer_id"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project", serve={"max_rows": 3})


@pytest.fixture
def web(config: Path) -> Iterator[TestClient]:
    with client(config) as test_client:
        yield test_client


def test_a_login_opens_the_pages_and_the_nav(web: TestClient) -> None:
    assert web.get("/", follow_redirects=False).headers["location"] == "/product-trends"
    log_in(web, "admin")
    page = web.get("/")
    assert page.status_code == 200 and str(page.url).endswith("/product-trends")
    for label in ("Product trends", "Seller behaviour", "Consumer statistics"):
        assert label in page.text
    assert 'aria-label="Main"' in page.text and "Signed in as <strong>admin</strong>" in page.text
    for path in ("/seller-behaviour", "/consumer-statistics", "/pipeline-health", "/query"):
        assert web.get(path).status_code == 200, path
    # the page asked for before the login is where the login goes
    other = TestClient(web.app)
    asked = other.get("/pipeline-health", follow_redirects=False)
    assert asked.headers["location"] == "/login?next=%2Fpipeline-health"
    login = other.get(asked.headers["location"])
    assert 'name="next" value="/pipeline-health"' in login.text
    assert '<label for="principal">' in login.text and '<label for="password">' in login.text


def test_the_query_page_shows_the_principals_rows_capped_with_a_notice(web: TestClient) -> None:
    token = log_in(web, "eu_analyst")
    page = web.post("/query", data={"sql": ALL, "csrf_token": token})
    assert page.status_code == 200
    cells = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>(\w+)</td></tr>", page.text)
    assert cells == [("0", "***", "EU"), ("2", "***", "EU"), ("4", "***", "EU")]  # max_rows 3
    assert "Showing the first 3 rows; the query has more." in page.text
    assert 'action="/api/query.csv"' in page.text  # the download of the same query
    few = web.post("/query", data={"sql": "select 1 as one", "csrf_token": token})
    assert "1 row." in few.text and "the query has more" not in few.text
    refused = web.post("/query", data={"sql": "select * from payroll", "csrf_token": token})
    assert refused.status_code == 403 and "payroll does not exist" in refused.text


def test_the_api_and_the_export_hold_the_row_filter_and_the_mask(web: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {EU_TOKEN}"}
    answer = web.post("/api/query", json={"sql": ALL, "limit": 100}, headers=bearer)
    assert answer.status_code == 200, answer.text
    # the row cap of the config holds whatever the limit asked
    assert answer.json() == {
        "columns": ["customer_id", "email", "region"],
        "rows": EU_ROWS[:3],
        "truncated": True,
    }
    exported = web.post("/api/query.csv", json={"sql": ALL}, headers=bearer)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    assert exported.text.splitlines() == [
        '"customer_id","email","region"',
        *[f'{i},"***","EU"' for i in EU_IDS],
    ]
    empty = web.post("/api/query.csv", json={"sql": ALL.replace("order", "where false order")})
    assert empty.status_code == 401  # no token, no session
    empty = web.post(
        "/api/query.csv", json={"sql": "select * from dim_customer where false"}, headers=bearer
    )
    assert empty.text == '"customer_id","email","region"\n'
    # the browser's download: the form of the query page, with its CSRF token
    token = log_in(web, "eu_analyst")
    downloaded = web.post("/api/query.csv", data={"sql": ALL, "csrf_token": token})
    assert downloaded.text == exported.text
    for response in (answer, exported, downloaded):
        assert not any(email.encode() in response.content for email in EMAILS)


def test_the_admin_reads_everything(web: TestClient) -> None:
    token = log_in(web, "admin")
    answer = web.post("/api/query", json={"sql": ALL, "limit": 2}, headers={"X-CSRF-Token": token})
    assert answer.json()["rows"] == [[0, EMAILS[0], "EU"], [1, EMAILS[1], "US"]]


def test_a_warehouse_of_another_schema_says_the_dashboards_need_the_shops(
    web: TestClient,
) -> None:
    """This warehouse holds dim_customer and payroll, no shop: a chart says which tables it
    lacks, the same to every reader (404), not the refusal of a table not granted."""
    for login in (lambda: log_in(web, "admin"), lambda: log_in(web, "eu_analyst")):
        login()
        answer = web.get("/api/charts/monthly_growth")
        assert answer.status_code == 404, answer.text
        detail = answer.json()["detail"]
        assert "fact_order_items_current" in detail and "pipeline health" in detail
        assert "dim_customer" not in detail.split("no ")[1].split(":")[0]  # it exists
        assert web.get("/api/health/runs").status_code == 200


def test_me_lists_the_principals_tables(web: TestClient) -> None:
    answer = web.get("/api/me", headers={"Authorization": f"Bearer {EU_TOKEN}"})
    assert answer.json() == {
        "principal": "eu_analyst",
        "tables": {"dim_customer": ["customer_id", "email", "region"]},
    }


def test_every_request_is_audited_with_its_way_in(config: Path, web: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {EU_TOKEN}"}
    web.post("/api/query", json={"sql": "select 1 as api"}, headers=bearer)
    web.post("/api/query.csv", json={"sql": "select 2 as export"}, headers=bearer)
    token = log_in(web, "eu_analyst")
    web.post("/query", data={"sql": "select 3 as web", "csrf_token": token})
    web.post("/query", data={"sql": "select * from payroll", "csrf_token": token})
    records = sorted(audit_records(config), key=lambda r: r.id)
    assert [(r.principal, r.path, r.sql, r.allowed) for r in records] == [
        ("eu_analyst", "api", "select 1 as api", True),
        ("eu_analyst", "export", "select 2 as export", True),
        ("eu_analyst", "web", "select 3 as web", True),
        ("eu_analyst", "web", "select * from payroll", False),
    ]


def test_docs_work_offline_and_metrics_need_no_login(web: TestClient) -> None:
    schema = web.get("/openapi.json").json()
    assert {"/api/query", "/api/query.csv", "/api/me"} <= set(schema["paths"])
    docs = web.get("/docs")
    assert docs.status_code == 200 and "/api/query.csv" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text  # nothing from a CDN
    metrics = web.get("/metrics")
    assert metrics.status_code == 200 and "riverbed_up 1.0" in metrics.text
    plotly = web.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and b"plotly" in plotly.content[:2000].lower()
    assert web.get("/static/riverbed.css").status_code == 200


LOCKER = """
import sys, time, duckdb
db = duckdb.connect(sys.argv[1])  # a writer, as a run's load holds the file
print("locked", flush=True)
time.sleep(60)
"""


def test_a_load_holding_the_warehouse_is_a_quick_503(config: Path, web: TestClient) -> None:
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(config.parent / "wh.duckdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        bearer = {"Authorization": f"Bearer {EU_TOKEN}"}
        started = time.monotonic()
        answer = web.post("/api/query", json={"sql": ALL}, headers=bearer)
        waited = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"] == (
            "the warehouse is being loaded; try again in a few seconds"
        )
        assert answer.headers["retry-after"] == "5"
        assert waited < 10  # warehouse_wait_seconds (1 s), not DuckDB's 15 s
        assert web.post("/api/query.csv", json={"sql": ALL}, headers=bearer).status_code == 503
        token = log_in(web, "eu_analyst")
        page = web.post("/query", data={"sql": ALL, "csrf_token": token})
        assert page.status_code == 503 and "being loaded" in page.text
    finally:
        locker.kill()
        locker.wait()
    assert web.post("/api/query", json={"sql": ALL}, headers=bearer).status_code == 200


def test_riverbed_serve_runs_uvicorn_on_127_0_0_1(config: Path) -> None:
    proc = start_cli("serve", "--port", "0", "-c", str(config))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"serving (http://127\.0\.0\.1:(\d+)) ", line)
        assert found, line + (proc.stderr.read() if proc.poll() is not None else "")
        url, port = found.group(1), found.group(2)
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as http:
            assert "riverbed_up 1.0" in http.get("/metrics").text
            login = http.get("/login")
            assert login.headers["x-frame-options"] == "DENY"
            logged_in = http.post(
                "/login",
                data={
                    "principal": "eu_analyst",
                    "password": PASSWORDS["eu_analyst"],
                    "csrf_token": form_token(login.text),
                },
            )
            assert logged_in.status_code == 200 and "Product trends" in logged_in.text
            token = form_token(http.get("/query").text)
            answer = http.post("/api/query", json={"sql": ALL}, headers={"X-CSRF-Token": token})
            assert answer.json()["rows"] == EU_ROWS[:3]
        # the port is taken: a second server says so in one line
        taken = run_cli("serve", "--port", port, "-c", str(config), timeout=60)
        assert taken.code == 1
        assert taken.err.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in (
            taken.err
        ), taken.err
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "stopped", out
    audited = json.loads(run_cli("audit", "--json", "-c", str(config)).out)
    assert [(r["principal"], r["path"], r["sql"]) for r in audited] == [("eu_analyst", "api", ALL)]
