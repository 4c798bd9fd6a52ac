"""What every response of the web app carries, and what no request may exceed.

``SecurityHeaders`` (pure ASGI, so streamed exports get them too) adds:

- ``Content-Security-Policy``: scripts only from this server's own files (no inline script,
  no eval), no frames of us anywhere (``frame-ancestors 'none'``), forms posting only here.
  Styles may be inline: plotly.js sets chart styles in ``<style>`` elements it writes.
- ``X-Frame-Options: DENY`` (the same for browsers before CSP), ``X-Content-Type-Options:
  nosniff``, ``Referrer-Policy: same-origin``, and ``Cache-Control: no-store`` on everything but
  the static files (governed rows must not stay in a shared cache or the browser's).

``BodyLimit`` refuses a request whose body is larger than ``limit`` bytes with 413: by its
``Content-Length`` before reading anything, and by counting what arrives for a chunked one.
Both are added around the whole app (riverbed.serve.app), so they hold for every route.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
TOO_LARGE = b'{"detail":"request body too large"}'


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in HEADERS if n not in names]
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class _TooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so the app answers it with 413 wherever the
    body is being read."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge()
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _refuse(send)


async def _refuse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(TOO_LARGE)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": TOO_LARGE})
