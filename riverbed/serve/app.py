"""The web app of `riverbed serve`: ``create_app(project)`` puts it together.

What each part holds (each its own module):

- ``pages``: login, logout, the dashboards' pages, the governed query page (HTML, Jinja2).
- ``api``: the JSON API and CSV export of ad-hoc queries; ``charts_api``: every dashboard
  chart's data as JSON and CSV, and the pipeline's health; ``docs``: their reference at /docs.
- ``metrics``: /metrics for Prometheus, without a login, as before the app existed.
- ``static``: the CSS and plotly.js, by name only.
- ``sessions``, ``auth``, ``csrf``: who is logged in, how they logged in, forged requests.
- ``results``: every data request, through the gateway as the caller (``query_as``).
- ``audit_store``: the state store their audit records go to, one per process, closed when
  the app shuts down.
- ``security``: the headers on every response and the request size cap.

Errors become answers here: no login is 401 (JSON, with ``WWW-Authenticate: Bearer``) for the
API and a redirect to /login for a page; a missing CSRF token is 403; a query that fails is
its ``QueryFailed`` status (503 while a load holds the warehouse) as JSON or as a page.

Handlers that query are plain ``def`` functions: FastAPI runs them in its thread pool, so a
query waiting on the warehouse never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from riverbed.config import Project
from riverbed.govern.credentials import Credentials
from riverbed.serve import api, charts_api, docs, pages
from riverbed.serve.audit_store import close as close_audit_store
from riverbed.serve.auth import Authenticator, Lockout
from riverbed.serve.context import TEMPLATES, CsrfRefused, NotLoggedIn, Served
from riverbed.serve.csrf import LoginForms, secret_key
from riverbed.serve.metrics import metrics_router
from riverbed.serve.results import QueryFailed
from riverbed.serve.security import BodyLimit, SecurityHeaders
from riverbed.serve.sessions import Sessions
from riverbed.serve.static import static_router
from riverbed.state import existing_state

SECRET_FILE = "serve.secret"  # under the project's .riverbed


def create_app(project: Project, refresh_metrics: Callable[[], None] | None = None) -> FastAPI:
    """The app serving ``project``; ``refresh_metrics`` runs before each /metrics scrape.
    Reads every principal's password and token now (GovernError if one cannot be)."""
    from riverbed.govern.logins import ensure_logins

    ensure_logins(project)  # the demo's logins, for a library user who never ran the CLI
    settings = project.config.serve
    context = Served(
        project=project,
        settings=settings,
        sessions=Sessions(settings.session_idle_minutes * 60, settings.session_max_hours * 3600),
        auth=Authenticator(
            Credentials.from_config(project.config.governance),
            Lockout(settings.lockout_failures, settings.lockout_minutes * 60),
        ),
        login_forms=LoginForms(secret_key(project.home / SECRET_FILE)),
        templates=Jinja2Templates(directory=str(TEMPLATES)),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        close_audit_store(project)  # the audit records' store, shared by the request threads

    app = FastAPI(
        lifespan=lifespan,
        title="Riverbed",
        summary="Governed queries on the warehouse: every row through the gateway, audited.",
        docs_url=None,  # its Swagger UI loads from a CDN; docs.router serves one offline
        redoc_url=None,
    )
    app.state.served = context
    for router in (
        pages.router,
        api.router,
        charts_api.router,
        charts_api.health_router,
        docs.router,
        static_router(),
        metrics_router(lambda: existing_state(project), refresh_metrics),
    ):
        app.include_router(router)
    _answer_errors(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # the outermost
    return app


def mint_session(app: FastAPI, principal: str) -> str:
    """A session of ``principal`` in ``app``, without a password: its id, for the cookie.
    A Python call only, for a local command that already runs as the machine's user
    (`riverbed report`); no route calls it, so over HTTP a session still takes a login.
    GovernError for a principal the policy does not name."""
    from riverbed.govern.policy import GovernError

    context: Served = app.state.served
    if principal not in context.project.config.governance.principals:
        raise GovernError(f"no principal {principal!r} in governance.principals")
    session_id, _ = context.sessions.start(principal)
    return session_id


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _answer_errors(app: FastAPI) -> None:
    @app.exception_handler(NotLoggedIn)
    def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if _wants_json(request) or request.method != "GET":
            return JSONResponse({"detail": exc.reason}, 401, headers={"WWW-Authenticate": "Bearer"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)

    @app.exception_handler(CsrfRefused)
    def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        detail = "missing or wrong CSRF token; reload the page and try again"
        if _wants_json(request):
            return JSONResponse({"detail": detail}, 403)
        return pages.render(request, "error.html", 403, message=detail)

    @app.exception_handler(QueryFailed)
    def query_failed(request: Request, exc: QueryFailed) -> Response:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, exc.status, headers=headers)
        return pages.render(request, "error.html", exc.status, message=exc.message)
