"""What the web app's routes share, and who is asking.

``Served`` holds the project, its ``serve:`` settings, the sessions, the authenticator, the
login forms' key and the templates; ``create_app`` makes one and keeps it in ``app.state``.

``caller`` answers who a request comes from: a bearer token (``Authorization: Bearer``), else
the session cookie; ``NotLoggedIn`` otherwise, which the app turns into 401 for the API and a
redirect to /login for pages. ``checked_csrf`` refuses (403) a POST authenticated by the
cookie that does not carry the session's CSRF token (riverbed.serve.csrf).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import Request
from fastapi.templating import Jinja2Templates

from riverbed.config import Project
from riverbed.config.serve import ServeConfig
from riverbed.serve import csrf
from riverbed.serve.auth import Authenticator, Refused
from riverbed.serve.sessions import COOKIE, Session, Sessions

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Served:
    project: Project
    settings: ServeConfig
    sessions: Sessions
    auth: Authenticator
    login_forms: csrf.LoginForms
    templates: Jinja2Templates


@dataclass(frozen=True)
class Caller:
    principal: str
    via: Literal["session", "token"]
    session: Session | None = None
    session_id: str | None = None


class NotLoggedIn(Exception):
    """No valid session or token; ``reason`` says which, for the API's 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(Exception):
    """A cookie-authenticated POST without the session's CSRF token (403)."""


def served(request: Request) -> Served:
    found: Served = request.app.state.served
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def caller(request: Request) -> Caller:
    """Who sent ``request``: its bearer token's principal, else its session's."""
    context = served(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise NotLoggedIn("use Authorization: Bearer <token>")
        try:
            return Caller(context.auth.bearer(token.strip(), client_address(request)), "token")
        except Refused as exc:
            raise NotLoggedIn(str(exc)) from None
    session_id = request.cookies.get(COOKIE)
    session = context.sessions.get(session_id)
    if session is None:
        raise NotLoggedIn("log in first: no session, or it has expired")
    return Caller(session.principal, "session", session, session_id)


def checked_csrf(request: Request, who: Caller, form_token: str | None = None) -> None:
    """CsrfRefused unless ``who`` came by token, or the request carries the session's CSRF
    token (``form_token``, else the X-CSRF-Token header)."""
    if who.session is None:
        return
    given = form_token if form_token is not None else request.headers.get(csrf.HEADER)
    if not csrf.matches(who.session.csrf, given):
        raise CsrfRefused()
