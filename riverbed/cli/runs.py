"""`riverbed runs`: the run history, and one run's timeline state by state."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from riverbed.cli.common import (
    ConfigOption,
    app,
    console,
    open_project,
    plural,
    print_wrapped,
)
from riverbed.config import Project
from riverbed.errors import UsageError


@app.command(short_help="Run history; `riverbed runs show RUN_ID` for a run's timeline.")
def runs(
    # described in the docstring: typer would list them with their Python type (<str>)
    action: Annotated[str | None, typer.Argument(metavar="show", hidden=True)] = None,
    run_id: Annotated[str | None, typer.Argument(metavar="RUN_ID", hidden=True)] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="How many runs to list.")] = 20,
    show_idle: Annotated[
        bool,
        typer.Option("--all", help="List idle runs (nothing new) too; they are hidden by default."),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON for scripts: every run, with its idle flag and row counts.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run history: the latest runs, or with `show RUN_ID` one run's timeline state by state.
    RUN_ID is a run's id, or the id's hex tail (the short id the list shows).

    Example: `riverbed runs`, `riverbed runs show 1a2b3c`
    """
    if action not in (None, "show"):
        raise UsageError(f"riverbed runs {action}: did you mean `riverbed runs show RUN_ID`?")
    if action == "show" and run_id is None:
        raise UsageError("riverbed runs show needs a RUN_ID (see `riverbed runs`)")
    project = open_project(config)
    if run_id is None:
        print_runs(project, limit, as_json, show_idle)
    else:
        print_timeline(project, run_id, as_json)


def print_runs(project: Project, limit: int, as_json: bool, show_idle: bool) -> None:
    """The latest runs, one line each, laid out to fit the console (80 columns in a pipe):
    a short id that `runs show` and `run --redrive` take, and a failed run's error whole on
    the lines below it. Idle runs (nothing new: one per interval of `run --every`) are
    counted, not listed, unless ``show_idle``; the JSON lists every run with its idle flag."""
    from riverbed.orchestrate.history import RunHistory
    from riverbed.orchestrate.machine import machine_for, task_states
    from riverbed.state import open_state

    manifest = open_state(project)
    try:
        history = RunHistory(manifest)
        runs = manifest.runs.latest(limit, idle=as_json or show_idle)
        if as_json:
            # the record's keys, then the rows the run moved (see RunHistory.row_counts)
            tasks = task_states(machine_for(project.config))
            listed = [asdict(r) | history.row_counts(r.run_id, tasks) for r in runs]
            print(json.dumps(listed, default=str))
            return
        full = len(runs) == limit  # older runs, idle ones among them, are beyond the list
        hidden = 0 if show_idle else manifest.runs.idle_count(runs[-1].started_at if full else None)
        ids = {r.run_id: history.short_id(r.run_id) for r in runs}
    finally:
        manifest.close()
    if not runs:
        console.print(
            f"no runs with anything to do yet (+ {hidden} idle; `riverbed runs --all` shows "
            f"{'it' if hidden == 1 else 'them'})"
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
        seconds = f"{r.ended_at - r.started_at:.2f}" if r.ended_at else "-"
        status = "nothing new" if r.idle else r.status
        gone = r.process_gone()
        if gone:
            status = "died"
        color = {"succeeded": "green", "failed": "red", "aborted": "yellow"}.get(status, "dim")
        console.print(
            f"{ids[r.run_id]:<{width}}  [{color}]{status:<11}[/{color}]  "
            f"{_clock(r.started_at)}  {seconds:>7}  {r.trigger}",
            highlight=False,
        )
        where = ", ".join(
            ([f"redriven {r.redrives}x"] if r.redrives else [])
            + ([f"at {r.failed_state}"] if r.failed_state else [])
        )
        note = f"{where}: {r.error}" if where and r.error else where or r.error
        if gone:
            note = (
                f"process {r.pid} is gone (killed?); the next `riverbed run` marks it "
                "aborted, `riverbed run --redrive` resumes it"
            )
        if note:
            _indented(note, 2)
    if hidden:
        console.print(
            f"+ {plural(hidden, 'idle run')} hidden (nothing new); "
            f"`riverbed runs --all` shows {'it' if hidden == 1 else 'them'}",
            highlight=False,
        )


def print_timeline(project: Project, given: str, as_json: bool) -> None:
    """One run's events, one line each (time, state, event, attempt), their details (error,
    counts, seconds) on the lines below, wrapped to the console's width."""
    from riverbed.orchestrate.history import RunHistory
    from riverbed.state import open_state

    manifest = open_state(project)
    try:
        history = RunHistory(manifest)
        run = history.resolve(given)
        events = manifest.runs.events(run.run_id)
        short = history.short_id(run.run_id)
    finally:
        manifest.close()
    if as_json:
        print(json.dumps({"run": asdict(run), "events": [asdict(e) for e in events]}, default=str))
        return
    status = "succeeded, nothing new" if run.idle else run.status
    console.print(
        f"run {run.run_id}: {status} ({run.trigger}), started {_clock(run.started_at)}"
        + (f", redriven {run.redrives}x" if run.redrives else ""),
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
    if run.status in ("failed", "aborted"):
        console.print(f"resume with `riverbed run --redrive {short}`", highlight=False)


def _indented(text: str, indent: int) -> None:
    """``text`` on lines of its own, indented, wrapped to the console's width: nothing cut."""
    print_wrapped(Text(text), indent=indent)


def _clock(ts: float, millis: bool = False) -> str:
    text = time.strftime("%m-%d %H:%M:%S", time.localtime(ts))
    return text + (f".{int(ts * 1000) % 1000:03d}" if millis else "")
