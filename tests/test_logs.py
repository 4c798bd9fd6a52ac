"""Structured logs: JSON lines with the run's context, a readable console line, redaction."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, write_config
from riverbed.errors import RiverbedError
from riverbed.observe.logs import LOG_FILE, log_context, log_event, redact, setup_logging

log = logging.getLogger("riverbed.test_logs")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """setup_logging configures the root logger: undo it so other tests see a clean one."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if getattr(h, "_riverbed_handler", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def records(log_dir: Path) -> list[dict[str, Any]]:
    lines = (log_dir / LOG_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_json_lines_carry_the_context_and_fields(tmp_path: Path) -> None:
    setup_logging(tmp_path, console=False)
    log.info("before the run")
    with log_context(run_id="r-1", state="Capture", table="orders"):
        log_event(log, "rows_written", "wrote 5 rows", rows=5, seconds=1.25)
        log.warning("plain %s", "message", extra={"fields": {"files": 2}})
    log.info("after the run")

    before, event, plain, after = records(tmp_path)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])
    assert event == {
        "time": event["time"],
        "level": "INFO",
        "logger": "riverbed.test_logs",
        "event": "rows_written",
        "message": "wrote 5 rows",
        "run_id": "r-1",
        "state": "Capture",
        "table": "orders",
        "rows": 5,
        "seconds": 1.25,
    }
    # without an event, the message is the event
    assert plain["event"] == plain["message"] == "plain message"
    assert (plain["level"], plain["files"], plain["run_id"]) == ("WARNING", 2, "r-1")
    for outside in (before, after):
        assert not {"run_id", "state", "table"} & outside.keys()


def test_nested_context_adds_and_none_removes(tmp_path: Path) -> None:
    setup_logging(tmp_path, console=False)
    with log_context(run_id="r-2", state="Load"):
        with log_context(table="customers", attempt=2):
            log.info("inner")
        with log_context(state=None):
            log.info("no state")
        log.info("outer")
    inner, no_state, outer = records(tmp_path)
    assert (inner["run_id"], inner["state"], inner["table"], inner["attempt"]) == (
        "r-2",
        "Load",
        "customers",
        2,
    )
    assert "state" not in no_state and no_state["run_id"] == "r-2"
    assert "table" not in outer and outer["state"] == "Load"


def test_context_reaches_threads_started_with_copy_context(tmp_path: Path) -> None:
    setup_logging(tmp_path, console=False)

    def work(name: str) -> None:
        log.info("from %s", name)

    with log_context(run_id="r-3", state="Transform", table="orders"):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(work, "copied"))
        plain = threading.Thread(target=work, args=("plain",))
        for thread in (copied, plain):
            thread.start()
            thread.join()

    by_message = {r["message"]: r for r in records(tmp_path)}
    copied_record = by_message["from copied"]
    assert (copied_record["run_id"], copied_record["state"], copied_record["table"]) == (
        "r-3",
        "Transform",
        "orders",
    )
    # documented: a plain thread starts with an empty context
    assert "run_id" not in by_message["from plain"]


def test_console_line_is_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(tmp_path)
    with log_context(run_id="r-4", table="orders"):
        log_event(log, "loaded", "loaded facts", rows=10, note="two words", seconds=0.5)
    log.info("no context")

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r'\d\d:\d\d:\d\d INFO  \[r-4 orders\] loaded facts rows=10 note="two words" seconds=0\.5',
        lines[0],
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO  no context", lines[1])


def test_console_says_a_field_the_message_shows_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure's text was printed twice on each line: in the message and as error=..."""
    setup_logging(tmp_path)
    error = "tables.t.keys: column idd is not in t"
    log_event(log, "failed", f"transform failed: {error}", error=error, attempt=1)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.count(error) == 1 and line.endswith("attempt=1")
    logged = records(tmp_path)[-1]
    assert logged["error"] == error  # the JSON log keeps every field


def test_console_level_filters_the_console_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path, console_level="warning")
    log.info("only in the file")
    log.warning("in both")
    err = capsys.readouterr().err
    assert "in both" in err and "only in the file" not in err
    assert [r["message"] for r in records(tmp_path)] == ["only in the file", "in both"]


def test_no_console_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(tmp_path, console=False)
    log.warning("file only")
    assert capsys.readouterr().err == ""
    assert [r["message"] for r in records(tmp_path)] == ["file only"]


def test_unknown_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log level 'LOUD' is not one of DEBUG, INFO"):
        setup_logging(tmp_path, console_level="LOUD")


def test_setup_twice_writes_each_record_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path)
    setup_logging(tmp_path)
    log.info("once")
    assert len(records(tmp_path)) == 1
    assert capsys.readouterr().err.count("once") == 1

    # a second call may move the file: the old one gets nothing more
    elsewhere = tmp_path / "elsewhere"
    setup_logging(elsewhere)
    log.info("moved")
    assert [r["message"] for r in records(tmp_path)] == ["once"]
    assert [r["message"] for r in records(elsewhere)] == ["moved"]


def test_secrets_and_dsn_passwords_are_masked_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-token-7f1"
    redact(secret)
    setup_logging(tmp_path)
    with log_context(run_id="r-5"):
        log.info("token is %s", secret, extra={"fields": {"header": f"Bearer {secret}"}})
        log_event(
            log,
            "connect",
            "connecting to postgresql://app:pg-pass-1@db.internal:5432/shop",
            dsn="host=db port=5432 user=app password=kv-pass-2 dbname=shop",
            attempts=[f"x{secret}x"],
        )
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            log.exception("boom")

    text = (tmp_path / LOG_FILE).read_text(encoding="utf-8")
    console = capsys.readouterr().err
    for output in (text, console):
        for leaked in (secret, "pg-pass-1", "kv-pass-2"):
            assert leaked not in output
        assert "postgresql://app:***@db.internal:5432/shop" in output
        assert "password=***" in output
        assert "Bearer ***" in output

    token, connect, boom = records(tmp_path)
    assert token["message"] == "token is ***" and token["header"] == "Bearer ***"
    assert connect["dsn"] == "host=db port=5432 user=app password=*** dbname=shop"
    assert connect["attempts"] == ["x***x"]
    assert "RuntimeError: failed with ***" in boom["exception"]


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("postgres://u:p@h/db", "postgres://u:***@h/db"),
        (
            "postgresql+psycopg://user:p%40ss@host:5432/db",
            "postgresql+psycopg://user:***@host:5432/db",
        ),
        ("s3://key:secret@bucket/path", "s3://key:***@bucket/path"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password: unchanged
        ("http://host:8080/metrics", "http://host:8080/metrics"),  # a port is not a password
        ("PASSWORD = 'two words' host=h", "PASSWORD = *** host=h"),
        ("env PGPASSWORD=abc db_password=def", "env PGPASSWORD=*** db_password=***"),
        (
            "postgresql://h/db?sslmode=require&password=x1&user=u",
            "postgresql://h/db?sslmode=require&password=***&user=u",
        ),
    ],
)
def test_dsn_passwords_in_messages(
    tmp_path: Path, raw: str, masked: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path)
    log.info(raw)
    assert records(tmp_path)[0]["message"] == masked
    assert capsys.readouterr().err.rstrip("\n").endswith(masked)


# --- the logs: section of riverbed.yaml ------------------------------------------------------


def test_file_level_decides_what_the_file_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path, console_level="warning", file_level="error", file_name="quiet.jsonl")
    log.info("dropped")
    log.warning("console only")
    log.error("both")
    kept = (tmp_path / "quiet.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["message"] for line in kept] == ["both"]
    err = capsys.readouterr().err
    assert "console only" in err and "both" in err  # the console keeps its own level
    assert not (tmp_path / LOG_FILE).exists()

    setup_logging(tmp_path, console_level="warning", file_level="debug")
    log.debug("details")
    assert [r["level"] for r in records(tmp_path)] == ["DEBUG"]
    assert "details" not in capsys.readouterr().err  # debug in the file is not on the console


def test_the_config_places_the_file_and_sets_its_level(tmp_path: Path) -> None:
    from riverbed.cli.common import start_logging
    from riverbed.config import load_project

    config = write_config(
        tmp_path / "project",
        "logs:\n  path: ../shared/pipeline.jsonl\n  level: warning\n",
    )
    start_logging(load_project(config), quiet=True)
    log.info("below the level")
    log.warning("kept")
    written = tmp_path / "shared" / "pipeline.jsonl"  # relative to the config's folder
    messages = [json.loads(line)["message"] for line in written.read_text().splitlines()]
    assert messages == ["kept"]
    assert not (tmp_path / "project" / ".riverbed" / "logs").exists()


def test_an_unwritable_log_path_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    with pytest.raises(RiverbedError, match="cannot write the log file .*not-a-folder/x.jsonl"):
        setup_logging(blocker, console=False, file_name="x.jsonl")
    (tmp_path / "logs").mkdir()
    with pytest.raises(RiverbedError, match=r"/logs \(it is a folder: name the file itself\)"):
        setup_logging(tmp_path, console=False, file_name="logs")

    config = write_config(tmp_path / "project", "logs: {path: ../not-a-folder/run.jsonl}\n")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.code == 1 and "Traceback" not in result.text
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "not-a-folder/run.jsonl" in lines[0] and "logs.path" in lines[0]
