"""The web app refuses what it must: wrong or unknown logins alike (no user enumeration),
repeated failures (lockout), missing, forged, expired and logged-out sessions, requests
without their CSRF token, wrong API tokens, another principal's rows, a masked column's
clear values in any response, path traversal on static files, oversized requests; and its
cookies and headers say what browsers must enforce."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_support import (
    EMAILS,
    EU_TOKEN,
    PASSWORDS,
    client,
    form_token,
    log_in,
    make_project,
)

from riverbed.serve.auth import LOCKED, LOGIN_REFUSED, Lockout
from riverbed.serve.sessions import COOKIE, Sessions

ALL = "select * from dim_customer"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def web(config: Path) -> Iterator[TestClient]:
    with client(config) as test_client:
        yield test_client


def attempt(web: TestClient, principal: str, password: str) -> tuple[int, str]:
    page = web.get("/login")
    response = web.post(
        "/login",
        data={"principal": principal, "password": password, "csrf_token": form_token(page.text)},
        follow_redirects=False,
    )
    return response.status_code, response.text


def test_wrong_password_unknown_principal_and_no_password_read_alike(web: TestClient) -> None:
    answers = [
        attempt(web, "eu_analyst", "not-it"),
        attempt(web, "nobody", "not-it"),
        attempt(web, "no_password", "not-it"),
    ]
    assert {status for status, _ in answers} == {401}
    assert all(LOGIN_REFUSED in text for _, text in answers)
    # the pages differ only in their one-time tokens
    assert len({text.replace(form_token(text), "") for _, text in answers}) == 1
    assert COOKIE not in web.cookies


def test_repeated_failures_lock_the_principal_and_the_address(config: Path) -> None:
    with client(config) as web:
        for _ in range(5):
            assert attempt(web, "eu_analyst", "guess")[0] == 401
        status, text = attempt(web, "eu_analyst", PASSWORDS["eu_analyst"])
        assert status == 401 and LOCKED in text  # even the right password, while locked
        # the address is locked too: five failures from it, whatever names they tried
        status, text = attempt(web, "admin", PASSWORDS["admin"])
        assert status == 401 and LOCKED in text
    # another address may still log in as another principal (TestClient's address is fixed:
    # a fresh app stands for it here, the counts being per process)
    with client(config) as web:
        assert attempt(web, "admin", PASSWORDS["admin"])[0] == 303
    # a bearer token guessed from one address locks the address out of the API
    with client(config) as web:
        for _ in range(5):
            assert web.get("/api/me", headers={"Authorization": "Bearer guess"}).status_code == 401
        locked = web.get("/api/me", headers={"Authorization": f"Bearer {EU_TOKEN}"})
        assert locked.status_code == 401 and locked.json()["detail"] == LOCKED


def test_a_lockout_ends_after_its_window() -> None:
    now = [1000.0]
    lockout = Lockout(failures=3, window=300, clock=lambda: now[0])
    for _ in range(3):
        lockout.failed("principal:p", "client:a")
    assert lockout.locked("principal:p") and lockout.locked("client:a")
    assert not lockout.locked("principal:q", "client:b")
    now[0] += 301
    assert not lockout.locked("principal:p", "client:a")


def test_no_forged_or_missing_session_gets_in(web: TestClient) -> None:
    for cookies in ({}, {COOKIE: "forged-session-id"}, {COOKIE: ""}):
        web.cookies.clear()
        web.cookies.update(cookies)
        page = web.get("/query", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        api = web.post("/api/query", json={"sql": ALL})
        assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
        assert web.get("/api/me").status_code == 401
        assert web.post("/api/query.csv", json={"sql": ALL}).status_code == 401
    assert web.get("/api/me", headers={"Authorization": "Basic YWRtaW46eA=="}).status_code == 401
    assert web.get("/api/me", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_session_expires_when_idle_and_at_its_end() -> None:
    now = [0.0]
    sessions = Sessions(idle=60, lifetime=3600, clock=lambda: now[0])
    idle, _ = sessions.start("p")
    now[0] = 61
    assert sessions.get(idle) is None
    long, _ = sessions.start("p")
    for _ in range(70):  # used every 59 s, it still ends after an hour
        now[0] += 59
        if sessions.get(long) is None:
            break
    assert now[0] - 61 > 3600 - 59 and sessions.get(long) is None


def test_an_expired_session_sends_the_browser_to_the_login(tmp_path: Path) -> None:
    config = make_project(tmp_path / "short", serve={"session_idle_minutes": 0.01})
    with client(config) as web:
        log_in(web, "eu_analyst")
        time.sleep(0.8)
        page = web.get("/query", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fquery"


def test_logout_ends_the_session_on_the_server(web: TestClient) -> None:
    token = log_in(web, "eu_analyst")
    cookie = web.cookies[COOKIE]
    assert web.post("/logout", data={}).status_code == 403  # without its token
    out = web.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    web.cookies.set(COOKIE, cookie)  # the old cookie, kept by whoever copied it
    assert web.get("/query", follow_redirects=False).status_code == 303
    assert (
        web.post("/api/query", json={"sql": ALL}, headers={"X-CSRF-Token": token}).status_code
        == 401
    )


def test_every_post_with_the_cookie_needs_its_csrf_token(web: TestClient) -> None:
    # the login form: its token must match the nonce cookie it was issued with
    page = web.get("/login")
    data = {"principal": "eu_analyst", "password": PASSWORDS["eu_analyst"]}
    assert web.post("/login", data=data).status_code == 403
    assert web.post("/login", data={**data, "csrf_token": "forged"}).status_code == 403
    web.cookies.delete("riverbed_login")
    refused = web.post("/login", data={**data, "csrf_token": form_token(page.text)})
    assert refused.status_code == 403 and COOKIE not in web.cookies
    token = log_in(web, "eu_analyst")
    for wrong in ({}, {"csrf_token": "wrong"}, {"csrf_token": ""}):
        assert web.post("/query", data={"sql": ALL, **wrong}).status_code == 403
        assert web.post("/api/query.csv", data={"sql": ALL, **wrong}).status_code == 403
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        assert web.post("/api/query", json={"sql": ALL}, headers=headers).status_code == 403
        assert web.post("/api/query.csv", json={"sql": ALL}, headers=headers).status_code == 403
    ok = web.post("/api/query", json={"sql": ALL}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200
    # a bearer token is no ambient credential: no CSRF token needed
    web.cookies.clear()
    bearer = web.post(
        "/api/query", json={"sql": ALL}, headers={"Authorization": f"Bearer {EU_TOKEN}"}
    )
    assert bearer.status_code == 200


def test_another_principals_rows_and_clear_values_never_come_back(web: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {EU_TOKEN}"}
    attempts = [
        "select * from dim_customer where region = 'US'",
        "select email from dim_customer where email like 'person1@%'",
        "select * from payroll",
        "select * from information_schema.columns",
        "select * from read_csv('/etc/passwd')",
        "select string_agg(email, ',') as e from dim_customer",
    ]
    responses = []
    for sql in attempts:
        responses.append(web.post("/api/query", json={"sql": sql}, headers=bearer))
        responses.append(web.post("/api/query.csv", json={"sql": sql}, headers=bearer))
    token = log_in(web, "eu_analyst")
    for sql in attempts:
        responses.append(web.post("/query", data={"sql": sql, "csrf_token": token}))
    us = web.post("/api/query", json={"sql": attempts[0]}, headers=bearer)
    assert us.status_code == 200 and us.json()["rows"] == []
    refused = web.post("/api/query", json={"sql": "select * from payroll"}, headers=bearer)
    assert refused.status_code == 403 and "payroll does not exist" in refused.json()["detail"]
    for response in responses:
        assert response.status_code in (200, 403), response.text
        assert not any(email.encode() in response.content for email in EMAILS), response.text
        assert b"root:" not in response.content and b"salary" not in response.content


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static/....//....//etc/passwd",
        "/static/..%5c..%5cetc%5cpasswd",
        "/static/.riverbed.css",
        "/static/%00riverbed.css",
        "/static/",
        "/static/../templates/base.html",
        "/static/..%2ftemplates%2fbase.html",
        "/static/..%2fapp.py",
    ],
)
def test_static_files_refuse_path_traversal(web: TestClient, path: str) -> None:
    response = web.get(path)
    assert response.status_code == 404, (path, response.text[:200])
    assert b"root:" not in response.content and b"{% block" not in response.content


def test_oversized_requests_are_refused(web: TestClient) -> None:
    token = log_in(web, "eu_analyst")
    huge = "select 1 -- " + "x" * (1024 * 1024)
    sized = web.post("/api/query", json={"sql": huge}, headers={"X-CSRF-Token": token})
    assert sized.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"sql": "select 1 -- '
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}'

    chunked = web.post(
        "/api/query",
        content=chunks(),
        headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    form = web.post("/query", data={"sql": huge, "csrf_token": token})
    assert form.status_code == 413


def session_cookie(web: TestClient) -> str:
    """The Set-Cookie header of a login's session."""
    page = web.get("/login")
    response = web.post(
        "/login",
        data={
            "principal": "eu_analyst",
            "password": PASSWORDS["eu_analyst"],
            "csrf_token": form_token(page.text),
        },
        follow_redirects=False,
    )
    return next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE))


def test_cookies_and_headers_tell_the_browser_what_to_enforce(config: Path) -> None:
    with client(config) as web:
        cookie = session_cookie(web)
        page = web.get("/query")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text  # nothing inline for the CSP to allow
    with client(config, base_url="https://testserver") as secure:
        assert "Secure" in session_cookie(secure)


def test_a_login_goes_back_only_to_a_page_of_this_site(web: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = web.get("/login", params={"next": target})
        response = web.post(
            "/login",
            data={
                "principal": "eu_analyst",
                "password": PASSWORDS["eu_analyst"],
                "csrf_token": form_token(page.text),
                "next": target,
            },
            follow_redirects=False,
        )
        assert response.headers["location"] == "/", target


def test_serve_binds_127_0_0_1_by_default() -> None:
    import inspect

    from riverbed.cli.serve import serve

    defaults = inspect.signature(serve).parameters
    assert defaults["host"].default == "127.0.0.1" and defaults["port"].default == 8000


def test_what_a_user_typed_comes_back_escaped(web: TestClient) -> None:
    token = log_in(web, "eu_analyst")
    script = "<script>alert(1)</script>"
    page = web.post("/query", data={"sql": f"select '{script}' as x", "csrf_token": token})
    assert page.status_code == 200 and script not in page.text
    assert "&lt;script&gt;" in page.text
    assert script not in web.get("/login", params={"next": f'"><{script}'}).text
