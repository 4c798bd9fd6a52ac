"""The server-rendered pages: the login form, logout, the dashboards' places in the nav and the
governed ad-hoc query page.

Every page but /login needs a session (else a redirect to /login, which comes back after);
every form posts its CSRF token (riverbed.serve.csrf). The query page runs the principal's SQL
through the gateway audited as ``web``, shows at most ``serve.max_rows`` rows and says when
there were more, and offers the same query as a CSV download (/api/query.csv, audited as
``export``). The dashboards (``DASHBOARDS``) are rendered from ``<slug>.html`` templates with
their filters, freshness line and fair comparison (riverbed.serve.dashboards); their charts are
drawn in the browser from the JSON API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from riverbed.serve import csrf
from riverbed.serve.auth import Refused
from riverbed.serve.context import Caller, caller, checked_csrf, client_address, served
from riverbed.serve.dashboards import page_view
from riverbed.serve.results import QueryFailed, fetch
from riverbed.serve.sessions import COOKIE

# (path, title): the nav, in order; / goes to the first
DASHBOARDS = [
    ("product-trends", "Product trends"),
    ("seller-behaviour", "Seller behaviour"),
    ("consumer-statistics", "Consumer statistics"),
    ("pipeline-health", "Pipeline health"),
]
NAV = [*DASHBOARDS, ("query", "Query")]

router = APIRouter(include_in_schema=False)
Who = Annotated[Caller, Depends(caller)]


def render(
    request: Request, template: str, status: int = 200, who: Caller | None = None, **values: Any
) -> HTMLResponse:
    context = {
        "nav": NAV,
        "principal": who.principal if who else None,
        "csrf_token": who.session.csrf if who and who.session else "",
        **values,
    }
    return served(request).templates.TemplateResponse(request, template, context, status)


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _local(target: str | None) -> str:
    """``target`` if it is a path on this site (not //host or a scheme), else /."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(f"/{DASHBOARDS[0][0]}", 303)


def login_form(
    request: Request, status: int = 200, error: str | None = None, next_path: str = "/"
) -> HTMLResponse:
    nonce, token = served(request).login_forms.issue()
    response = render(
        request, "login.html", status, login_token=token, error=error, next_path=_local(next_path)
    )
    _cookie(response, request, csrf.LOGIN_COOKIE, nonce, 3600)
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query
    return login_form(request, next_path=next)


@router.post("/login")
def login(
    request: Request,
    principal: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002 - the form's field
) -> Response:
    context = served(request)
    if not context.login_forms.valid(request.cookies.get(csrf.LOGIN_COOKIE), csrf_token):
        return login_form(request, 403, "the form expired; log in again", next)
    try:
        name = context.auth.login(principal, password, client_address(request))
    except Refused as exc:
        return login_form(request, 401, str(exc), next)
    session_id, _ = context.sessions.start(name)
    response = RedirectResponse(_local(next), 303)
    _cookie(response, request, COOKIE, session_id, int(context.settings.session_max_hours * 3600))
    response.delete_cookie(csrf.LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(
    request: Request, who: Who, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    checked_csrf(request, who, csrf_token)
    served(request).sessions.end(who.session_id)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/query")
def query_page(request: Request, who: Who) -> HTMLResponse:
    return render(request, "query.html", who=who, active="query", sql="", result=None)


@router.post("/query")
def query_run(
    request: Request,
    who: Who,
    sql: Annotated[str, Form(max_length=100_000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    checked_csrf(request, who, csrf_token)
    context = served(request)
    values: dict[str, Any] = {"active": "query", "sql": sql, "result": None, "error": None}
    status = 200
    if sql.strip():
        try:
            values["result"] = fetch(context, who.principal, sql, "web", context.settings.max_rows)
        except QueryFailed as exc:
            status, values["error"] = exc.status, exc.message
    return render(
        request, "query.html", status, who=who, max_rows=context.settings.max_rows, **values
    )


def _dashboard(slug: str, title: str) -> None:
    def page(request: Request, who: Who) -> HTMLResponse:
        view = page_view(served(request).project, request.query_params)
        return render(
            request,
            f"{slug}.html",
            400 if view.error else 200,
            who=who,
            active=slug,
            title=title,
            **view.template_values(),
        )

    router.add_api_route(f"/{slug}", page, methods=["GET"], name=slug)


for _slug, _title in DASHBOARDS:
    _dashboard(_slug, _title)
