"""The web half of bench/serve.py: a real `riverbed serve` on the bench project, timed from a
browser and from many API clients at once. Not a benchmark itself.

* ``page_loads``: chromium (Playwright, Debian's /usr/bin/chromium) logs in once, then loads
  each dashboard page ``repeat`` times, each timed from navigation until every chart has
  settled (``main[data-ready=true]``: dashboards.js sets it when every chart's status has left
  "Loading…"), so HTML, scripts and every chart's data call are in it. Target: p95 < 1 s.
* ``concurrent_clients``: ``clients`` threads, each with its own httpx client and a bearer
  token, call ``/api/charts/<name>`` for the extract-answered charts in a loop for
  ``seconds`` while ``load`` (fact appends + the publish state's refresh, as `run --every`
  does) runs in another thread against the same project. Target: no error.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import yaml

from riverbed.serve.semantic import CHARTS

PAGES = ("product-trends", "seller-behaviour", "consumer-statistics")
PRINCIPAL = "admin"


def with_logins(config: Path) -> tuple[str, str]:
    """The admin of ``config`` given a password and a bearer token, each in a 0600
    ``{file:}`` secret beside it: (password, token)."""
    password, token = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    data = yaml.safe_load(config.read_text())
    principal = data["governance"]["principals"][PRINCIPAL]
    for key, value in (("password", password), ("token", token)):
        path = config.parent / f"{PRINCIPAL}.{key}"
        path.write_text(value + "\n")
        path.chmod(0o600)
        principal[key] = {"file": str(path)}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return password, token


@contextlib.contextmanager
def serving(config: Path) -> Iterator[str]:
    """`riverbed serve` on a free port for the ``with``; its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "riverbed", "serve", "--port", "0", "-c", str(config)],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+) ", line)
        if not found:
            raise RuntimeError(f"riverbed serve did not start: {line!r}")
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    at95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), at95


def page_loads(url: str, password: str, repeat: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{url}/login")
            page.fill("#principal", PRINCIPAL)
            page.fill("#password", password)
            page.click("form.login button[type=submit]")
            page.wait_for_selector("main[data-ready=true]", timeout=120_000)
            print(
                f"{'page':22} {'loads':>5} {'p50 ms':>8} {'p95 ms':>8}   (HTML + every chart's data)"
            )
            for name in PAGES:
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    page.goto(f"{url}/{name}")
                    page.wait_for_selector("main[data-ready=true]", timeout=120_000)
                    times.append(time.perf_counter() - started)
                p50, p95 = _percentiles(times)
                verdict = "PASS" if p95 < 1 else "FAIL"
                print(
                    f"{name:22} {repeat:5} {p50 * 1000:8.1f} {p95 * 1000:8.1f}"
                    f"   target p95 < 1000 ms: {verdict}"
                )
        finally:
            browser.close()


def concurrent_clients(
    url: str,
    token: str,
    charts: list[str],
    clients: int,
    seconds: float,
    load: Callable[[], object],
) -> None:
    """``clients`` API clients on ``charts`` for ``seconds`` while ``load`` runs in a loop."""
    stop = threading.Event()
    lock = threading.Lock()
    times: list[float] = []
    errors: list[str] = []
    loads: list[float] = []

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            turn = index
            while not stop.is_set():
                name = charts[turn % len(charts)]
                turn += 1
                started = time.perf_counter()
                try:
                    most = CHARTS[name].page_limit  # as its page asks for it
                    answer = http.get(f"/api/charts/{name}", params={"limit": most} if most else {})
                    failed = None if answer.status_code == 200 else f"{name}: {answer.status_code}"
                except httpx.HTTPError as error:
                    failed = f"{name}: {type(error).__name__} {error}"
                took = time.perf_counter() - started
                with lock:
                    times.append(took)
                    if failed:
                        errors.append(failed)

    def loader() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            load()
            loads.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=loader))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    p50, p95 = _percentiles(times)
    print(
        f"clients   {clients} concurrent API clients for {seconds:.0f} s on {len(charts)} extract"
        f" charts while {len(loads)} appends + refreshes ran ({statistics.mean(loads):.2f} s each):"
        f" {len(times):,} requests, {len(errors)} errors, p50 {p50 * 1000:.0f} ms,"
        f" p95 {p95 * 1000:.0f} ms   target no error: {'FAIL' if errors else 'PASS'}"
    )
    for error in sorted(set(errors))[:5]:
        print(f"          error: {error}")
