"""The orchestrator through the command line: the state machine, retries and their timing,
Catch -> notification, redrive, the run lock, run history, metrics and alarms."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import Database, free_port, run_cli, start_cli
from riverbed.config.metric_names import METRIC_NAMES
from riverbed.config.orchestration import RetryRule
from riverbed.orchestrate.executor import retry_delay
from riverbed.state import SQLiteStore

TABLES = """
tables:
  customers:
    kind: dimension
    target: dim_customer
    keys: [customer_id]
    tracked: [name, city]
  sellers:
    kind: dimension
    target: dim_seller
    keys: [seller_id]
    tracked: [name]
  orders:
    kind: fact
    target: fact_orders
    keys: [order_id]
    quality:
      - {type: range, column: amount, min: 0, action: quarantine}
"""


@pytest.fixture
def project(database: Database, tmp_path: Path) -> Path:
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema w;"
            "create table w.customers (customer_id int primary key, name text, city text);"
            "create table w.sellers (seller_id int primary key, name text);"
            "create table w.orders (order_id int primary key, customer_id int, seller_id int,"
            " amount numeric(10,2));"
            "insert into w.customers values (1, 'Ann', 'Oslo'), (2, 'Bo', 'Rome');"
            "insert into w.sellers values (7, 'Shop');"
            "insert into w.orders values (10, 1, 7, 5.00), (11, 2, 7, 7.50)"
        )
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: w_{uuid.uuid4().hex[:8]}\n'
        "lake:\n  path: lake\nstate:\n  path: state.db\nwarehouse:\n  path: wh.duckdb\n"
        "notifiers:\n  console: {type: log}\n"
        f"{TABLES}"
    )
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    return config


def configure(config: Path, **orchestration: Any) -> None:
    data = yaml.safe_load(config.read_text())
    data["orchestration"] = orchestration
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def run(config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("run", *args, "--json", "-c", str(config))
    report = json.loads(result.out.strip().splitlines()[-1]) if result.out.strip() else {}
    return result.code, report, result.err


def events(config: Path, run_id: str) -> list[dict[str, Any]]:
    shown = run_cli("runs", "show", run_id, "--json", "-c", str(config))
    assert shown.code == 0, shown.text
    return json.loads(shown.out)["events"]  # type: ignore[no-any-return]


def warehouse(config: Path, query: str) -> list[dict[str, Any]]:
    result = run_cli("query", "--as", "admin", "--format", "json", query, "-c", str(config))
    assert result.code == 0, result.text
    return json.loads(result.out)  # type: ignore[no-any-return]


FAST_RETRY = {"errors": ["transient"], "interval_seconds": 0.05, "backoff_rate": 2.0}


def test_a_run_walks_the_default_machine_and_a_second_one_skips_everything(
    project: Path,
) -> None:
    code, report, err = run(project, "--once")
    assert code == 0, err
    assert report["status"] == "succeeded"
    assert report["load"]["tables"]["fact_orders"]["rows"] == 2
    states = [(e["state"], e["event"]) for e in events(project, report["run_id"])]
    for state in ("check", "transform", "stage", "dimension_customers", "dimension_sellers"):
        assert (state, "succeeded") in states
    assert ("facts", "succeeded") in states and ("publish", "succeeded") in states
    assert [e for s, e in states if s == "more_to_load"] == ["chose"]

    code, again, err = run(project, "--once")
    assert code == 0, err
    later = [(e["state"], e["event"]) for e in events(project, again["run_id"])]
    assert ("anything_new", "chose") in later and ("nothing_new", "succeeded") in later
    assert not [s for s, _ in later if s in ("transform", "stage", "facts")]
    assert again["variables"]["new_data"] == 0


def test_transient_failures_are_retried_with_backoff_and_terminal_ones_are_not(
    project: Path,
) -> None:
    configure(
        project,
        retry=[{**FAST_RETRY, "max_attempts": 3}],
        fault_injection={"transform": {"error": "transient", "times": 2}},
    )
    code, report, err = run(project, "--once")
    assert code == 0, err
    timeline = events(project, report["run_id"])
    retries = [e for e in timeline if e["state"] == "transform" and e["event"] == "retry_scheduled"]
    assert [r["detail"]["delay_seconds"] for r in retries] == [0.05, 0.1]
    assert all(r["error_class"] == "transient" for r in retries)
    done = [e for e in timeline if e["state"] == "transform" and e["event"] == "succeeded"]
    assert done[0]["attempt"] == 3

    configure(
        project,
        retry=[{**FAST_RETRY, "max_attempts": 3}],
        fault_injection={"stage": {"error": "terminal", "times": 1}},
    )
    with sqlite3.connect(project.parent / "state.db") as db:
        db.execute("delete from transform_inputs")  # make the next run find data again
        db.execute("delete from transform_batches")
    code, failed, err = run(project, "--once")
    assert code == 1
    assert failed["status"] == "failed" and failed["failed_state"] == "stage"
    assert failed["error_class"] == "terminal"
    timeline = events(project, failed["run_id"])
    assert not [e for e in timeline if e["event"] == "retry_scheduled"]
    assert ("stage", "caught") in [(e["state"], e["event"]) for e in timeline]
    assert ("notify_failure", "succeeded") in [(e["state"], e["event"]) for e in timeline]


def test_retries_stop_at_max_attempts(project: Path) -> None:
    configure(
        project,
        retry=[{**FAST_RETRY, "max_attempts": 2}],
        fault_injection={"transform": {"error": "transient", "times": 5}},
    )
    code, report, _ = run(project, "--once")
    assert code == 1 and report["failed_state"] == "transform"
    attempts = [e for e in events(project, report["run_id"]) if e["event"] == "failed"]
    assert [a["attempt"] for a in attempts if a["state"] == "transform"] == [1, 2, 3]


def test_a_failing_dimension_is_retried_by_its_own_task_only(project: Path) -> None:
    """The default machine's Parallel takes no Retry of its own: each dimension's task retries
    with orchestration.retry, and the Parallel retrying too would multiply the attempts (3 x 3)
    and load again the dimensions that had succeeded."""
    configure(
        project,
        retry=[{**FAST_RETRY, "max_attempts": 2}],
        fault_injection={"dimension_customers": {"error": "transient", "times": 5}},
    )
    code, report, _ = run(project, "--once")
    assert code == 1 and report["failed_state"] == "dimension_customers"
    timeline = events(project, report["run_id"])
    attempts = [
        e["attempt"]
        for e in timeline
        if e["state"] == "dimension_customers" and e["event"] == "failed"
    ]
    assert attempts == [1, 2, 3]
    loaded = [
        e for e in timeline if e["state"] == "dimension_sellers" and e["event"] == "succeeded"
    ]
    assert len(loaded) == 1


def test_retry_delay_follows_step_functions() -> None:
    rule = RetryRule(interval_seconds=2, backoff_rate=3, max_delay_seconds=10, jitter="none")
    assert [retry_delay(rule, n) for n in (1, 2, 3, 4)] == [2, 6, 10, 10]
    full = RetryRule(interval_seconds=2, backoff_rate=2, jitter="full")
    assert retry_delay(full, 3, draw=lambda: 0.25) == 2.0
    assert retry_delay(full, 3, draw=lambda: 0.0) == 0.0


class Receiver:
    """A real webhook endpoint on localhost."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_caught_failure_reaches_a_webhook(project: Path, receiver: Receiver) -> None:
    data = yaml.safe_load(project.read_text())
    data["notifiers"]["hook"] = {"type": "webhook", "url": receiver.url}
    data["orchestration"] = {
        "notify": ["hook"],
        "fault_injection": {"dimension_customers": {"error": "terminal"}},
    }
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report, _ = run(project, "--once")
    assert code == 1
    runs = [b for b in receiver.bodies if b.get("kind") == "run"]
    assert len(runs) == 1
    assert runs[0]["run_id"] == report["run_id"] and runs[0]["status"] == "failed"
    assert runs[0]["state"] == "dimension_customers" and "injected" in runs[0]["error"]


def test_a_fail_state_reports_its_own_error_not_one_a_branch_caught_before(
    project: Path,
) -> None:
    """The caught error was one field of the executor, shared by Parallel branches and never
    cleared: a Fail state after a Parallel whose branch had caught a failure reported that."""
    branch = {"type": "task", "resource": "check", "end": True}
    caught = {**branch, "catch": [{"errors": ["all"], "next": "shrug"}]}
    machine = {
        "start_at": "both",
        "states": {
            "both": {
                "type": "parallel",
                "max_concurrency": 1,
                "branches": [
                    {
                        "start_at": "flaky",
                        "states": {"flaky": caught, "shrug": {"type": "succeed"}},
                    },
                    {"start_at": "fine", "states": {"fine": branch}},
                ],
                "next": "gate",
            },
            "gate": {"type": "fail", "error": "Closed", "cause": "the gate is shut"},
        },
    }
    configure(
        project, machine=machine, fault_injection={"flaky": {"error": "terminal", "times": 1}}
    )
    code, report, _ = run(project, "--once")
    assert code == 1
    assert report["failed_state"] == "gate" and report["error_class"] == "terminal"
    assert report["error"] == "Closed: the gate is shut"
    states = [(e["state"], e["event"]) for e in events(project, report["run_id"])]
    assert ("flaky", "caught") in states and ("fine", "succeeded") in states
    # a Fail state ended it, not a task: no redrive hint, which would only fail again
    again = run_cli("run", "--once", "-c", str(project))
    assert again.code == 1
    said = " ".join(again.err.split())
    assert "Closed: the gate is shut" in said and "Fail state gate ended the run" in said, said
    assert "--redrive" not in said


def test_redrive_resumes_at_the_failed_state(project: Path) -> None:
    configure(
        project,
        max_concurrency=1,
        fault_injection={"dimension_sellers": {"error": "terminal"}},
    )
    code, failed, _ = run(project, "--once")
    assert code == 1 and failed["failed_state"] == "dimension_sellers"
    assert warehouse(project, "select count(*) as n from dim_customer") == [{"n": 2}]

    configure(project, max_concurrency=1)
    code, report, err = run(project, "--redrive", failed["run_id"])
    assert code == 0, err
    assert report["run_id"] == failed["run_id"] and report["redrive"]
    timeline = events(project, failed["run_id"])
    redriven = timeline[[e["event"] for e in timeline].index("redrive") :]
    skipped = {e["state"] for e in redriven if e["event"] == "skipped"}
    ran = {e["state"] for e in redriven if e["event"] == "succeeded"}
    assert {"check", "transform", "stage", "dimension_customers"} <= skipped
    assert {"dimension_sellers", "facts", "publish"} <= ran
    assert "dimension_customers" not in ran and "transform" not in ran
    assert warehouse(project, "select count(*) as n from dim_seller") == [{"n": 1}]
    assert warehouse(project, "select count(*) as n from fact_orders") == [{"n": 2}]

    code, _, err = run(project, "--redrive", failed["run_id"])
    assert code == 1 and "only a failed or aborted run can be redriven" in err
    listed = json.loads(run_cli("runs", "--json", "-c", str(project)).out)
    assert listed[0]["run_id"] == failed["run_id"] and listed[0]["status"] == "succeeded"
    assert listed[0]["redrives"] == 1


def test_a_blocking_quality_failure_stops_before_the_warehouse(project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    data["tables"]["orders"]["quality"] = [
        {"type": "range", "column": "amount", "max": 6, "action": "fail"}
    ]
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report, err = run(project, "--once")
    assert code == 1
    assert report["failed_state"] == "transform" and report["error_class"] == "quality"
    assert "range(amount)" in err
    timeline = events(project, report["run_id"])
    assert not [e for e in timeline if e["event"] == "retry_scheduled"]
    assert not [e for e in timeline if e["state"] in ("stage", "facts")]
    assert not (project.parent / "wh.duckdb").exists()


def test_a_second_run_is_refused_and_a_dead_runs_lock_is_taken_over(project: Path) -> None:
    import fcntl

    from riverbed.orchestrate.history import RunHistory

    manifest = SQLiteStore(project.parent / "state.db")
    history = RunHistory(manifest)
    active = history.start("once")
    lock = open(project.parent / ".riverbed" / "run.lock", "a+")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        refused = run_cli("run", "--once", "-c", str(project))
        assert refused.code == 1
        assert active in refused.err and "Traceback" not in refused.err
    finally:
        lock.close()  # the holder "dies": the kernel would drop its lock the same way
    manifest.close()

    code, report, err = run(project, "--once")
    assert code == 0, err
    listed = {r["run_id"]: r for r in json.loads(run_cli("runs", "--json", "-c", str(project)).out)}
    assert listed[active]["status"] == "aborted"
    assert listed[report["run_id"]]["status"] == "succeeded"
    shown = run_cli("runs", "show", active, "-c", str(project))
    assert "died" in shown.out and "None" not in shown.out


def test_runs_show_prints_the_timeline(project: Path) -> None:
    code, report, _ = run(project, "--once")
    assert code == 0
    listed = run_cli("runs", "-c", str(project))
    short = report["run_id"].rsplit("-", 1)[1]  # the list shows the short id
    assert listed.code == 0 and short in listed.out and "succeeded" in listed.out
    shown = run_cli("runs", "show", report["run_id"], "-c", str(project))
    assert shown.code == 0
    for state in ("check", "transform", "dimension_customers", "facts", "publish"):
        assert state in shown.out
    missing = run_cli("runs", "show", "nope", "-c", str(project))
    assert missing.code == 1 and "no run nope" in missing.err
    # the id's hex tail, or its start, names the run when only one run has it
    tail = report["run_id"].rsplit("-", 1)[1]
    by_tail = run_cli("runs", "show", tail, "--json", "-c", str(project))
    assert by_tail.code == 0, by_tail.text
    assert json.loads(by_tail.out)["run"]["run_id"] == report["run_id"]
    run(project, "--once")  # a second run: both ids start with the year
    both = run_cli("runs", "show", report["run_id"][:4], "-c", str(project))
    assert both.code == 1 and "names 2 runs" in both.err and "Traceback" not in both.text


def test_runs_json_adds_the_row_counts_runs_show_prints(project: Path, database: Database) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute("insert into w.orders values (12, 1, 7, -1.00)")  # fails range(amount)
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    code, report, err = run(project, "--once")
    assert code == 0, err
    code, idle, err = run(project, "--once")  # nothing new
    assert code == 0, err
    listed = {r["run_id"]: r for r in json.loads(run_cli("runs", "--json", "-c", str(project)).out)}
    moved = listed[report["run_id"]]
    # the record's keys stay as they were, in their order; the counts come after them
    assert list(moved) == [
        *("run_id", "status", "trigger", "started_at", "ended_at", "failed_state", "error"),
        *("redrives", "pid", "host", "idle"),
        *("rows_in", "rows_staged", "rows_quarantined", "loaded_rows"),
    ]
    # 2 customers, 1 seller, 3 orders read; the negative order set aside; the rest loaded
    counts = {k: moved[k] for k in ("rows_in", "rows_staged", "rows_quarantined", "loaded_rows")}
    assert counts == {"rows_in": 6, "rows_staged": 5, "rows_quarantined": 1, "loaded_rows": 5}
    # the sums of what `runs show` prints per task; the dimensions Parallel's own output (the
    # sum of its branches') is not counted again
    loaded = {
        e["state"]: e["detail"]["output"].get("loaded_rows")
        for e in events(project, report["run_id"])
        if e["event"] == "succeeded"
    }
    assert (loaded["dimension_customers"], loaded["dimension_sellers"]) == (2, 1)
    assert (loaded["facts"], loaded["dimensions"]) == (2, 3)
    shown = run_cli("runs", "show", report["run_id"], "-c", str(project)).out
    assert "rows_in=6, rows_staged=5, rows_quarantined=1" in " ".join(shown.split())
    quiet = listed[idle["run_id"]]
    assert quiet["idle"] and quiet["rows_in"] == quiet["loaded_rows"] == 0


RUN_FAILED = {  # an alarm on any failed run in 5 minutes
    "metric": "runs_failed",
    "statistic": "sum",
    "period_seconds": 300,
    "threshold": 0,
    "comparison": ">",
    "treat_missing_data": "not_breaching",
    "notify": ["console"],
}


def test_metrics_and_alarms_after_runs(project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    data["alarms"] = {"run_failed": RUN_FAILED}
    data["orchestration"] = {"fault_injection": {"facts": {"error": "terminal"}}}
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, _ = run(project, "--once")
    assert code == 1
    status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
    alarms = {a["alarm"]: a for a in status["alarms"]}
    assert alarms["run_failed"]["state"] == "ALARM"
    assert status["runs"][0]["status"] == "failed"
    assert status["last_hour"]["runs_failed"] == 1
    assert status["last_hour"]["transform_rows_in"] == 5  # 2 customers, 1 seller, 2 orders
    printed = run_cli("status", "-c", str(project))
    assert printed.code == 0 and "run_failed: ALARM" in printed.out

    from riverbed.observe.prometheus import metrics_text

    text = metrics_text(project.parent / "state.db").decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["riverbed_runs_failed"].samples[0].value == 1
    rows = {s.labels["table"]: s.value for s in families["riverbed_transform_rows_in"].samples}
    assert rows == {"customers": 2, "sellers": 1, "orders": 2}
    assert "riverbed_state_duration_seconds" in families


def test_bad_orchestration_config_names_the_key(project: Path) -> None:
    configure(project, machine={"start_at": "go", "states": {"a": {"type": "succeed"}}})
    result = run_cli("run", "--once", "-c", str(project))
    assert result.code == 2
    assert "orchestration.machine" in result.err and "'go' is not a state" in result.err
    configure(project, every_seconds=1, cron="*/5 * * * *")
    result = run_cli("run", "-c", str(project))
    assert result.code == 2 and "every_seconds and cron are both set" in result.err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_scheduled_run_loop_stops_on_a_signal(project: Path, sig: signal.Signals) -> None:
    """Even started in the background with SIGINT ignored (as a shell's `&` does)."""
    proc = start_cli(
        "run",
        "--every",
        "1",
        "-c",
        str(project),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listed = run_cli("runs", "--json", "-c", str(project))
            if listed.code == 0 and len(json.loads(listed.out)) >= 2:
                break
            time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out
    runs = json.loads(run_cli("runs", "--json", "-c", str(project)).out)
    assert runs and all(r["status"] == "succeeded" for r in runs)
    # one run per interval, and only the first found anything new: the list shows that one
    # and counts the idle ones, which would otherwise push real runs out of it
    assert [r["idle"] for r in runs] == [True] * (len(runs) - 1) + [False]
    listed = run_cli("runs", "-c", str(project))
    assert listed.code == 0, listed.text
    idle = len(runs) - 1
    assert runs[-1]["run_id"].rsplit("-", 1)[1] in listed.out
    # no idle run's line ("nothing new" as its status): only the count below the list says it
    assert listed.out.count("succeeded") == 1 and listed.out.count("nothing new") == 1
    assert f"+ {idle} idle run{'' if idle == 1 else 's'} hidden" in listed.out, listed.out


def test_logs_are_json_lines_without_secrets(project: Path, receiver: Receiver) -> None:
    data = yaml.safe_load(project.read_text())
    data["notifiers"]["hook"] = {
        "type": "webhook",
        "url": receiver.url,
        "headers": {"Authorization": {"env": "RB_HOOK_TOKEN"}},
    }
    data["orchestration"] = {
        "notify": ["hook"],
        "fault_injection": {"stage": {"error": "terminal"}},
    }
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    token = "Bearer s3cr3t-t0ken-value"
    result = run_cli("run", "--once", "-c", str(project), env={"RB_HOOK_TOKEN": token})
    assert result.code == 1
    lines = (project.parent / ".riverbed" / "logs" / "riverbed.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if r.get("event") == "state_caught"]
    assert failed and failed[0]["state"] == "stage" and failed[0]["run_id"]
    assert any(r.get("event") == "run_failed" for r in records)
    assert token not in "\n".join(lines) + result.text


@contextlib.contextmanager
def serving(project: Path) -> Iterator[str]:
    """`riverbed serve` on a free port until the block ends (then Ctrl-C); the /metrics URL."""
    proc = start_cli("serve", "--port", "0", "-c", str(project))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://([\d.]+):(\d+)/metrics", line)
        assert found, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield found.group(0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_serve_exposes_metrics_over_http(project: Path) -> None:
    code, _, err = run(project, "--once")
    assert code == 0, err
    with serving(project) as url, urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["riverbed_runs_succeeded"].samples[0].value == 1
    assert families["riverbed_up"].samples[0].value == 1


def test_serve_exposes_counters_and_a_live_time_since_success(
    project: Path, database: Database
) -> None:
    """Scraping a real `riverbed serve`: counters are counters and grow across runs; the time
    since the last success is computed at each scrape, so it grows with no run in between."""

    def scrape(url: str) -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=30) as response:
            return {f.name: f for f in text_string_to_metric_families(response.read().decode())}

    def total(family: Any) -> float:
        return sum(s.value for s in family.samples if s.name.endswith("_total"))

    code, _, err = run(project, "--once")
    assert code == 0, err
    with serving(project) as url:
        first = scrape(url)
        time.sleep(0.2)  # any gap: the clock moves between the scrapes, no run happens
        second = scrape(url)
        with database.connect(autocommit=True) as conn:
            conn.execute("insert into w.orders values (12, 1, 7, 3.00)")
        assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
        code, _, err = run(project, "--once")
        assert code == 0, err
        third = scrape(url)
    for name in ("riverbed_runs_succeeded", "riverbed_transform_rows_in", "riverbed_load_rows"):
        assert first[name].type == "counter", name
        assert [s.name for s in first[name].samples] == [name + "_total"] * len(first[name].samples)
    assert first["riverbed_seconds_since_last_success"].type == "gauge"
    assert first["riverbed_run_duration_seconds"].type == "gauge"
    assert total(first["riverbed_runs_succeeded"]) == 1
    assert total(third["riverbed_runs_succeeded"]) == 2
    assert total(third["riverbed_transform_rows_in"]) > total(first["riverbed_transform_rows_in"])
    [before] = first["riverbed_seconds_since_last_success"].samples
    [after] = second["riverbed_seconds_since_last_success"].samples
    assert after.value > before.value


@contextlib.contextmanager
def following(project: Path) -> Iterator[None]:
    """`riverbed capture --follow` until the block ends (then Ctrl-C)."""
    proc = start_cli("capture", "--follow", "-q", "-c", str(project), stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


@pytest.mark.parametrize("outliving", [serving, following], ids=["serve", "capture-follow"])
def test_an_alarm_fires_when_nothing_runs(
    project: Path, tmp_path: Path, outliving: Callable[[Path], Any]
) -> None:
    """After one run, nothing runs again (a scheduler that died): `riverbed serve` and
    `capture --follow` evaluate the alarms meanwhile, and the one on the time since the last
    success notifies."""
    received = tmp_path / "alarm.json"
    data = yaml.safe_load(project.read_text())
    data["notifiers"]["pager"] = {"type": "command", "command": f"(cat; echo) >> {received}"}
    data["alarms"] = {
        "stale": {
            "metric": "seconds_since_last_success",
            "period_seconds": 1,
            "threshold": 2,
            "notify": ["pager"],
        }
    }
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = run(project, "--once")
    assert code == 0, err

    def events() -> list[dict[str, Any]]:
        lines = received.read_text().splitlines() if received.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    with outliving(project):
        deadline = time.monotonic() + 60
        while not any(e["state"] == "ALARM" for e in events()) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert [e["state"] for e in events() if e["alarm"] == "stale"][-1] == "ALARM", events()
    status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
    assert {a["alarm"]: a["state"] for a in status["alarms"]} == {"stale": "ALARM"}


def test_a_table_taken_out_of_the_config_leaves_its_batches_behind(project: Path) -> None:
    # its batches were staged in the lake, then the user took the table out of the config:
    # they are left where they are (the machine once looped back to stage without end)
    assert run_cli("run", "--once", "--stage", "transform", "-q", "-c", str(project)).code == 0
    data = yaml.safe_load(project.read_text())
    del data["tables"]["sellers"]
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report, err = run(project, "--once")
    assert code == 0, err
    assert report["load"]["tables"]["fact_orders"]["rows"] == 2
    assert warehouse(project, "select count(*) as n from dim_customer") == [{"n": 2}]


def test_an_unknown_table_is_refused_by_name(project: Path) -> None:
    result = run_cli("run", "--once", "--table", "ordres", "-c", str(project))
    assert result.code == 2  # a usage error: the option's value
    [line] = result.err.strip().splitlines()
    assert "--table ordres" in line and "orders" in line


CHECK = {"type": "task", "resource": "check"}


@pytest.mark.parametrize(
    "states,refused",
    [
        ({"a": {**CHECK, "next": "a"}}, "a -> a loops"),
        (
            {"a": {**CHECK, "next": "b"}, "b": {**CHECK, "next": "a"}},
            "loops with no choice state",
        ),
        # a choice whose every branch goes back in (it passed the check above)
        (
            {
                "a": {**CHECK, "next": "c"},
                "c": {
                    "type": "choice",
                    "choices": [
                        {"variable": "pending", "comparison": ">", "value": 0, "next": "a"}
                    ],
                    "default": "a",
                },
            },
            "no path from it reaches",
        ),
        # a loop a choice can leave, and a catch taken on failure, are fine
        (
            {
                "a": {**CHECK, "next": "c"},
                "c": {
                    "type": "choice",
                    "choices": [
                        {"variable": "pending", "comparison": ">", "value": 0, "next": "a"}
                    ],
                    "default": "d",
                },
                "d": {"type": "succeed"},
            },
            None,
        ),
        ({"a": {**CHECK, "end": True, "catch": [{"errors": ["all"], "next": "a"}]}}, None),
        # one that starts at a choice (the default machine's shape)
        (
            {
                "a": {
                    "type": "choice",
                    "choices": [
                        {"variable": "pending", "comparison": "==", "value": 0, "next": "c"}
                    ],
                    "default": "b",
                },
                "b": {**CHECK, "next": "a"},
                "c": {"type": "succeed"},
            },
            None,
        ),
    ],
)
def test_a_machine_that_loops_with_no_way_out_is_refused_at_load(
    tmp_path: Path, states: dict[str, Any], refused: str | None
) -> None:
    """Accepted, such a machine ran each run round its loop until the transition limit."""
    config = tmp_path / "riverbed.yaml"
    machine = {"start_at": "a", "states": states}
    config.write_text(yaml.safe_dump({"orchestration": {"machine": machine}}))
    result = run_cli("ddl", "-c", str(config))
    if refused is None:
        assert result.code == 0, result.text
    else:
        assert result.code == 2 and refused in result.err and "Traceback" not in result.text
        assert len(result.err.strip().splitlines()) == 1, result.err


NARROW = {"COLUMNS": "80"}  # what a pipe gets


def _fits(text: str, width: int = 80) -> None:
    """Every line within ``width`` columns, and no cell cut to fit them: rich marks a value it
    cuts with "…" (an id or a figure a user would copy or read wrong)."""
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, "\n".join(too_wide)
    cut = [line for line in text.splitlines() if "…" in line]
    assert not cut, "\n".join(cut)


def test_run_history_reads_at_80_columns_and_short_ids_name_runs(project: Path) -> None:
    """A real history: a run with data, idle runs (nothing new), a failed one; read through a
    pipe (80 columns), every id and error whole, and the short id the list shows is enough
    to show the run and to redrive it."""
    code, loaded, err = run(project, "--once")
    assert code == 0, err
    for _ in range(3):
        assert run(project, "--once")[0] == 0  # nothing new: idle
    configure(project, fault_injection={"check": {"error": "terminal"}})
    code, failed, _ = run(project, "--once")
    assert code == 1 and failed["error"]
    short = failed["run_id"].rsplit("-", 1)[1]

    listed = run_cli("runs", "-c", str(project), env=NARROW)
    assert listed.code == 0, listed.text
    _fits(listed.out)
    assert short in listed.out and loaded["run_id"].rsplit("-", 1)[1] in listed.out
    assert " ".join(failed["error"].split()) in " ".join(listed.out.split())
    assert "3 idle runs hidden" in listed.out  # nothing-new runs do not push real ones out
    every = run_cli("runs", "--all", "-c", str(project), env=NARROW)
    _fits(every.out)
    assert every.out.count("nothing new") == 3
    everything = json.loads(run_cli("runs", "--json", "-c", str(project)).out)
    assert [r["idle"] for r in everything] == [False, True, True, True, False]

    shown = run_cli("runs", "show", short, "-c", str(project), env=NARROW)
    assert shown.code == 0, shown.text
    _fits(shown.out)
    assert failed["run_id"] in shown.out and f"--redrive {short}" in shown.out
    assert " ".join(failed["error"].split()) in " ".join(shown.out.split())
    check = run_cli("runs", "show", loaded["run_id"], "-c", str(project), env=NARROW)
    _fits(check.out)
    assert "new_raw_files=" in check.out and "pending_batches=" in check.out

    configure(project)
    code, redriven, err = run(project, "--redrive", short)
    assert code == 0, err
    assert redriven["run_id"] == failed["run_id"] and redriven["status"] == "succeeded"
    code, _, err = run(project, "--redrive", "nope")
    assert code == 1 and "no run nope" in err


def test_status_reads_at_80_columns(project: Path, database: Database) -> None:
    """Quarantined rows, several rules, a failed run and alarms: `status` through a pipe keeps
    every line within 80 columns, each flagged rule and alarm reason whole."""
    data = yaml.safe_load(project.read_text())
    data["tables"]["orders"]["quality"] += [
        {"type": "not_null", "column": "customer_id", "action": "warn"},
        {"type": "accepted_values", "column": "seller_id", "values": [7], "action": "warn"},
    ]
    data["alarms"] = {"run_failed": RUN_FAILED}
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    with database.connect(autocommit=True) as conn:
        conn.execute("insert into w.orders values (12, null, 8, -1.00)")
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    assert run(project, "--once")[0] == 0
    configure(project, fault_injection={"check": {"error": "terminal"}})
    code, failed, _ = run(project, "--once")
    assert code == 1

    shown = run_cli("status", "-c", str(project), env=NARROW)
    assert shown.code == 0, shown.text
    _fits(shown.out)
    report = json.loads(run_cli("status", "--json", "-c", str(project)).out)
    words = " ".join(shown.out.split())
    assert failed["run_id"] in words
    for alarm in report["alarms"]:
        assert " ".join(alarm["reason"].split()) in words
    for rule in ("range(amount)", "not_null(customer_id)", "accepted_values(seller_id)"):
        assert rule in words


def test_a_failed_runs_notification_is_retried_for_the_whole_window(project: Path) -> None:
    """The receiver is busy for the first two attempts and asks for 4 s each time: the failed
    run waits for the retries (the README's 30 s window) instead of dropping the event."""
    bodies: list[dict[str, Any]] = []
    busy = [503, 503]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = busy.pop(0) if busy else 204
            if status == 204:
                bodies.append(body)
            self.send_response(status)
            if status != 204:
                self.send_header("Retry-After", "4")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = yaml.safe_load(project.read_text())
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        data["notifiers"]["hook"] = {"type": "webhook", "url": url}
        data["orchestration"] = {
            "notify": ["hook"],
            "fault_injection": {"stage": {"error": "terminal"}},
        }
        project.write_text(yaml.safe_dump(data, sort_keys=False))
        code, report, _ = run(project, "--once")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert [(b["kind"], b["run_id"]) for b in bodies] == [("run", report["run_id"])]


def test_a_notification_given_up_is_an_error_and_a_metric(project: Path) -> None:
    """Nothing listens at the webhook's port: after its retries the failed run's notification
    is given up with an ERROR line, and the metric notifications_given_up counts it."""
    port = free_port()  # probed and released: nothing listens there
    data = yaml.safe_load(project.read_text())
    data["notifiers"]["hook"] = {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}
    data["orchestration"] = {
        "notify": ["hook"],
        "fault_injection": {"stage": {"error": "terminal"}},
    }
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, _ = run(project, "--once")
    assert code == 1
    lines = (project.parent / ".riverbed" / "logs" / "riverbed.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    given_up = [r for r in records if "notification given up" in r.get("message", "")]
    assert len(given_up) == 1 and given_up[0]["level"] == "ERROR", given_up
    assert f"127.0.0.1:{port}" in given_up[0]["message"]
    with contextlib.closing(sqlite3.connect(project.parent / "state.db")) as db:
        (count,) = db.execute(
            "select sum(value) from metrics where name = 'notifications_given_up'"
        ).fetchone()
    assert count == 1


def test_the_demo_quality_alarm_weighs_rows_not_batches(project: Path, database: Database) -> None:
    """The demo's quality_failures_high alarm: one bad row in a small batch, beside a big
    healthy one, is 1 row in 208 checked in the period (OK), not 1 in 7 (14%); a real drop
    alarms, however many rules check the same rows (a second rule that every row passes
    counted each row twice as checked: 21 of 458, 4.6%, stayed OK)."""
    demo = yaml.safe_load((Path(__file__).parents[1] / "riverbed/config/riverbed.yaml").read_text())
    data = yaml.safe_load(project.read_text())
    data["alarms"] = {"quality_failures_high": demo["alarms"]["quality_failures_high"]}
    data["tables"]["orders"]["quality"].append({"type": "not_null", "column": "order_id"})
    project.write_text(yaml.safe_dump(data, sort_keys=False))

    def insert_and_run(amounts: list[float]) -> str:
        with database.connect(autocommit=True) as conn:
            (start,) = conn.execute("select max(order_id) + 1 from w.orders").fetchone()
            for i, amount in enumerate(amounts):
                conn.execute("insert into w.orders values (%s, 1, 7, %s)", (start + i, amount))
        assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
        code, _, err = run(project, "--once")
        assert code == 0, err
        status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
        [alarm] = status["alarms"]
        return str(alarm["state"])

    assert insert_and_run([5.0] * 200) == "OK"
    assert insert_and_run([5.0] * 6 + [-1.0]) == "OK"  # its batch alone: 14% quarantined
    assert insert_and_run([-1.0] * 20) == "ALARM"  # 21 of 229 rows in the period: 9%


def test_the_lag_of_a_stopped_capture_is_measured_from_the_source(
    project: Path, database: Database
) -> None:
    """No capture runs while the source commits: `status`, an alarm evaluated by a run and
    /metrics all see the lag grow; once captured it is 0, even with WAL written since by
    tables not captured."""
    data = yaml.safe_load(project.read_text())
    data["alarms"] = {
        "lag": {"metric": "capture_lag_seconds", "period_seconds": 60, "threshold": 0}
    }
    project.write_text(yaml.safe_dump(data, sort_keys=False))

    def lag() -> tuple[float, float]:
        status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
        return status["capture"]["lag_bytes"], status["capture"]["lag_seconds"]

    assert lag() == (0, 0)
    with database.connect(autocommit=True) as conn:
        conn.execute("create table w.other (id int primary key)")  # not captured
        conn.execute("insert into w.other select generate_series(1, 1000)")
    assert lag() == (0, 0)  # the WAL moved, nothing captured is pending
    with database.connect(autocommit=True) as conn:
        conn.execute("insert into w.orders values (12, 1, 7, 3.00)")
        conn.execute("insert into w.other select generate_series(1001, 2000)")
    pending_bytes, pending_seconds = lag()
    assert pending_bytes > 0 and pending_seconds > 0

    code, _, err = run(project, "--once")
    assert code == 0, err
    status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
    assert [(a["alarm"], a["state"]) for a in status["alarms"]] == [("lag", "ALARM")]

    def scraped(url: str) -> float:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        [sample] = families["riverbed_capture_lag_seconds"].samples
        return float(sample.value)

    with serving(project) as url:  # measured at each scrape: it grows with nothing running
        first = scraped(url)
        time.sleep(0.2)
        second = scraped(url)
    assert pending_seconds <= first < second

    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    assert lag() == (0, 0)


def test_a_running_capture_reports_the_age_of_what_it_has_not_landed(
    project: Path, database: Database
) -> None:
    """A change received but held in the capture's buffer (lake.max_seconds far away) is lag:
    the running capture reports its age, not the 0 s of "nothing flushed yet"."""
    data = yaml.safe_load(project.read_text())
    data["lake"]["max_seconds"] = 600
    data["capture"] = {"status_interval_seconds": 1}
    project.write_text(yaml.safe_dump(data, sort_keys=False))

    def lag() -> tuple[float, float]:
        status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
        return status["capture"]["lag_bytes"], status["capture"]["lag_seconds"]

    with following(project):
        deadline = time.monotonic() + 60
        with database.connect(autocommit=True) as conn:
            conn.execute("insert into w.orders values (12, 1, 7, 3.00)")
            pending = (0.0, 0.0)
            while not (pending[0] > 0 and pending[1] > 0) and time.monotonic() < deadline:
                time.sleep(0.5)  # a commit now and then: the capture samples its lag on them
                conn.execute("update w.customers set city = city where customer_id = 1")
                pending = lag()
        assert pending[0] > 0 and pending[1] > 0, pending
    assert lag() == (0, 0)  # stopped: it flushed, and the source has nothing pending


def test_runs_does_not_call_a_killed_run_running(project: Path) -> None:
    """A run killed with kill -9 stays 'running' in the history until the next run takes its
    lock over; until then `riverbed runs` must not tell the user it is still running."""
    code, done, err = run(project, "--once")
    assert code == 0, err
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer exists, as a killed run's
    with contextlib.closing(sqlite3.connect(project.parent / "state.db")) as db, db:
        db.execute(
            "insert into runs (run_id, status, trigger, started_at, pid, host)"
            " select '20991231T000000Z-dead01', 'running', 'once', started_at + 1, ?, host"
            " from runs where run_id = ?",
            (dead.pid, done["run_id"]),
        )
    listed = run_cli("runs", "-c", str(project), env=NARROW)
    assert listed.code == 0, listed.text
    line = next(line for line in listed.out.splitlines() if line.startswith("dead01"))
    assert "running" not in line and "died" in line
    assert f"process {dead.pid} is gone" in " ".join(listed.out.split())
    status = run_cli("status", "-c", str(project), env=NARROW)
    assert status.code == 0, status.text
    runs_line = " ".join(status.out.split("runs", 1)[1].split("last hour")[0].split())
    assert "dead01" in runs_line or "20991231T000000Z-dead01" in runs_line, status.out
    assert "died" in runs_line and "running" not in runs_line, runs_line


def test_a_resnapshot_replaces_the_facts_instead_of_doubling_them(
    project: Path, database: Database
) -> None:
    """`capture --once --resnapshot` replaces the whole lake (what capture's own error tells a
    user whose slot was replaced to run): the facts loaded from the old lake must not stay
    beside the new snapshot's rows of the same orders."""
    code, _, err = run(project, "--once")
    assert code == 0, err
    with database.connect(autocommit=True) as conn:
        conn.execute("insert into w.orders values (12, 1, 7, 9.00)")
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    code, _, err = run(project, "--once")
    assert code == 0, err
    assert warehouse(project, "select count(*) as n from fact_orders") == [{"n": 3}]

    again = run_cli("capture", "--once", "--resnapshot", "-q", "-c", str(project))
    assert again.code == 0, again.text
    code, _, err = run(project, "--once")
    assert code == 0, err
    rows = warehouse(project, "select order_id, _op from fact_orders order by order_id")
    assert rows == [{"order_id": o, "_op": "L"} for o in (10, 11, 12)]
    # the dimensions keep their history: the same rows again make no new version
    assert warehouse(project, "select count(*) as n from dim_customer") == [{"n": 2}]


def test_a_resnapshot_closes_the_dimension_keys_deleted_while_nothing_was_captured(
    project: Path, database: Database
) -> None:
    """Changes made while capture could not see them (a slot invalidated, dropped, replaced)
    are lost from the WAL, and `capture --resnapshot` copies the tables again: a customer
    deleted meanwhile must not stay current in the warehouse, one updated meanwhile takes a
    new version, and the others keep the one they had (no version closed and opened again)."""
    with database.connect(autocommit=True) as conn:
        conn.execute("insert into w.customers values (3, 'Cy', 'Oslo')")
    assert run_cli("capture", "--once", "-q", "-c", str(project)).code == 0
    code, _, err = run(project, "--once")
    assert code == 0, err
    before = warehouse(
        project, "select customer_id, customer_key, effective_date from dim_customer"
    )
    assert {r["customer_id"] for r in before} == {1, 2, 3}
    # not captured: the resnapshot drops the slot with these changes in it
    with database.connect(autocommit=True) as conn:
        conn.execute("delete from w.customers where customer_id = 3")
        conn.execute("update w.customers set city = 'Milan' where customer_id = 2")
    again = run_cli("capture", "--once", "--resnapshot", "-q", "-c", str(project))
    assert again.code == 0, again.text
    code, _, err = run(project, "--once")
    assert code == 0, err
    current = warehouse(
        project,
        "select customer_id, city, customer_key, effective_date from dim_customer"
        " where is_current_record order by customer_id",
    )
    assert [(r["customer_id"], r["city"]) for r in current] == [(1, "Oslo"), (2, "Milan")]
    kept = next(r for r in before if r["customer_id"] == 1)
    assert (current[0]["customer_key"], current[0]["effective_date"]) == (
        kept["customer_key"],
        kept["effective_date"],
    )
    versions = warehouse(
        project,
        "select customer_id, count(*) as n from dim_customer group by customer_id"
        " order by customer_id",
    )
    assert versions == [
        {"customer_id": 1, "n": 1},
        {"customer_id": 2, "n": 2},
        {"customer_id": 3, "n": 1},
    ]
    closed = warehouse(
        project,
        "select is_current_record, is_deleted from dim_customer where customer_id = 3",
    )
    assert closed == [{"is_current_record": False, "is_deleted": True}]


def test_counts_of_one_are_singular(project: Path) -> None:
    """One run is "1 run succeeded", and one idle run hidden is "1 idle run ... shows it"."""
    code, _, err = run(project, "--once")
    assert code == 0, err
    code, idle, err = run(project, "--once")  # nothing new since: an idle run
    assert code == 0, err
    status = run_cli("status", "-c", str(project), env=NARROW)
    assert status.code == 0, status.text
    said = " ".join(status.out.split())
    assert "2 runs succeeded" in said, said
    with contextlib.closing(sqlite3.connect(project.parent / "state.db")) as db, db:
        db.execute("delete from runs where run_id != ?", (idle["run_id"],))
        db.execute(
            "delete from metrics where rowid = "
            "(select min(rowid) from metrics where name = 'runs_succeeded')"
        )
    status = run_cli("status", "-c", str(project), env=NARROW)
    assert "1 run succeeded" in " ".join(status.out.split()), status.out
    listed = run_cli("runs", "-c", str(project), env=NARROW)
    assert listed.code == 0, listed.text
    said = " ".join(listed.out.split())
    assert "+ 1 idle; `riverbed runs --all` shows it)" in said, said


def test_metrics_leave_out_the_lag_while_the_source_is_down(project: Path) -> None:
    """After a run the store holds a lag of 0; with the source unreachable /metrics must not
    serve that 0 as current: the lag is absent and riverbed_source_up is 0."""
    code, _, err = run(project, "--once")
    assert code == 0, err
    text = project.read_text()
    project.write_text(re.sub(r"port=\d+", f"port={free_port()}", text))
    assert project.read_text() != text
    with serving(project) as url, urllib.request.urlopen(url, timeout=30) as response:
        families = {f.name for f in text_string_to_metric_families(response.read().decode())}
    assert "riverbed_capture_lag_seconds" not in families, families
    assert "riverbed_capture_lag_bytes" not in families
    assert "riverbed_source_up" in families
    # every name recorded on the way is one an alarm may name (config.metric_names)
    with contextlib.closing(sqlite3.connect(project.parent / "state.db")) as db:
        recorded = {name for (name,) in db.execute("select distinct name from metrics")}
    assert recorded and recorded <= METRIC_NAMES, recorded - METRIC_NAMES
