"""A small project for the web app's tests: a DuckDB warehouse of ten customers (five in the
EU, five in the US, each with an email), a policy with an admin who reads everything and an
EU analyst who reads EU customers with their emails redacted, passwords and a token in files,
and helpers to log in through the real form."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import yaml
from fastapi.testclient import TestClient

from conftest import write_config
from riverbed.config import load_project
from riverbed.serve.app import create_app
from riverbed.state import SQLiteStore
from riverbed.state.records import AuditRecord

PASSWORDS = {"admin": "admin-secret-pw", "eu_analyst": "eu-secret-pw"}
EU_TOKEN = "eu-api-token-0123456789"
# every customer's email in clear: none of the EU analyst's responses may hold one
EMAILS = [f"person{i}@mail.example" for i in range(10)]
EU_IDS = [0, 2, 4, 6, 8]


def make_project(folder: Path, serve: dict[str, Any] | None = None) -> Path:
    """The project in ``folder``; its riverbed.yaml's path. ``serve``: the serve: section."""
    folder.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect(str(folder / "wh.duckdb"))
    db.execute(
        "create table dim_customer as select i as customer_id, 'person' || i || '@mail.example'"
        " as email, case when i % 2 = 0 then 'EU' else 'US' end as region from range(10) t(i)"
    )
    db.execute("create table payroll as select 1 as salary")
    db.close()
    secrets = {}
    for name, value in [*PASSWORDS.items(), ("eu_token", EU_TOKEN)]:
        path = folder / f"{name}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
        secrets[name] = {"file": str(path)}
    config = {
        "warehouse": {"engine": "duckdb", "path": "wh.duckdb"},
        "governance": {
            "roles": {
                "boss": {"grants": [{"tables": ["*"]}]},
                "analyst": {
                    "grants": [
                        {
                            "tables": ["dim_customer"],
                            "row_filter": "region = principal.region",
                            "masks": {"email": "redact"},
                        }
                    ]
                },
            },
            "principals": {
                "admin": {"roles": ["boss"], "password": secrets["admin"]},
                "eu_analyst": {
                    "roles": ["analyst"],
                    "attributes": {"region": "EU"},
                    "password": secrets["eu_analyst"],
                    "token": secrets["eu_token"],
                },
                "no_password": {"roles": ["analyst"], "attributes": {"region": "US"}},
            },
        },
        "serve": serve or {},
    }
    return write_config(folder, yaml.safe_dump(config, sort_keys=False))


def client(config: Path, **options: Any) -> TestClient:
    return TestClient(create_app(load_project(config)), **options)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


def log_in(web: TestClient, principal: str, password: str | None = None) -> str:
    """Log in through the form; the session's CSRF token."""
    page = web.get("/login")
    response = web.post(
        "/login",
        data={
            "principal": principal,
            "password": PASSWORDS[principal] if password is None else password,
            "csrf_token": form_token(page.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return form_token(web.get("/query").text)


def audit_records(config: Path) -> list[AuditRecord]:
    store = SQLiteStore(config.parent / ".riverbed" / "state.db")
    try:
        return store.audit.records()
    finally:
        store.close()
