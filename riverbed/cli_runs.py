"""What `riverbed run` and `riverbed runs` print: run reports, the run list, a run's timeline,
and the results of the transform and load stages."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.markup import escape
from rich.text import Text

from riverbed.cli import console, err_console
from riverbed.config import Project
from riverbed.observe.logs import RedactFilter


@contextmanager
def live_progress(enabled: bool) -> Iterator[None]:
    """While a run works: the last thing it logged (a state entered, a batch staged, a
    retry), on one line of stderr that rewrites itself. Only on a terminal: elsewhere rich
    draws nothing, and the JSON log keeps every line anyway."""
    if not enabled or not err_console.is_terminal:
        yield
        return
    from rich.live import Live
    from rich.spinner import Spinner

    spinner = Spinner("dots", text="starting ...", style="status.spinner")
    live = Live(spinner, console=err_console, transient=True, refresh_per_second=12.5)

    class ToLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            spinner.update(text=escape(record.getMessage()))
            live.refresh()  # at once: a fast step must not slip between two redraws

    handler = ToLine(logging.INFO)
    handler.addFilter(RedactFilter())  # as on every other way out: no secret on the screen
    logger = logging.getLogger("riverbed")
    logger.addHandler(handler)
    live.start()
    try:
        yield
    finally:
        logger.removeHandler(handler)
        live.stop()


def run_partial(
    project: Project,
    stage: str,
    engine: str | None,
    tables: Sequence[str] | None,
    as_json: bool,
    quiet: bool,
    extra: dict[str, Any],
) -> None:
    """`riverbed run --stage transform|load`: one stage, outside the state machine (no run
    history), for scripts and benchmarks."""
    from riverbed.load.runner import LoadResult, run_load
    from riverbed.transform.runner import TransformResult, run_transform

    with live_progress(not (quiet or as_json)):
        result = (
            run_transform(project, engine=engine, tables=tables)
            if stage == "transform"
            else TransformResult(engine or project.config.transform.engine)
        )
        loaded = run_load(project, tables=tables) if stage == "load" else LoadResult()
    payload = result.as_dict() | {"load": loaded.as_dict()} | extra
    if as_json:
        print(json.dumps(payload, default=str))
    elif quiet:
        return
    elif stage == "transform":
        print_transform(result)
    else:
        print_load(loaded)


def say_wrapped(text: str, highlight: bool = True) -> None:
    """``text`` wrapped at spaces to the console's width (a pipe gets 80 columns), no line
    ending in a space: a terminal would otherwise break it inside a figure or an id."""
    for line in Text(text).wrap(console, console.width):
        line.rstrip()
        console.print(line, highlight=highlight)


def print_report(
    report: Any, as_json: bool, quiet: bool, extra: dict[str, Any] | None = None
) -> None:
    """A run's outcome: one line (or JSON, with ``extra`` beside the report's own keys)."""
    if as_json:
        print(json.dumps(report.as_dict() | (extra or {}), default=str), flush=True)
        return
    if quiet and report.status == "succeeded":
        return
    v = report.variables
    if report.status == "succeeded":
        if not v.get("new_data", 1):
            console.print(f"run {report.run_id}: nothing new ({report.seconds:.2f} s)")
            return
        say_wrapped(
            f"run {report.run_id} succeeded in {report.seconds:.1f} s: "
            f"{int(v.get('rows_in', 0)):,} changes transformed, "
            f"{int(v.get('rows_quarantined', 0)):,} quarantined, "
            f"{report.loaded_rows:,} rows loaded into the warehouse",
            highlight=False,
        )
        return
    err_console.print(
        f"[red]error:[/red] run {report.run_id} failed at {report.failed_state} "
        f"({report.error_class}): {escape(report.error or '')}",
        highlight=False,
    )
    err_console.print(
        f"see `riverbed runs show {report.run_id}`; after fixing the cause, "
        f"`riverbed run --redrive {report.run_id}` resumes at the failed state",
        highlight=False,
    )


def print_runs(project: Project, limit: int, as_json: bool, show_idle: bool) -> None:
    """The latest runs, one line each, laid out to fit the console (80 columns in a pipe):
    a short id that `runs show` and `run --redrive` take, and a failed run's error whole on
    the lines below it. Idle runs (nothing new: one per interval of `run --every`) are
    counted, not listed, unless ``show_idle``; the JSON lists every run with its idle flag."""
    from riverbed.lake.manifest import open_manifest
    from riverbed.orchestrate.history import RunHistory

    manifest = open_manifest(project)
    try:
        history = RunHistory(manifest)
        runs = history.runs(limit, idle=as_json or show_idle)
        if as_json:
            print(json.dumps(runs, default=str))
            return
        full = len(runs) == limit  # older runs, idle ones among them, are beyond the list
        hidden = 0 if show_idle else history.idle_runs(runs[-1]["started_at"] if full else None)
        ids = {r["run_id"]: history.short_id(r["run_id"]) for r in runs}
    finally:
        manifest.close()
    if not runs:
        console.print(
            f"no runs with anything to do yet (+ {hidden} idle; `riverbed runs --all` shows them)"
            if hidden
            else "no runs yet: `riverbed run --once` starts one",
            highlight=False,
        )
        return
    width = max([len("run"), *(len(i) for i in ids.values())])
    console.print(
        f"{'run':<{width}}  {'status':<11}  {'started':<14}  {'seconds':>7}  trigger",
        highlight=False,
    )
    for r in runs:
        seconds = f"{r['ended_at'] - r['started_at']:.2f}" if r["ended_at"] else "-"
        status = "nothing new" if r["idle"] else r["status"]
        gone = _gone(r)
        if gone:
            status = "died"
        color = {"succeeded": "green", "failed": "red", "aborted": "yellow"}.get(status, "dim")
        console.print(
            f"{ids[r['run_id']]:<{width}}  [{color}]{status:<11}[/{color}]  "
            f"{_clock(r['started_at'])}  {seconds:>7}  {r['trigger']}",
            highlight=False,
        )
        where = ", ".join(
            ([f"redriven {r['redrives']}x"] if r["redrives"] else [])
            + ([f"at {r['failed_state']}"] if r["failed_state"] else [])
        )
        note = f"{where}: {r['error']}" if where and r["error"] else where or r["error"]
        if gone:
            note = (
                f"process {r['pid']} is gone (killed?); the next `riverbed run` marks it "
                "aborted, `riverbed run --redrive` resumes it"
            )
        if note:
            _indented(note, 2)
    if hidden:
        console.print(
            f"+ {hidden} idle run{'s' if hidden != 1 else ''} hidden (nothing new); "
            "`riverbed runs --all` shows them",
            highlight=False,
        )


def _gone(run: dict[str, Any]) -> bool:
    """A run the history still calls running whose process, on this machine, no longer
    exists (kill -9): it stays 'running' until the next run takes its lock over."""
    if run["status"] != "running" or run.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(run["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, TypeError, ValueError):
        return False  # alive under another user, or no pid to check
    return False


def print_timeline(project: Project, given: str, as_json: bool) -> None:
    """One run's events, one line each (time, state, event, attempt), their details (error,
    counts, seconds) on the lines below, wrapped to the console's width."""
    from riverbed.lake.manifest import open_manifest
    from riverbed.orchestrate.history import RunHistory

    manifest = open_manifest(project)
    try:
        history = RunHistory(manifest)
        run = history.resolve(given)
        run_id = run["run_id"]
        events = history.events(run_id)
        short = history.short_id(run_id)
    finally:
        manifest.close()
    if as_json:
        print(json.dumps({"run": run, "events": [e.__dict__ for e in events]}, default=str))
        return
    status = "succeeded, nothing new" if run["idle"] else run["status"]
    console.print(
        f"run {run_id}: {status} ({run['trigger']}), started {_clock(run['started_at'])}"
        + (f", redriven {run['redrives']}x" if run["redrives"] else ""),
        highlight=False,
    )
    width = min(max([len("state"), *(len(e.state) for e in events)]), 30)
    event_width = max([0, *(len(e.event) for e in events)])
    for e in events:
        attempt = f"attempt {e.attempt}" if e.attempt else ""
        line = f"{_clock(e.ts, millis=True)}  {e.state:<{width}}  {e.event:<{event_width}}"
        console.print(
            escape(f"{line}  {attempt}").rstrip(),
            highlight=False,
        )
        detail = dict(e.detail)
        output = detail.pop("output", None)
        parts = [f"{k}={v}" for k, v in detail.items()]
        if output:
            parts += [f"{k}={v}" for k, v in output.items()]
        if e.error:
            parts.insert(0, f"{e.error_class}: {e.error}" if e.error_class else e.error)
        if parts:
            _indented(", ".join(str(p) for p in parts), 4)
    if run["status"] in ("failed", "aborted"):
        console.print(f"resume with `riverbed run --redrive {short}`", highlight=False)


def _indented(text: str, indent: int) -> None:
    """``text`` on lines of its own, indented, wrapped to the console's width: nothing cut."""
    import textwrap

    pad = " " * indent
    for line in textwrap.wrap(
        text,
        width=max(console.width, 40),
        initial_indent=pad,
        subsequent_indent=pad,
        break_on_hyphens=False,
    ):
        console.print(escape(line), highlight=False)


def _clock(ts: float, millis: bool = False) -> str:
    text = time.strftime("%m-%d %H:%M:%S", time.localtime(ts))
    return text + (f".{int(ts * 1000) % 1000:03d}" if millis else "")


def print_load(result: Any) -> None:
    if not result.batches:
        console.print("warehouse: nothing new to load")
        return
    for target, info in result.tables.items():
        if info["batches"]:
            console.print(
                f"{target:<18} {info['batches']} batch(es), {info['rows']:,} staged rows loaded"
            )
    console.print(f"loaded in {result.seconds:.1f} s")


def print_transform(result: Any) -> None:
    if not result.batches:
        console.print("nothing new to transform (every raw file is already staged)")
    for t in result.tables:
        if not t.batches:
            continue
        failing = [
            f"{q['rule']} {q['failed']:,}"
            for b in t.batches
            for q in b["quality"]
            if q["status"] != "pass"
        ]
        console.print(
            f"{t.table:<12} {len(t.batches)} batch(es): {t.rows_in:,} rows in, "
            f"{t.rows_out:,} staged, {t.rows_quarantined:,} quarantined"
            + (f"  ({escape('; '.join(failing))})" if failing else "")
        )
    for bad in result.bad_files:
        console.print(
            f"[yellow]unreadable raw file {bad['path']} moved to {bad['moved_to']}: "
            f"{bad['reason']}[/yellow]"
        )
    console.print(f"transformed on {result.engine} in {result.seconds:.1f} s")
