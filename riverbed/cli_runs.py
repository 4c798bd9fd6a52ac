"""What `riverbed run` and `riverbed runs` print: run reports, the run list, a run's timeline,
and the results of the transform and load stages."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.markup import escape
from rich.table import Table

from riverbed.cli import console, err_console
from riverbed.config import Project
from riverbed.errors import RiverbedError
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
        console.print(
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


def print_runs(project: Project, limit: int, as_json: bool) -> None:
    from riverbed.lake.manifest import open_manifest
    from riverbed.orchestrate.history import RunHistory

    manifest = open_manifest(project)
    try:
        runs = RunHistory(manifest).runs(limit)
    finally:
        manifest.close()
    if as_json:
        print(json.dumps(runs, default=str))
        return
    if not runs:
        console.print("no runs yet: `riverbed run --once` starts one")
        return
    table = Table()
    for name in ("run", "status", "trigger", "started", "seconds"):
        table.add_column(name, no_wrap=True)
    table.add_column("failed state / error")
    for r in runs:
        seconds = (r["ended_at"] - r["started_at"]) if r["ended_at"] else None
        color = {"succeeded": "green", "failed": "red", "aborted": "yellow"}.get(r["status"], "")
        table.add_row(
            r["run_id"],
            f"[{color}]{r['status']}[/{color}]" if color else r["status"],
            r["trigger"] + (f" (redriven {r['redrives']}x)" if r["redrives"] else ""),
            _clock(r["started_at"]),
            f"{seconds:.2f}" if seconds is not None else "-",
            escape(f"{r['failed_state'] or ''} {(r['error'] or '')[:80]}".strip()),
        )
    console.print(table)


def print_timeline(project: Project, run_id: str, as_json: bool) -> None:
    from riverbed.lake.manifest import open_manifest
    from riverbed.orchestrate.history import RunHistory

    manifest = open_manifest(project)
    try:
        history = RunHistory(manifest)
        found = history.matching(run_id)
        if not found:
            raise RiverbedError(f"no run {run_id}; `riverbed runs` lists the runs")
        if len(found) > 1:
            ids = ", ".join(r["run_id"] for r in found[:5]) + (", ..." if len(found) > 5 else "")
            raise RiverbedError(f"{run_id} names {len(found)} runs ({ids}); give more of the id")
        run = found[0]
        run_id = run["run_id"]
        events = history.events(run_id)
    finally:
        manifest.close()
    if as_json:
        print(json.dumps({"run": run, "events": [e.__dict__ for e in events]}, default=str))
        return
    console.print(
        f"run {run_id}: {run['status']} ({run['trigger']}), started {_clock(run['started_at'])}"
        + (f", redriven {run['redrives']}x" if run["redrives"] else "")
    )
    table = Table()
    for name in ("time", "state", "event", "attempt"):
        table.add_column(name, no_wrap=True)
    table.add_column("detail")
    for e in events:
        detail = dict(e.detail)
        output = detail.pop("output", None)
        parts = [f"{k}={v}" for k, v in detail.items()]
        if output:
            parts += [f"{k}={v}" for k, v in output.items()]
        if e.error:
            parts.insert(0, f"{e.error_class}: {e.error}" if e.error_class else e.error)
        table.add_row(
            _clock(e.ts, millis=True),
            e.state,
            e.event,
            str(e.attempt or ""),
            escape(", ".join(str(p) for p in parts)),
        )
    console.print(table)
    if run["status"] in ("failed", "aborted"):
        console.print(f"resume with `riverbed run --redrive {run_id}`")


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
