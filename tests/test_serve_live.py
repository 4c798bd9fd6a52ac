"""`riverbed serve` keeps working while the pipeline runs (issue 19, "Done when"): the demo shop
on the embedded PostgreSQL, then four real processes at once, `capture --follow`, `run --every
2`, `riverbed serve` and `shop run` traffic, while concurrent clients (half the admin with a
logged-in session, half the EU analyst with a bearer token) call every dashboard page, every
chart, the health endpoints, the query API and a CSV export, in a loop.

What must hold: no connection error; no 5xx but the documented 503 "the warehouse is being
loaded" of a live-answered request (a chart answered from the extract never waits on a load,
nor does a page or the health API); the numbers move forward as runs publish; the server's
open files and memory stay bounded (the extract keeps one connection per generation it reads,
and lets superseded generations go); every process still alive at the end, and each stops as
documented (exit 0 on SIGTERM or Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from shop_support import EU_TOKEN, PASSWORDS, with_logins
from test_e2e import SEED, Child, StateStore, children, cli, demo_project, wait_for

from conftest import Database, free_port

__all__ = ["children"]  # the fixture, imported for this module's test

CLIENTS = 24  # threads, each with its own connection pool
TRAFFIC_SECONDS = 15
BUSY = "the warehouse is being loaded; try again in a few seconds"
PAGES = ("/product-trends", "/seller-behaviour", "/consumer-statistics", "/pipeline-health")
HEALTH = ("freshness", "runs", "quality", "lag", "alarms", "status")
QUERY = "select count(*) as n from fact_order_items_current"
# the server's open extract generations: at most the current one and the one before
KEEP_OPEN = 2
EXTRACT_FILE = re.compile(r"/extracts/(\d{20}-[0-9a-f]{8})\.duckdb$")


@dataclass
class Tally:
    """What the clients saw: every status by kind of request, and what must not happen."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)  # (chart, extract|live)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, status: int, problem: str | None = None) -> None:
        with self.lock:
            self.statuses[(kind, status)] += 1
            if problem:
                self.wrong.append(problem)


def session_client(url: str) -> tuple[httpx.Client, dict[str, str]]:
    """The admin logged in through the form, and the header its POSTs need (CSRF)."""
    http = httpx.Client(base_url=url, timeout=90, follow_redirects=True)
    login = http.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]*)"', login.text)
    assert found, login.text
    form = {"principal": "admin", "password": PASSWORDS["admin"], "csrf_token": found.group(1)}
    assert http.post("/login", data=form).status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]*)"', http.get("/query").text)
    assert token
    return http, {"X-CSRF-Token": token.group(1)}


def bearer_client(url: str) -> tuple[httpx.Client, dict[str, str]]:
    headers = {"Authorization": f"Bearer {EU_TOKEN}"}
    return httpx.Client(base_url=url, timeout=90, headers=headers), {}


def requests(charts: dict[str, dict[str, str]]) -> list[tuple[str, str, str, Any]]:
    """One round of a client: (kind, method, path, body); kind names what may answer 503."""
    round_ = [("page", "GET", page, None) for page in PAGES]
    round_ += [("page", "GET", "/query", None)]
    round_ += [(f"chart:{name}", "GET", f"/api/charts/{name}", q) for name, q in charts.items()]
    round_ += [("health", "GET", f"/api/health/{name}", None) for name in HEALTH]
    round_ += [("live", "POST", "/api/query", {"sql": QUERY})]
    round_ += [("chart:revenue_by_category", "GET", "/api/charts/revenue_by_category.csv", {})]
    return round_


def client_loop(
    http: httpx.Client,
    csrf: dict[str, str],
    live_charts: set[str],
    charts: dict[str, dict[str, str]],
    tally: Tally,
    stop: threading.Event,
) -> None:
    """Call every request of a round, again and again, until ``stop``; note each answer."""
    while not stop.is_set():
        for kind, method, path, body in requests(charts):
            try:
                if method == "GET":
                    response = http.get(path, params=body)
                else:
                    response = http.post(path, json=body, headers=csrf)
            except httpx.HTTPError as exc:
                tally.note(kind, -1, f"{path}: {type(exc).__name__} {exc}")
                continue
            tally.note(kind, response.status_code, _problem(kind, path, response, live_charts))
            if response.status_code == 200 and path.startswith("/api/charts/") and "." not in path:
                chart = kind.removeprefix("chart:")
                with tally.lock:
                    tally.answered[(chart, response.json()["meta"]["answered_from"])] += 1


def _problem(kind: str, path: str, response: httpx.Response, live: set[str]) -> str | None:
    """What is wrong with ``response``, or None."""
    status = response.status_code
    if status == 200:
        if (
            kind == "page"
            and path != "/query"
            and "Data as of the last successful run" not in (response.text)
        ):
            return f"{path}: the page has no freshness line"
        return None
    may_wait = kind == "live" or kind.removeprefix("chart:") in live
    if status == 503 and may_wait and response.json().get("detail") == BUSY:
        return None
    return f"{path} ({kind}): {status} {response.text[:300]}"


def open_generations(pid: int) -> set[str]:
    """The extract generation files process ``pid`` holds open."""
    names = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        found = EXTRACT_FILE.search(target.removesuffix(" (deleted)"))
        if found:
            names.add(found.group(1))
    return names


def open_files(pid: int) -> int:
    """The process's open files but its state store's: each server worker thread keeps one
    connection to state.db of its own, up to the thread pool's size (state_files)."""
    return sum(1 for target in _fd_targets(pid) if ".riverbed/state.db" not in target)


def state_files(pid: int) -> int:
    return sum(1 for target in _fd_targets(pid) if ".riverbed/state.db" in target)


def _fd_targets(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found
    return int(found.group(1)) / 1024


def revenue(http: httpx.Client) -> Decimal:
    answer = http.get("/api/charts/revenue_by_category")
    assert answer.status_code == 200, answer.text
    return sum((Decimal(row["revenue"]) for row in answer.json()["rows"]), Decimal(0))


def test_serve_holds_under_concurrent_clients_while_the_pipeline_runs(
    database: Database, tmp_path: Path, children: list[Child]
) -> None:
    project = with_logins(demo_project(tmp_path / "proj", database))
    home = project.parent / ".riverbed"
    state = StateStore(home / "state.db")
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, *args: str) -> Child:
        child = Child(name, [*args, "-c", str(project)], logs, project.parent)
        children.append(child)
        return child

    # the history, loaded once, so the charts have an extract to answer from
    cli(project, "shop", "seed", *SEED, "--months", "3", "--seed", "7", "-q")
    cli(project, "capture", "--once", "-q")
    cli(project, "run", "--once", "-q")

    port = free_port()
    server = start("serve", "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/metrics", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the server to listen", up, 60, [server])
    admin, _ = session_client(url)
    eu, _ = bearer_client(url)

    # every chart once, before any load: which are answered from the extract, per reader
    names = [c["name"] for c in admin.get("/api/charts").json()]
    sellers = admin.get("/api/charts/seller_performance").json()["rows"]
    drill = {"seller": str(sellers[0]["seller_id"])}
    charts = {n: (drill if n == "seller_returns_by_reason" else {}) for n in names}
    live: set[str] = set()
    for http in (admin, eu):
        for name, params in charts.items():
            answer = http.get(f"/api/charts/{name}", params=params)
            assert answer.status_code == 200, (name, answer.text)
            meta = answer.json()["meta"]
            if "live" in (meta["answered_from"], meta.get("lookup_from")):
                live.add(name)  # it may wait on a load
    assert not {"revenue_by_category", "seller_performance"} & live, live
    assert "customer_refunds" in live, live  # its customers' personal columns
    revenue_before = revenue(admin)
    fresh_before = eu.get("/api/health/freshness").json()["last_success_at"]
    files_before, rss_before = open_files(server.pid), rss_mib(server.pid)

    # the pipeline, live, and the clients
    capture = start("capture", "capture", "--follow")
    runner = start("run-every", "run", "--every", "2")
    workload = start(
        "shop-run",
        *("shop", "run", "--rate", "200", "--duration", str(TRAFFIC_SECONDS)),
        *("--dirty-ratio", "0", "--large-every", "1000", "--seed", "3", "--json", "-q"),
    )
    tally, stop = Tally(), threading.Event()
    made = [session_client(url) if i % 2 == 0 else bearer_client(url) for i in range(CLIENTS)]
    threads = [
        threading.Thread(target=client_loop, args=(http, csrf, live, charts, tally, stop))
        for http, csrf in made
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        assert workload.proc.wait(timeout=TRAFFIC_SECONDS + 90) == 0, workload.output()
        ended = time.time()
        # a run that began after the traffic ended has published it all
        wait_for(
            "a run after the traffic",
            lambda: state.rows(
                "select 1 from runs where status = 'succeeded' and started_at > ?", (ended,)
            ),
            120,
            [runner, capture, server],
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        for http, _ in made:
            http.close()
    seconds = time.monotonic() - started

    # every process is still alive, and the server answered every request as documented
    assert all(c.alive() for c in (server, capture, runner)), [c.output() for c in children]
    assert not tally.wrong, "\n".join(tally.wrong[:20])
    # and no page kept a load waiting: readers in turn once starved the run's writer
    assert "another process holds the file" not in runner.err.read_text(), runner.output()
    total = sum(tally.statuses.values())
    waits = {k: n for (k, status), n in tally.statuses.items() if status == 503}
    print(f"{total} requests in {seconds:.0f} s by {CLIENTS} clients; 503s: {waits}")
    print(f"answered: {dict(tally.answered)}")
    assert total > CLIENTS * len(requests(charts)), tally.statuses  # every client went round

    # the numbers moved forward
    traffic = json.loads(workload.out.read_text())
    assert traffic["total_changes"] > 500, traffic
    assert eu.get("/api/health/freshness").json()["last_success_at"] > fresh_before
    assert revenue(admin) > revenue_before
    page = admin.get("/product-trends")
    assert page.status_code == 200 and "Data as of the last successful run" in page.text

    # open files and memory bounded: superseded generations let go
    generations = list((home / "extracts").glob("*.duckdb"))
    assert len(generations) >= 3, generations  # runs published while the clients read
    held = open_generations(server.pid)
    assert len(held) <= KEEP_OPEN, held
    files_after, rss_after = open_files(server.pid), rss_mib(server.pid)
    print(
        f"server: {files_before} -> {files_after} open files, {rss_before:.0f} -> "
        f"{rss_after:.0f} MiB"
    )
    assert files_after <= files_before + 20, (files_before, files_after)
    threads = len(os.listdir(f"/proc/{server.pid}/task"))
    assert state_files(server.pid) <= 2 * threads + 2, (state_files(server.pid), threads)
    assert rss_after <= rss_before + 400, (rss_before, rss_after)
    admin.close()
    eu.close()

    # each stops as documented: SIGTERM for the server, Ctrl-C for the followers
    wait_for("a pause between runs", state.idle, 120, [runner])
    assert runner.interrupt() == 0, runner.output()
    assert capture.interrupt() == 0, capture.output()
    os.killpg(server.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.output()
    assert server.out.read_text().strip().endswith("stopped"), server.output()
