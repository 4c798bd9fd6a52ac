"""The dashboards as a principal's browser shows them: the web app started in this process,
a session minted for the principal, and each page photographed by headless Chromium.

``LocalApp`` runs ``create_app(project)`` under uvicorn in a thread, on 127.0.0.1 and a free
port, for as long as its ``with`` block lasts. The session comes from ``mint_session``
(riverbed.serve.app): a Python call on the app's own session table, which no HTTP route
reaches, so a local admin command needs no password and the web app gains no way in.

``screenshot`` drives Debian's ``chromium`` through Playwright (Playwright's own browser
download cannot work offline): the page is loaded with the session's cookie, the report waits
until the network is idle (the page's charts have fetched their data, through the same routes
and the same gateway as in a person's browser) and saves the full page as PNG. ``chromium``
is /usr/bin/chromium or whatever ``chromium`` is on PATH; None means no PNG (the caller says
so). As root, Chromium's sandbox cannot start: it runs with ``--no-sandbox`` then.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riverbed.config import Project
from riverbed.errors import RiverbedError
from riverbed.serve.sessions import COOKIE

CHROMIUM = Path("/usr/bin/chromium")
START_SECONDS = 20.0
PAGE_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1280, "height": 900}  # a laptop's screen


def chromium() -> Path | None:
    """The Chromium executable to drive, or None when there is none (or no Playwright)."""
    try:
        import playwright.sync_api  # noqa: F401 - only whether it is installed
    except ImportError:
        return None
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def unavailable() -> str:
    """Why there is no browser to drive, as the fix: Playwright (a Python package) is not
    installed, else no Chromium executable was found."""
    try:
        import playwright.sync_api  # noqa: F401 - only whether it is installed
    except ImportError:
        return (
            "Playwright is not installed (pip install 'playwright>=1.44' into Riverbed's "
            "environment, then run the report again)"
        )
    return "no Chromium here (apt install chromium, then run the report again)"


@dataclass(frozen=True)
class LocalApp:
    base_url: str
    session_id: str


@contextmanager
def local_app(project: Project, principal: str) -> Iterator[LocalApp]:
    """The web app on 127.0.0.1 (a free port) in a thread, and a session of ``principal``."""
    import uvicorn

    from riverbed.serve.app import create_app, mint_session

    web = create_app(project)
    session_id = mint_session(web, principal)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    port = listening.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(web, log_config=None, log_level="warning", access_log=False, lifespan="off")
    )
    # off the main thread, uvicorn leaves the signals alone: Ctrl-C stays the command's
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listening]}, name="report-app", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            listening.close()
            raise RiverbedError("the web app did not start for the report")
        time.sleep(0.05)
    try:
        yield LocalApp(f"http://127.0.0.1:{port}", session_id)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listening.close()


@contextmanager
def browser(executable: Path, app: LocalApp) -> Iterator[Any]:
    """A Chromium page with ``app``'s session cookie."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as driver:
        chrome = driver.chromium.launch(executable_path=str(executable), args=args)
        try:
            context = chrome.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            context.add_cookies(
                [{"name": COOKIE, "value": app.session_id, "url": app.base_url}]  # type: ignore[list-item]
            )
            yield context.new_page()
        finally:
            chrome.close()


def screenshot(page: Any, app: LocalApp, slug: str) -> bytes:
    """The page ``/<slug>`` once its data has loaded, as PNG bytes."""
    page.goto(f"{app.base_url}/{slug}", wait_until="networkidle", timeout=PAGE_TIMEOUT_MS)
    if not page.url.rstrip("/").endswith(f"/{slug}"):
        raise RiverbedError(f"page {slug}: the web app sent the report to {page.url}")
    shot: bytes = page.screenshot(full_page=True, timeout=PAGE_TIMEOUT_MS)
    return shot
