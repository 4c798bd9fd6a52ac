"""`riverbed run`: the pipeline once, on a schedule, following capture, one stage of it, or
a failed run redriven; and what a run prints: its report, its progress, the results of one stage."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, Literal, get_args

import typer
from rich.markup import escape

from riverbed.cli.common import (
    ConfigOption,
    app,
    check_choice,
    console,
    err_console,
    open_project,
    plural,
    say_wrapped,
    start_logging,
    stop_signals,
)
from riverbed.config import Project
from riverbed.config.tables import TransformEngine
from riverbed.errors import RiverbedError, UsageError

INTERRUPTED = (
    "interrupted: the run in flight is marked aborted; `riverbed runs` shows it and "
    "`riverbed run --redrive RUN_ID` resumes it"
)
Stage = Literal["all", "transform", "load"]  # all: the state machine; else that stage only


@app.command(short_help="Run the pipeline once or on a schedule; redrive a failed run.")
def run(
    once: Annotated[
        bool, typer.Option("--once", help="One execution over everything pending (the default).")
    ] = False,
    every: Annotated[
        float | None,
        typer.Option(
            "--every",
            min=0.1,
            metavar="SECONDS",
            help="Run again every SECONDS until Ctrl-C (orchestration.cron/every_seconds in "
            "config schedule without it).",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Run as soon as capture publishes new raw files, until Ctrl-C "
            "(orchestration.follow in config).",
        ),
    ] = False,
    redrive: Annotated[
        str | None,
        typer.Option(
            "--redrive", metavar="RUN_ID", help="Resume failed run RUN_ID at its failed state."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            metavar="ENGINE",
            help="duckdb or spark; default: transform.engine in config.",
        ),
    ] = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", metavar="TABLE", help="Only this table (repeatable)."),
    ] = None,
    reprocess_table: Annotated[
        str | None,
        typer.Option(
            "--reprocess",
            metavar="TABLE",
            help="Rewind fact TABLE's bookmarks (with --from), then run.",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="LSN|TIME", help="With --reprocess: an LSN (0/16B3748) or a UTC time."
        ),
    ] = None,
    stage: Annotated[
        str,
        typer.Option(
            "--stage",
            metavar="STAGE",
            help="all (the state machine), or only transform, or only load.",
        ),
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
    config: ConfigOption = None,
) -> None:
    """One pipeline execution: the state machine check -> transform (quality rules, SQL
    transforms) -> stage -> dimensions -> facts -> publish, with retries, run history and
    alarms; or a schedule of them; or one each time capture publishes new raw files
    (--follow, for freshness in seconds); or the redrive of a failed run.

    Example: `riverbed run --once`, `riverbed run --every 10`, `riverbed run --follow`,
    `riverbed run --redrive RUN_ID`,
    `riverbed run --reprocess orders --from 2026-11-27T10:00Z`
    """
    if engine is not None:
        check_choice("--engine", engine, get_args(TransformEngine))
    check_choice("--stage", stage, get_args(Stage))
    if (reprocess_table is None) != (start is None):
        raise UsageError("--reprocess TABLE and --from TIME|LSN go together")
    if sum([once, every is not None, follow, redrive is not None]) > 1:
        raise UsageError("choose one of --once, --every SECONDS, --follow and --redrive RUN_ID")
    if stage != "all" and (every is not None or follow or redrive is not None):
        raise UsageError(
            "--stage transform|load runs once; it goes without --every/--follow/--redrive"
        )
    if follow and (table or reprocess_table is not None):
        raise UsageError("--follow runs every table; it goes without --table and --reprocess")
    project = open_project(config)
    for name in table or []:  # a typo would otherwise run nothing and say "nothing new"
        project.config.require_table(name, "--table")
    start_logging(project, quiet or as_json)
    rewound: list[dict[str, Any]] = []  # printed with the result, as `reprocessed`
    if reprocess_table is not None and start is not None:
        rewound = _reprocess(project, reprocess_table, start, quiet or as_json)
    if stage != "all":
        run_partial(project, stage, engine, table, as_json, quiet, {"reprocessed": rewound})
        return
    if follow:
        _follow(project, engine, as_json, quiet)
        return
    _orchestrate(project, once, every, redrive, engine, table, as_json, quiet, rewound)


def _reprocess(project: Project, table: str, start: str, quiet: bool) -> list[dict[str, Any]]:
    """Rewind fact ``table``'s bookmarks to ``start``; the staged batches withdrawn."""
    from riverbed.transform.reprocess import reprocess

    withdrawn = reprocess(project, table, start)
    rewound = [
        {
            "batch_id": b.batch_id,
            "rows": b.rows,
            "quarantined": b.rows_quarantined,
            "min_lsn": b.min_lsn,
            "max_lsn": b.max_lsn,
        }
        for b in withdrawn
    ]
    if not quiet:
        rows = sum(b.rows for b in withdrawn)
        console.print(
            f"rewound {table}: {len(rewound)} staged batches ({rows:,} rows) "
            "withdrawn; their raw files are transformed again now, and the load stage "
            "reloads the new batches in their place"
        )
    return rewound


def _orchestrate(
    project: Project,
    once: bool,
    every: float | None,
    redrive: str | None,
    engine: str | None,
    table: list[str] | None,
    as_json: bool,
    quiet: bool,
    rewound: list[dict[str, Any]],
) -> None:
    """The state machine once (a redrive too), or on a schedule until stopped."""
    from riverbed.orchestrate.runner import run_pipeline, run_scheduled
    from riverbed.orchestrate.schedule import EverySchedule

    orchestration = project.config.orchestration
    schedule = (
        EverySchedule(every)
        if every is not None
        else None
        if once or redrive is not None
        else _configured_schedule(orchestration.every_seconds, orchestration.cron)
    )
    # SIGINT and SIGTERM (a supervisor's stop) end a run as `aborted`, redrivable; on a
    # schedule the first one lets the run in flight finish, then stops, and a second aborts it
    with stop_signals(interrupt_after=0 if schedule is None else 1) as stopping:
        try:
            if schedule is None:
                with live_progress(not (quiet or as_json)):
                    report = run_pipeline(project, redrive=redrive, engine=engine, tables=table)
                print_report(report, as_json, quiet, {"reprocessed": rewound})
                if report.status != "succeeded":
                    raise typer.Exit(1)
                return
            trigger = "every" if every is not None or orchestration.cron is None else "cron"
            if not quiet and not as_json:
                console.print(f"running on a schedule ({_describe(schedule)}); Ctrl-C stops")
            run_scheduled(
                project,
                schedule,
                trigger=trigger,
                engine=engine,
                should_stop=lambda: bool(stopping),
                on_report=lambda r: print_report(r, as_json, quiet),
            )
            if not quiet and not as_json:
                console.print("stopped")
        except KeyboardInterrupt:
            err_console.print(INTERRUPTED)
            raise typer.Exit(130) from None


def _follow(project: Project, engine: str | None, as_json: bool, quiet: bool) -> None:
    """A run each time capture publishes new raw files (riverbed.orchestrate.follow), until
    Ctrl-C or SIGTERM: the first lets the run in flight finish, a second aborts it."""
    from riverbed.orchestrate.follow import run_following

    talk = not quiet and not as_json
    with stop_signals(interrupt_after=1) as stopping:
        try:
            if talk:
                console.print(
                    "following capture: a run each time new raw files are published; Ctrl-C stops"
                )
            run_following(
                project,
                engine=engine,
                should_stop=lambda: bool(stopping),
                on_report=lambda r: print_report(r, as_json, quiet),
            )
        except KeyboardInterrupt:
            err_console.print(INTERRUPTED)
            raise typer.Exit(130) from None
    if talk:
        console.print("stopped: no run in flight")


def _configured_schedule(every_seconds: float | None, cron: str | None) -> Any:
    from riverbed.orchestrate.schedule import schedule_for

    try:
        return schedule_for(every_seconds, cron)
    except ValueError as exc:
        raise RiverbedError(f"orchestration.cron / every_seconds: {exc}") from exc


def _describe(schedule: Any) -> str:
    seconds = getattr(schedule, "seconds", None)
    return f"every {seconds:g} s" if seconds is not None else f"cron {schedule.expr}"


# --- what a run prints ---------------------------------------------------------------------


@contextmanager
def live_progress(enabled: bool) -> Iterator[None]:
    """While a run works: the last thing it logged (a state entered, a batch staged, a
    retry), on one line of stderr that rewrites itself. Only on a terminal: elsewhere rich
    draws nothing, and the JSON log keeps every line anyway."""
    if not enabled or not err_console.is_terminal:
        yield
        return
    import logging

    from rich.live import Live
    from rich.spinner import Spinner

    from riverbed.observe.logs import RedactFilter

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
            done = "nothing new"
            if v.get("published"):  # loads of a run killed before it published them
                done = "nothing new to load; published what an earlier run loaded"
            console.print(f"run {report.run_id}: {done} ({report.seconds:.2f} s)")
            return
        say_wrapped(
            f"run {report.run_id} succeeded in {report.seconds:.1f} s: "
            f"{plural(int(v.get('rows_in', 0)), 'change')} transformed, "
            f"{int(v.get('rows_quarantined', 0)):,} quarantined, "
            f"{plural(report.loaded_rows, 'row')} loaded into the warehouse",
            highlight=False,
        )
        return
    err_console.print(
        f"[red]error:[/red] run {report.run_id} failed at {report.failed_state} "
        f"({report.error_class}): {escape(report.error or '')}",
        highlight=False,
    )
    if report.ended_by_fail_state:
        err_console.print(
            f"the machine's Fail state {report.failed_state} ended the run (no task failed, "
            f"so a redrive would end there again); see `riverbed runs show {report.run_id}`",
            highlight=False,
        )
        return
    err_console.print(
        f"see `riverbed runs show {report.run_id}`; after fixing the cause, "
        f"`riverbed run --redrive {report.run_id}` resumes at the failed state",
        highlight=False,
    )


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
            f"{q.rule} {q.failed:,}" for b in t.batches for q in b.quality if q.status != "pass"
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
