"""Issue 19 items 2 and 5: every dashboard chart as JSON (/api/charts/<name>) and CSV
(/api/charts/<name>.csv), a chart's ``limit`` (the top rows its page asks for), the
pipeline's health (/api/health/...), and the four pages that draw them (server-rendered
filters, freshness and the fair comparison; the charts themselves are drawn in a real
browser by tests/test_serve_browser.py).

On the shop with a history of conftest's shop_history: the API's numbers are chart_data's
(which tests/test_semantic.py checks against the source's own tables), as the caller, audited
as api or export; the EU analyst's JSON and CSV hold Europe's rows only, and no personal value
in clear.
"""

from __future__ import annotations

import csv
import io
import time
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serve_support import form_token
from shop_support import EU_TOKEN, PASSWORDS

from riverbed.config import Project
from riverbed.serve.app import create_app
from riverbed.serve.semantic import CHARTS, chart_data
from riverbed.serve.values import plain
from riverbed.state import open_state

EU = {"Authorization": f"Bearer {EU_TOKEN}"}


@pytest.fixture(scope="module")
def duck(shop_history: dict[str, Project]) -> Project:
    return shop_history["duckdb"]


@pytest.fixture(scope="module")
def admin(duck: Project) -> TestClient:
    """A browser session of the admin, logged in through the form."""
    web = TestClient(create_app(duck))
    response = web.post(
        "/login",
        data={
            "principal": "admin",
            "password": PASSWORDS["admin"],
            "csrf_token": form_token(web.get("/login").text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return web


def drill(duck: Project) -> dict[str, dict[str, Any]]:
    """Each chart's filters in these tests: a seller for the drill that needs one."""
    seller = chart_data(duck, "admin", "seller_performance").rows[0]["seller_id"]
    return {n: {"seller": str(seller)} if n == "seller_returns_by_reason" else {} for n in CHARTS}


def test_every_chart_is_listed_and_answered_as_chart_data_in_json_and_csv(
    duck: Project, admin: TestClient
) -> None:
    listed = admin.get("/api/charts").json()
    assert [c["name"] for c in listed] == list(CHARTS)
    assert {c["page"] for c in listed} == {
        "product-trends",
        "seller-behaviour",
        "consumer-statistics",
    }
    for name, filters in drill(duck).items():
        expected = chart_data(duck, "admin", name, filters)
        got = admin.get(f"/api/charts/{name}", params=filters)
        assert got.status_code == 200, (name, got.text)
        body = got.json()
        assert body["columns"] == expected.columns and body["meta"] == plain(expected.meta)
        assert body["rows"] == [{k: plain(v) for k, v in r.items()} for r in expected.rows]
        exported = admin.get(f"/api/charts/{name}.csv", params=filters)
        assert exported.status_code == 200 and exported.headers["content-type"].startswith(
            "text/csv"
        )
        assert f'filename="{name}.csv"' in exported.headers["content-disposition"]
        table = list(csv.reader(io.StringIO(exported.text)))
        assert table[0] == expected.columns and len(table) == len(expected.rows) + 1, name
    # money is an exact decimal string, counts are numbers, months ISO text
    row = admin.get("/api/charts/revenue_by_category").json()["rows"][0]
    assert isinstance(row["revenue"], str) and Decimal(row["revenue"]) > 0
    assert isinstance(row["units"], int) and len(row["month"]) == 7


def test_filters_narrow_the_json_and_the_csv_alike(admin: TestClient) -> None:
    everything = admin.get("/api/charts/revenue_by_category").json()["rows"]
    category = everything[0]["category"]
    narrowed = admin.get("/api/charts/revenue_by_category", params={"category": category})
    assert {r["category"] for r in narrowed.json()["rows"]} == {category}
    products = admin.get("/api/charts/revenue_by_product.csv", params={"category": category})
    rows = list(csv.DictReader(io.StringIO(products.text)))
    assert rows and {r["category"] for r in rows} == {category}
    europe = admin.get("/api/charts/customer_refunds", params={"region": "Europe"}).json()
    assert {r["customer_region"] for r in europe["rows"]} == {"Europe"}
    assert europe["meta"]["filters"] == {"region": "Europe"}


def test_unknown_charts_are_404_and_bad_filters_400_with_their_line(admin: TestClient) -> None:
    missing = admin.get("/api/charts/pie")
    assert missing.status_code == 404 and "no chart 'pie'" in missing.json()["detail"]
    assert admin.get("/api/charts/pie.csv").status_code == 404
    for params, message in [
        ({"date_from": "2026-13-45"}, "filter date_from = '2026-13-45': not a date"),
        ({"colour": "red"}, "unknown filter 'colour'"),
        ({"seller": "1; drop"}, "filter seller = '1; drop': not an id"),
    ]:
        for path in ("/api/charts/revenue_by_category", "/api/charts/revenue_by_category.csv"):
            answer = admin.get(path, params=params)
            assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
    needs = admin.get("/api/charts/seller_returns_by_reason")
    assert needs.status_code == 400 and "needs the filter seller" in needs.json()["detail"]


def test_the_eu_analyst_gets_europe_only_and_no_personal_value_in_clear(
    duck: Project, shop_source: Any
) -> None:
    web = TestClient(create_app(duck))
    assert web.get("/api/charts/customer_refunds").status_code == 401
    with shop_source.connect() as conn:
        people = conn.execute("select email, full_name, phone, region from shop.customers")
        personal = [v for row in people.fetchall() for v in row[:3] if v]
    before = time.time()
    seen = b""
    for name, filters in drill(duck).items():
        for suffix in ("", ".csv"):
            answer = web.get(f"/api/charts/{name}{suffix}", params=filters, headers=EU)
            assert answer.status_code == 200, answer.text
            seen += answer.content
    assert not [v for v in personal if v.encode() in seen]
    refunds = web.get("/api/charts/customer_refunds", headers=EU).json()["rows"]
    assert refunds and {r["customer_region"] for r in refunds} == {"Europe"}
    admin_rows = chart_data(duck, "admin", "customer_refunds").rows
    assert len(refunds) == len([r for r in admin_rows if r["customer_region"] == "Europe"])
    store = open_state(duck)
    try:
        paths = {r.path for r in store.audit.records(principal="eu_analyst", since=before)}
    finally:
        store.close()
    assert paths == {"api", "export"}


def test_pipeline_health_endpoints_need_a_login_and_read_the_state_store(
    duck: Project, admin: TestClient
) -> None:
    anonymous = TestClient(create_app(duck))
    for part in ("freshness", "runs", "quality", "lag", "alarms", "status"):
        assert anonymous.get(f"/api/health/{part}").status_code == 401
        assert admin.get(f"/api/health/{part}").status_code == 200, part
    assert admin.get("/api/health/freshness").json()["seconds_ago"] >= 0
    runs = admin.get("/api/health/runs", params={"limit": 5}).json()
    assert runs and runs[0]["status"] == "succeeded"
    timeline = admin.get(f"/api/health/runs/{runs[0]['run_id']}").json()
    assert {"transform", "facts"} <= {e["state"] for e in timeline["events"]}
    assert admin.get("/api/health/runs/nope").status_code == 404
    quality = admin.get("/api/health/quality").json()
    assert quality and {"rule", "failed", "rows_quarantined", "at"} <= set(quality[0])
    assert {a["alarm"] for a in admin.get("/api/health/alarms").json()} >= {"run_failed"}


def test_the_openapi_schema_and_docs_list_the_chart_and_health_endpoints(
    admin: TestClient,
) -> None:
    paths = admin.get("/openapi.json").json()["paths"]
    assert {"/api/charts", "/api/charts/{name}", "/api/charts/{name}.csv"} <= set(paths)
    assert {"/api/health/freshness", "/api/health/runs/{run_id}", "/api/health/quality"} <= set(
        paths
    )
    names = {p["name"] for p in paths["/api/charts/{name}"]["get"]["parameters"]}
    assert {"date_from", "date_to", "category", "region", "seller", "product"} <= names
    assert "/api/charts/{name}.csv" in admin.get("/docs").text


def test_pages_carry_filters_freshness_the_fair_comparison_and_their_charts(
    admin: TestClient,
) -> None:
    page = admin.get("/product-trends", params={"date_to": "2026-12-06", "category": "toys"})
    assert page.status_code == 200
    html = page.text
    assert "Data as of the last successful run, " in html and " s ago" in html
    assert "1–6 Dec 2026 vs 1–6 Nov 2026" in html
    assert 'data-query="date_to=2026-12-06&amp;category=toys"' in html
    assert 'data-chart="revenue_by_product"' in html and 'value="toys"' in html
    assert 'href="/api/charts/revenue_by_category.csv?date_to=2026-12-06&amp;category=toys"' in (
        html
    )
    assert "<script>" not in html and "<figcaption" in html and '<label for="f-region">' in html
    assert 'data-chart="revenue_by_product"' not in admin.get("/product-trends").text
    seller = admin.get("/seller-behaviour", params={"seller": "3"}).text
    assert 'data-chart="seller_returns_by_reason"' in seller
    assert '<input type="hidden" name="seller" value="3">' in seller
    consumers = admin.get("/consumer-statistics").text
    assert all(f'data-chart="{c}"' in consumers for c in ("cohort_retention", "customer_refunds"))
    assert 'data-health="timeline"' in admin.get("/pipeline-health").text
    bad = admin.get("/seller-behaviour", params={"date_from": "soon"})
    assert bad.status_code == 400 and "not a date" in bad.text and "data-chart" not in bad.text
    script = admin.get("/static/dashboards.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_a_limit_keeps_the_top_rows_states_itself_and_the_csv_keeps_every_row(
    admin: TestClient,
) -> None:
    listed = {c["name"]: c["page_limit"] for c in admin.get("/api/charts").json()}
    assert listed["customer_refunds"] == 100 and listed["revenue_by_category"] is None
    every = admin.get("/api/charts/customer_refunds").json()
    assert "limit" not in every["meta"] and len(every["rows"]) > 3
    top = admin.get("/api/charts/customer_refunds", params={"limit": "3"}).json()
    assert top["rows"] == every["rows"][:3]
    assert top["meta"]["limit"] == 3 and top["meta"]["rows_total"] == len(every["rows"])
    assert top["meta"]["answered_from"] == "extract"
    # a chart that does not rank in its query is cut after it is computed, stated alike
    months = admin.get("/api/charts/revenue_by_category").json()["rows"]
    first = admin.get("/api/charts/revenue_by_category", params={"limit": 1}).json()
    assert first["rows"] == months[:1] and first["meta"]["rows_total"] == len(months)
    exported = admin.get("/api/charts/customer_refunds.csv")
    assert len(list(csv.reader(io.StringIO(exported.text)))) == len(every["rows"]) + 1
    limited = admin.get("/api/charts/customer_refunds.csv", params={"limit": 2})
    assert len(list(csv.reader(io.StringIO(limited.text)))) == 3
    for bad, message in [
        ("0", "limit = 0: use 1 .. 100000 rows"),
        ("lots", "limit = 'lots': not a whole number of rows"),
        ("100001", "limit = 100001: use 1 .. 100000 rows"),
    ]:
        for path in ("/api/charts/customer_refunds", "/api/charts/customer_refunds.csv"):
            answer = admin.get(path, params={"limit": bad})
            assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
    # the page asks for its chart's page_limit; its CSV link for every row
    page = admin.get("/consumer-statistics").text
    assert 'data-chart="customer_refunds" data-kind="table" data-limit="100"' in page
    assert 'href="/api/charts/customer_refunds.csv"' in page
    assert 'data-chart="transaction_counts" data-kind="bars" data-measure="" role="img"' in page


def test_the_eu_analysts_top_customers_come_masked_from_the_extract(
    duck: Project, shop_source: Any
) -> None:
    web = TestClient(create_app(duck))
    with shop_source.connect() as conn:
        people = conn.execute("select email, full_name, phone from shop.customers")
        personal = [v for row in people.fetchall() for v in row if v]
    answer = web.get("/api/charts/customer_refunds", params={"limit": 100}, headers=EU)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["meta"]["answered_from"] == "extract" and body["rows"]
    assert {r["customer_region"] for r in body["rows"]} == {"Europe"}
    assert not [v for v in personal if v.encode() in answer.content]
    assert all(r["email"] and "@" not in r["email"] for r in body["rows"])


def test_the_consumer_pages_regions_are_every_region_the_reader_may_see(
    duck: Project, shop_source: Any, admin: TestClient
) -> None:
    """The region filter's list comes from the customers' dimension through the gateway,
    not from the customer_refunds rows the page shows (the top 100, or fewer regions)."""
    with shop_source.connect() as conn:
        regions = sorted(r[0] for r in conn.execute("select distinct region from shop.customers"))
    assert len(regions) > 1
    top = admin.get("/api/charts/customer_refunds", params={"limit": 1}).json()["rows"]
    assert len({r["customer_region"] for r in top}) < len(regions)
    listed = admin.get("/api/choices/customer_region")
    assert listed.status_code == 200 and listed.json() == {
        "name": "customer_region",
        "values": regions,
    }
    web = TestClient(create_app(duck))
    assert web.get("/api/choices/customer_region").status_code == 401
    before = time.time()
    europe = web.get("/api/choices/customer_region", headers=EU)
    assert europe.status_code == 200 and europe.json()["values"] == ["Europe"]
    store = open_state(duck)
    try:
        records = store.audit.records(principal="eu_analyst", since=before)
    finally:
        store.close()
    assert [(r.path, r.tables) for r in records] == [("api", ("dim_customer",))]
    assert admin.get("/api/choices/customer_email").status_code == 404
    page = admin.get("/consumer-statistics").text
    assert '<datalist id="regions" data-choices="/api/choices/customer_region">' in page
    sellers = admin.get("/seller-behaviour", params={"region": regions[0]}).text
    assert '<datalist id="regions" data-choices="/api/choices/seller_region">' in sellers
    with shop_source.connect() as conn:
        seller_regions = sorted(
            r[0] for r in conn.execute("select distinct region from shop.sellers")
        )
    assert admin.get("/api/choices/seller_region").json()["values"] == seller_regions
