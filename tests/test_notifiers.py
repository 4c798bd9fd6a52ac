"""Notifiers against real receivers: an HTTP server on localhost, a shell, the logging system;
and the Dispatcher's promises (never raise, never block, bounded close)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from riverbed.config.alarms import NotifierConfig
from riverbed.config.loader import parse_config
from riverbed.config.models import RiverbedConfig
from riverbed.observe.notify import Dispatcher, NotifyError, open_notifiers
from riverbed.observe.notify.command import CommandNotifier
from riverbed.observe.notify.log import LogNotifier
from riverbed.observe.notify.webhook import WebhookNotifier

TOKEN = "s3cret-header-value"
PATH_TOKEN = "T0KEN-IN-PATH"

ALARM_EVENT: dict[str, Any] = {
    "kind": "alarm",
    "alarm": "lag_high",
    "state": "ALARM",
    "previous": "OK",
    "reason": "2 of 3 datapoint(s) > 300",
    "metric": "capture_lag_seconds",
    "value": 450.0,
    "threshold": 300.0,
    "at": "2024-01-01T00:00:00+00:00",
}


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers scripted status codes."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answered in order; 200 once used up
        self.retry_after: str | None = None  # sent with every answer that is not a 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status != 200 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{PATH_TOKEN}?key={PATH_TOKEN}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def hook_config(url: str) -> RiverbedConfig:
    return parse_config(
        f"""
notifiers:
  hook:
    type: webhook
    url: "{url}"
    headers:
      Authorization: {{env: RIVERBED_TEST_HOOK_TOKEN}}
      X-Team: {{env: RIVERBED_TEST_TEAM}}
""",
        "test",
    )


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERBED_TEST_HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("RIVERBED_TEST_TEAM", "data")


def fast_hook(url: str, window: float = 30.0) -> WebhookNotifier:
    config = hook_config(url).notifiers["hook"]
    return WebhookNotifier("hook", config, backoff_seconds=0.001, window=window)


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text and PATH_TOKEN not in text


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_posts_json_with_configured_headers(receiver: Receiver) -> None:
    dispatcher = Dispatcher(open_notifiers(hook_config(receiver.url())))
    dispatcher.send(["hook"], ALARM_EVENT)
    assert dispatcher.close(timeout=30)

    [(path, headers, body)] = receiver.requests
    assert path == f"/hooks/{PATH_TOKEN}?key={PATH_TOKEN}"
    assert json.loads(body) == ALARM_EVENT
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == TOKEN  # read from the environment at delivery
    assert headers["X-Team"] == "data"


@pytest.mark.parametrize(("statuses", "posts"), [([503, 503], 3), ([429], 2), ([500, 502, 504], 4)])
def test_webhook_retries_5xx_and_429(receiver: Receiver, statuses: list[int], posts: int) -> None:
    receiver.statuses = list(statuses)
    fast_hook(receiver.url()).notify(ALARM_EVENT)
    assert len(receiver.requests) == posts
    assert all(json.loads(body) == ALARM_EVENT for _, _, body in receiver.requests)


@pytest.mark.parametrize(
    ("retry_after", "waits"),
    [
        ("1", "1 s"),  # seconds, longer than the backoff: waited for
        ("Wed, 21 Oct 2015 07:28:00 GMT", "0.001 s"),  # a date gone by: the backoff
        ("3600", "1.5 s"),  # an hour: no longer than max_wait
        ("soon", "0.001 s"),  # neither: the backoff
    ],
)
def test_webhook_waits_as_long_as_the_receiver_asks(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, retry_after: str, waits: str
) -> None:
    receiver.statuses = [429]
    receiver.retry_after = retry_after
    config = hook_config(receiver.url()).notifiers["hook"]
    hook = WebhookNotifier("hook", config, backoff_seconds=0.001, max_wait=1.5)
    with caplog.at_level(logging.INFO, logger="riverbed.notify"):
        hook.notify(ALARM_EVENT)
    assert len(receiver.requests) == 2
    assert f"answered HTTP 429; retrying in {waits} " in caplog.text


def test_webhook_gives_up_when_its_window_is_used(receiver: Receiver) -> None:
    receiver.statuses = [503] * 1000
    with pytest.raises(NotifyError) as failure:
        fast_hook(receiver.url(), window=0.5).notify(ALARM_EVENT)
    attempts = len(receiver.requests)
    assert attempts > 1
    message = str(failure.value)
    assert f"http://127.0.0.1:{receiver.port}" in message
    assert f"503 after {attempts} attempts" in message
    assert_no_secret(message)


def test_a_receiver_down_for_12_s_still_gets_the_notice() -> None:
    """The production notifier (backoff, window) against a receiver that comes up 12 s after
    the first attempt: retried until it answers, as the README's 30 s promise says."""
    port = free_port()  # probed and released: nothing listens there yet
    url = f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}?key={PATH_TOKEN}"
    dispatcher = Dispatcher(open_notifiers(hook_config(url)))
    dispatcher.send(["hook"], ALARM_EVENT)
    threading.Event().wait(12)
    late = Receiver(port)
    try:
        assert dispatcher.close(timeout=60)
        assert [json.loads(body) for _, _, body in late.requests] == [ALARM_EVENT]
        assert dispatcher.given_up == 0
    finally:
        late.server.shutdown()
        late.server.server_close()


@pytest.mark.parametrize("status", [400, 401, 404, 301])
def test_webhook_does_not_retry_client_errors(receiver: Receiver, status: int) -> None:
    receiver.statuses = [status, 200]
    with pytest.raises(NotifyError, match=f"HTTP {status}") as failure:
        fast_hook(receiver.url()).notify(ALARM_EVENT)
    assert len(receiver.requests) == 1
    assert_no_secret(str(failure.value))


def test_webhook_missing_secret_names_the_config_key(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RIVERBED_TEST_HOOK_TOKEN")
    with pytest.raises(NotifyError) as failure:
        fast_hook(receiver.url()).notify(ALARM_EVENT)
    assert "notifiers.hook.headers.Authorization" in str(failure.value)
    assert "RIVERBED_TEST_HOOK_TOKEN" in str(failure.value)
    assert receiver.requests == []


def test_dead_webhook_neither_raises_nor_hangs(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # probed and released: nothing listens there
    url = f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}?key={PATH_TOKEN}"
    dispatcher = Dispatcher({"hook": fast_hook(url, window=1.0)})
    with caplog.at_level(logging.INFO, logger="riverbed.notify"):
        dispatcher.send(["hook"], ALARM_EVENT)  # returns at once, whatever the receiver does
        assert dispatcher.close(timeout=60)
    # by port: a delivery abandoned by another test may still log from its daemon thread
    failures = [
        r for r in caplog.records if r.levelno == logging.ERROR and f":{port}" in r.getMessage()
    ]
    assert len(failures) == 1
    message = failures[0].getMessage()
    assert message.startswith("notification given up: ")
    assert f"http://127.0.0.1:{port}" in message and "cannot connect" in message
    assert " attempts" in message
    assert_no_secret(caplog.text)


def test_close_returns_while_a_delivery_hangs() -> None:
    """A receiver that accepts the connection and never answers: close() gives up on it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        config = parse_config(f"notifiers: {{hook: {{type: webhook, url: '{url}'}}}}", "test")
        dispatcher = Dispatcher(open_notifiers(config))  # production timeout: 10 s per attempt
        dispatcher.send(["hook"], ALARM_EVENT)
        assert dispatcher.close(timeout=0.2) is False
    assert dispatcher.given_up == 1


def test_an_abandoned_delivery_is_an_error_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    slow = Blocking()
    dispatcher = Dispatcher({"slow": slow})
    with caplog.at_level(logging.WARNING, logger="riverbed.notify"):
        dispatcher.send(["slow"], {"kind": "run", "n": 1})
        dispatcher.send(["slow"], {"kind": "run", "n": 2})
        assert slow.started.wait(timeout=60)
        assert dispatcher.close(timeout=0.1) is False
    slow.release.set()
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "notification given up: 2 event(s) for slow still undelivered" in error.getMessage()
    assert dispatcher.given_up == 2


def test_webhook_retries_no_longer_than_its_window(receiver: Receiver) -> None:
    """The receiver asks for 2 s more each time; with a 1 s window no second attempt starts."""
    receiver.statuses = [503] * 10
    receiver.retry_after = "2"
    config = hook_config(receiver.url()).notifiers["hook"]
    hook = WebhookNotifier("hook", config, backoff_seconds=0.001, window=1.0)
    with pytest.raises(NotifyError, match="answered HTTP 503"):
        hook.notify(ALARM_EVENT)
    assert len(receiver.requests) == 1


# --- the dispatcher ----------------------------------------------------------------------------


class Blocking:
    """A notifier that holds its first delivery until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.events: list[dict[str, Any]] = []

    def notify(self, event: dict[str, Any]) -> None:
        self.started.set()
        assert self.release.wait(timeout=60)
        self.events.append(event)


def test_full_queue_drops_the_event_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    slow = Blocking()
    dispatcher = Dispatcher({"slow": slow}, max_pending=1)
    with caplog.at_level(logging.WARNING, logger="riverbed.notify"):
        dispatcher.send(["slow"], {"kind": "run", "n": 1})
        assert slow.started.wait(timeout=60)  # the worker holds event 1; the queue is empty
        dispatcher.send(["slow"], {"kind": "run", "n": 2})  # queued
        dispatcher.send(["slow"], {"kind": "run", "n": 3})  # no room: dropped
        slow.release.set()
        assert dispatcher.close(timeout=60)
    assert [e["n"] for e in slow.events] == [1, 2]
    assert "run event for slow dropped" in caplog.text
    assert dispatcher.given_up == 1


def test_a_failing_notifier_is_logged_and_the_others_still_deliver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def notify(self, _event: dict[str, Any]) -> None:
            raise RuntimeError("boom")

    good = Blocking()
    good.release.set()
    dispatcher = Dispatcher({"broken": Broken(), "good": good})
    with caplog.at_level(logging.WARNING, logger="riverbed.notify"):
        dispatcher.send(["broken", "good", "nobody"], ALARM_EVENT)
        dispatcher.send(["broken", "good"], ALARM_EVENT)
        assert dispatcher.close(timeout=60)
    assert good.events == [ALARM_EVENT, ALARM_EVENT]
    assert caplog.text.count("notifier broken failed on a alarm event: RuntimeError: boom") == 2
    assert "no notifier named 'nobody'" in caplog.text


# --- command ------------------------------------------------------------------------------------


def command_notifier(command: str, timeout: float = 30) -> CommandNotifier:
    return CommandNotifier("cmd", NotifierConfig(type="command", command=command), timeout)


def test_command_gets_the_event_on_stdin_and_its_names_in_env(tmp_path: Path) -> None:
    out, env = tmp_path / "event.json", tmp_path / "env.txt"
    command = (
        f'cat > "{out}"; printf "%s %s %s" "$RIVERBED_EVENT" "$RIVERBED_ALARM" '
        f'"$RIVERBED_STATE" > "{env}"'
    )
    config = parse_config(
        json.dumps({"notifiers": {"cmd": {"type": "command", "command": command}}}), "test"
    )
    dispatcher = Dispatcher(open_notifiers(config))
    dispatcher.send(["cmd"], ALARM_EVENT)
    assert dispatcher.close(timeout=60)
    assert json.loads(out.read_text()) == ALARM_EVENT
    assert env.read_text() == "alarm lag_high ALARM"


def test_command_failure_reports_status_and_first_stderr_line() -> None:
    notifier = command_notifier(
        "cat > /dev/null; echo 'no route to pager' >&2; echo more >&2; exit 3"
    )
    with pytest.raises(NotifyError) as failure:
        notifier.notify(ALARM_EVENT)
    message = str(failure.value)
    assert "cmd exited with status 3: no route to pager" in message
    assert "more" not in message and "/dev/null" not in message  # not the command line


def test_command_that_runs_too_long_is_killed() -> None:
    with pytest.raises(NotifyError, match="killed"):
        command_notifier("sleep 600", timeout=0.2).notify(ALARM_EVENT)


# --- log ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "level"),
    [
        (ALARM_EVENT, logging.WARNING),
        (ALARM_EVENT | {"state": "OK", "previous": "ALARM"}, logging.INFO),
        ({"kind": "run", "run_id": "r1", "status": "failed", "error": "boom"}, logging.WARNING),
        ({"kind": "run", "run_id": "r2", "status": "succeeded"}, logging.INFO),
    ],
)
def test_log_notifier_writes_one_record_with_the_event(
    caplog: pytest.LogCaptureFixture, event: dict[str, Any], level: int
) -> None:
    with caplog.at_level(logging.DEBUG, logger="riverbed.alarm"):
        LogNotifier().notify(event)
    [record] = [r for r in caplog.records if r.name == "riverbed.alarm"]
    assert record.levelno == level
    assert record.fields == event  # type: ignore[attr-defined]
    assert str(event.get("alarm") or event.get("run_id")) in record.getMessage()
