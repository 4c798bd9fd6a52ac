"""The ``riverbed`` command line: the map of the product.

Each command loads the config once, at the edge, and hands typed objects to the package that does
the work. User errors (RiverbedError) become one red line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from riverbed.config import Project, demo_config_text, load_project
from riverbed.errors import RiverbedError, SourceError, UsageError, first_line

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="riverbed.yaml to use (default: ./riverbed.yaml, else the demo defaults).",
    ),
]

app = typer.Typer(
    help="Riverbed: PostgreSQL changes into a governed, analytics-ready warehouse.\n\n"
    "Start with `riverbed demo`, or step by step: `riverbed source up`, `riverbed shop seed`, "
    "`riverbed shop run`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no Python types (<bool>), wrapped, never cut
)
source_app = typer.Typer(
    help="Manage the embedded source PostgreSQL.",
    epilog="Example: `riverbed source up`, then `riverbed source status`",
    no_args_is_help=True,
)
shop_app = typer.Typer(
    help="The demo shop: schema, history and live traffic.",
    epilog="Example: `riverbed shop seed --orders 10000`, `riverbed shop run --rate 500`",
    no_args_is_help=True,
)
app.add_typer(source_app, name="source")
app.add_typer(shop_app, name="shop")

F = TypeVar("F", bound=Callable[..., Any])


def _project(config: Path | None) -> Project:
    return load_project(config)


def main() -> None:
    """Console entry point: user errors become red lines and an exit code, never a traceback.

    Typer's standalone mode handles usage errors (exit 2) and --help; everything of ours that a
    user can act on is a RiverbedError.
    """
    try:
        app()
    except RiverbedError as exc:
        for line in str(exc).splitlines():
            err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        sys.exit(exc.exit_code)
    finally:
        # The command is done: spare the interpreter's last garbage collection over every
        # object the imports made (sqlglot, pydantic, pyarrow), a quarter of a second that
        # every command paid on its way out. Only cycles go uncollected, and Python never
        # promised to finalise those at exit; everything a command writes it closes itself.
        gc.freeze()


# --- init ---------------------------------------------------------------------------------


@app.command(short_help="Write a commented riverbed.yaml for the demo shop.")
def init(
    # described in the docstring: typer would list it with its Python type (<path>)
    directory: Annotated[Path, typer.Argument(metavar="DIRECTORY", hidden=True)] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing riverbed.yaml.")
    ] = False,
) -> None:
    """Write a commented riverbed.yaml for the demo shop into DIRECTORY (default: here).

    Example: `riverbed init my-pipeline`
    """
    if directory.exists() and not directory.is_dir():
        raise RiverbedError(
            f"{directory} is a file, not a folder; give `riverbed init` a folder to write "
            "riverbed.yaml into"
        )
    target = directory / "riverbed.yaml"
    if target.exists() and not force:
        raise RiverbedError(f"{target} already exists; edit it, or pass --force to overwrite it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(demo_config_text())
    except OSError as exc:
        raise RiverbedError(
            f"cannot write {target} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
    console.print(f"wrote {target}; check it with `riverbed source status -c {target}`")


# --- source -------------------------------------------------------------------------------


@source_app.command("up", short_help="Start the embedded PostgreSQL and print its DSN.")
def source_up(config: ConfigOption = None) -> None:
    """Start the embedded PostgreSQL (initialising it on first use) and print its DSN.

    Example: `riverbed source up`
    """
    from riverbed.source.connection import inspect, source_for

    source = source_for(_project(config))
    if source.embedded is None:
        status = inspect(source)
        console.print(
            f"source.dsn is set: {status.dsn} is not managed by Riverbed (nothing to start)"
        )
        _warn_wal_level(status.wal_level)
        return
    with console.status("starting PostgreSQL ..."):
        done = source.embedded.up()
    status = inspect(source)
    console.print(f"PostgreSQL {status.version} {', '.join(done)}: {status.dsn}")
    _warn_wal_level(status.wal_level)


def _warn_wal_level(wal_level: str) -> None:
    if wal_level != "logical":
        err_console.print(
            f"[yellow]warning:[/yellow] wal_level is {wal_level}; capture needs wal_level=logical "
            "(set it on the server and restart it)"
        )


@source_app.command("down")
def source_down(config: ConfigOption = None) -> None:
    """Stop the embedded PostgreSQL (fine when it is already stopped).

    Example: `riverbed source down`
    """
    from riverbed.source.connection import source_for

    source = source_for(_project(config))
    if source.embedded is None:
        console.print("source.dsn is set: that server is not managed by Riverbed (nothing to stop)")
        return
    stopped = source.embedded.down()
    console.print("stopped" if stopped else "already stopped")


@source_app.command(
    "status", short_help="The source DSN, version, wal_level and replication slots."
)
def source_status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the source DSN, version, wal_level and replication slots with retained WAL.

    Example: `riverbed source status --json`
    """
    from riverbed.source.connection import inspect, source_for

    source = source_for(_project(config))
    if source.embedded is not None and not (
        source.embedded.is_initialised() and source.embedded.is_running()
    ):
        if as_json:
            print(json.dumps({"dsn": source.display, "running": False}))
        else:
            console.print(f"stopped: {source.display} (start it with `riverbed source up`)")
        raise typer.Exit(3)
    status = inspect(source)
    if as_json:
        payload = {
            "dsn": status.dsn,
            "running": True,
            "version": status.version,
            "wal_level": status.wal_level,
            "slots": [vars(slot) for slot in status.slots],
        }
        print(json.dumps(payload))
        return
    console.print(f"dsn        {status.dsn}")
    console.print(f"version    {status.version}")
    console.print(f"wal_level  {status.wal_level}")
    if not status.slots:
        console.print("slots      none")
        return
    table = Table("slot", "plugin", "active", "retained WAL")
    for slot in status.slots:
        retained = "-" if slot.retained_wal_bytes is None else _bytes(slot.retained_wal_bytes)
        table.add_row(slot.name, slot.plugin or "-", "yes" if slot.active else "no", retained)
    console.print(table)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --- shop ---------------------------------------------------------------------------------


@shop_app.command("seed", short_help="Create schema `shop` with months of realistic history.")
def shop_seed(
    customers: Annotated[
        int, typer.Option(min=1, metavar="N", help="Customers to create.")
    ] = 5_000,
    sellers: Annotated[int, typer.Option(min=1, metavar="N", help="Sellers to create.")] = 300,
    products: Annotated[int, typer.Option(min=1, metavar="N", help="Products to create.")] = 2_000,
    orders: Annotated[
        int,
        typer.Option(
            min=0, metavar="N", help="Orders over the whole history (items and returns follow)."
        ),
    ] = 100_000,
    months: Annotated[
        int, typer.Option(min=1, max=120, metavar="N", help="Months of history, ending today.")
    ] = 12,
    seed: Annotated[
        int,
        typer.Option(
            metavar="N", help="Random seed: the same seed and end date give identical tables."
        ),
    ] = 42,
    end_date: Annotated[
        str | None,
        typer.Option(
            metavar="YYYY-MM-DD",
            help="Day the history ends (YYYY-MM-DD, exclusive); default today (UTC).",
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop an existing shop schema first.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create schema `shop` and write months of realistic history through COPY.

    Example: `riverbed shop seed --orders 1000000 --seed 7`
    """
    from datetime import date

    from riverbed.shop.history import HistorySpec

    try:
        end = date.fromisoformat(end_date) if end_date else None
    except ValueError:
        raise UsageError(f"--end-date {end_date!r} is not a date; use YYYY-MM-DD") from None
    spec = HistorySpec(customers, sellers, products, orders, months, seed, end)
    _seed(_project(config), spec, reset, quiet)


def _seed(project: Project, spec: Any, reset: bool, quiet: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from riverbed.shop.seed import seed as run_seed
    from riverbed.source.connection import source_for

    progress = Progress(
        TextColumn("seeding {task.fields[stage]:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("orders"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    )
    task = progress.add_task("seed", total=spec.orders, stage="dimensions")

    def advance(table: str, rows: int, orders_done: int) -> None:
        progress.start()  # shown once seeding has really begun, not before the seeded check
        progress.update(task, completed=orders_done, stage=table)

    # autocommit, so that seed() opens the one real transaction the whole load runs in
    with source_for(project).connect(autocommit=True) as conn:
        try:
            result = run_seed(
                conn,
                spec,
                reset=reset,
                schema_name=project.config.source.schema_name,
                on_progress=advance,
            )
        finally:
            progress.stop()
    rate = result.total_rows / result.seconds if result.seconds else 0.0
    summary = ", ".join(f"{n:,} {t}" for t, n in result.rows.items())
    console.print(f"seeded {summary} in {result.seconds:.1f} s ({rate:,.0f} rows/s)")
    return result


@shop_app.command(
    "run", short_help="Drive live OLTP traffic on the shop: orders, returns, deletes."
)
def shop_run(
    rate: Annotated[
        float,
        typer.Option(
            min=0, metavar="N", help="Target changes (rows) per second; 0 = as fast as possible."
        ),
    ] = 1000.0,
    duration: Annotated[
        float, typer.Option(min=0, metavar="SECONDS", help="Seconds to run; 0 = until Ctrl-C.")
    ] = 60.0,
    dirty_ratio: Annotated[
        float,
        typer.Option(
            min=0, max=1, metavar="RATIO", help="Share of checkable rows written dirty (0-1)."
        ),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Random seed for the sequence of actions.")
    ] = 1,
    large_every: Annotated[
        float,
        typer.Option(
            min=1, metavar="SECONDS", help="Seconds between bulk imports of 10,000+ rows."
        ),
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Drive live OLTP traffic on the shop: orders, status changes, repricing, returns, deletes.

    Example: `riverbed shop run --rate 5000 --duration 60 --dirty-ratio 0.02`
    """
    from riverbed.shop.workload import WorkloadSpec

    spec = WorkloadSpec(rate, duration or None, dirty_ratio, seed, large_every)
    stats, stopped, lost = _drive(_project(config), spec, quiet or as_json)
    if as_json:
        print(json.dumps(stats.as_dict()))
    else:
        _report_workload(stats, spec, stopped)
    if lost is not None:
        raise lost


def _drive(project: Project, spec: Any, quiet: bool) -> tuple[Any, bool, RiverbedError | None]:
    """Run the workload until its duration ends, SIGINT/SIGTERM, or the source goes away.

    Returns (stats, stopped, lost): ``lost`` is the error to end with when the source went away
    (stopped or restarted), raised by the caller once it has reported what was committed.
    """
    import signal

    import psycopg.errors

    from riverbed.shop.workload import Workload, WorkloadStats
    from riverbed.source.connection import connection_lost, source_for

    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)  # finish the transaction in flight, then report

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = err_console.status("starting ...")
    if not quiet:
        status.start()

    def show(stats: WorkloadStats) -> None:
        status.update(
            f"{stats.total:,} changes in {stats.transactions:,} transactions, "
            f"{stats.rate:,.0f}/s (Ctrl-C stops)"
        )

    source = source_for(project)
    stats = WorkloadStats()
    lost: RiverbedError | None = None
    try:
        # not `with conn`: on leaving it psycopg commits, which fails again on a lost connection
        conn = source.connect(autocommit=True)
        try:
            try:
                workload = Workload(conn, spec, project.config.source.schema_name)
            except ValueError as exc:
                raise RiverbedError(str(exc)) from None
            except psycopg.errors.UndefinedTable:
                raise RiverbedError(
                    "the shop schema does not exist; run `riverbed shop seed` first"
                ) from None
            stats = workload.stats
            try:
                workload.run(lambda: bool(stopping), show)
            except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as exc:
                # the workload writes the demo shop's own tables and columns
                raise RiverbedError(
                    f"the shop schema is not the demo's any more ({first_line(exc)}); "
                    "`riverbed shop seed --reset` makes it again"
                ) from None
        except psycopg.Error as exc:
            if not connection_lost(exc):
                raise
            # the source stopped or restarted: the stats count the transactions whose commit
            # the server acknowledged, the report of what was done before it went
            lost = SourceError(
                f"the source went away: lost the connection to {source.display} "
                f"({first_line(exc)}); the report counts what was committed before"
            )
            lost.__cause__ = exc
        finally:
            conn.close()
    finally:
        status.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stats, bool(stopping), lost


def _report_workload(stats: Any, spec: Any, stopped: bool) -> None:
    target = f" (target {spec.rate:,.0f}/s)" if spec.rate else ""
    table = Table(
        "change",
        "rows",
        title=f"{stats.total:,} changes in {stats.elapsed:.1f} s: "
        f"{stats.rate:,.0f} changes/s{target}",
    )
    for change, rows in sorted(stats.changes.items()):
        table.add_row(change, f"{rows:,}")
    console.print(table)
    console.print(
        f"{stats.transactions:,} transactions, largest {stats.largest_transaction:,} rows "
        f"({stats.large_transactions} bulk imports), {stats.toast_updates} TOAST-sized descriptions"
    )
    if spec.dirty_ratio:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(stats.dirty.items())) or "none"
        console.print(
            f"dirty rows: {sum(stats.dirty.values()):,} of {stats.eligible:,} checkable "
            f"({stats.dirty_ratio:.1%}): {kinds}"
        )
    if stopped:
        console.print("stopped by signal; every transaction was either committed or rolled back")


# --- capture ------------------------------------------------------------------------------

RECONNECT_MAX_SECONDS = 30.0


def _capture_reconnecting(
    project: Project,
    follow: bool,
    resnapshot: bool,
    stopping: list[int],
    say: Callable[[str], None],
    force: bool = False,
) -> Any:
    """run_capture; with --follow, a transient failure (the source restarting, a dropped
    connection) is retried with backoff until stopped, resuming exactly from the lake's
    committed position. A capture that never got going (no position yet: a wrong DSN, a
    missing schema) fails at once instead of retrying for ever."""
    import logging
    import time

    from riverbed.capture.runner import CaptureResult, run_capture
    from riverbed.lake.manifest import open_manifest

    log = logging.getLogger("riverbed.capture")
    failures = 0
    while True:
        started = time.monotonic()
        try:
            return run_capture(
                project,
                follow=follow,
                should_stop=lambda: bool(stopping),
                say=say,
                resnapshot=resnapshot and failures == 0,
                force=force,
            )
        except RiverbedError as exc:
            if not follow or not exc.transient or stopping:
                raise
            manifest = open_manifest(project)
            try:
                slot = manifest.capture_names(project.config.source)[0]
                if slot is None or manifest.position(slot) is None:
                    raise
            finally:
                manifest.close()
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            delay = min(RECONNECT_MAX_SECONDS, 2.0 ** (failures - 1))
            # once: the console shows warnings, and the log file keeps them
            log.warning(
                "capture interrupted: %s; reconnecting in %.0f s (Ctrl-C stops)", exc, delay
            )
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not stopping:
                time.sleep(0.2)
            if stopping:
                return CaptureResult()  # stopped while waiting: everything captured is kept


@app.command(short_help="Snapshot, then stream, the source's changes into the lake.")
def capture(
    once: Annotated[
        bool, typer.Option("--once", help="Capture everything committed up to now, then exit.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Stream until Ctrl-C / SIGTERM.")
    ] = False,
    resnapshot: Annotated[
        bool,
        typer.Option("--resnapshot", help="Drop the slot and the captured files; snapshot again."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --resnapshot: drop the slot even if this project's lake does not know it "
            "(another project's or tool's).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
    config: ConfigOption = None,
) -> None:
    """Snapshot + change data capture from the source into the lake (Parquet), exactly once.

    Example: `riverbed capture --once` or `riverbed capture --follow`
    """
    import signal
    import threading

    from riverbed.capture.pgoutput import format_lsn

    if once == follow:
        raise UsageError(
            "choose one of --once (drain up to now, then exit) or --follow (stream until stopped)"
        )
    if force and not resnapshot:
        raise RiverbedError("--force only goes with --resnapshot (it lets it drop a foreign slot)")
    project = _project(config)
    stopping: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _f: stopping.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def say(line: str) -> None:
        if not quiet and not as_json:
            err_console.print(line, highlight=False)

    # a follower outlives runs: it evaluates the alarms meanwhile, as `serve` does, so one on
    # the time since the last success fires when the scheduler has died
    watching = threading.Event()
    if follow:
        from riverbed.orchestrate.runner import watch_alarms

        watch_alarms(project, watching)
    try:
        result = _capture_reconnecting(project, follow, resnapshot, stopping, say, force)
    finally:
        watching.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = result.stream
    payload = {
        "snapshot_rows": result.snapshot_rows,
        "snapshot_seconds": round(result.snapshot_seconds, 3),
        "resumed_from": format_lsn(result.resumed_from)
        if result.resumed_from is not None
        else None,
        "transactions": stats.transactions if stats else 0,
        "rows": stats.rows if stats else 0,
        "files": stats.files if stats else 0,
        "bytes": stats.bytes if stats else 0,
        "rows_by_table": stats.rows_by_table if stats else {},
        "position": format_lsn(stats.position) if stats else None,
        "skipped_transactions": stats.skipped_transactions if stats else 0,
        "orphans_removed": result.orphans_removed,
    }
    if as_json:
        print(json.dumps(payload))
        return
    if not quiet:
        if result.snapshot_rows:
            console.print(
                "snapshot: " + ", ".join(f"{n:,} {t}" for t, n in result.snapshot_rows.items())
            )
        console.print(
            f"streamed {payload['rows']:,} changes in {payload['transactions']:,} transactions "
            f"into {payload['files']:,} files; lake is complete up to {payload['position']}"
        )


# --- status -------------------------------------------------------------------------------


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
    alarms; or a schedule of them; or the redrive of a failed run.

    Example: `riverbed run --once`, `riverbed run --every 10`, `riverbed run --redrive RUN_ID`,
    `riverbed run --reprocess orders --from 2026-11-27T10:00Z`
    """
    import signal

    from riverbed.cli_runs import live_progress, print_report, run_partial

    if engine is not None and engine not in ("duckdb", "spark"):
        raise UsageError(f"--engine {engine}: choose duckdb or spark")
    if stage not in ("all", "transform", "load"):
        raise UsageError(f"--stage {stage}: choose all, transform or load")
    if (reprocess_table is None) != (start is None):
        raise UsageError("--reprocess TABLE and --from TIME|LSN go together")
    if sum([once, every is not None, redrive is not None]) > 1:
        raise UsageError("choose one of --once, --every SECONDS and --redrive RUN_ID")
    if stage != "all" and (every is not None or redrive is not None):
        raise UsageError("--stage transform|load runs once; it goes without --every/--redrive")
    project = _project(config)
    for name in table or []:  # a typo would otherwise run nothing and say "nothing new"
        project.config.require_table(name, "--table")
    _logging(project, quiet or as_json)
    rewound: list[dict[str, Any]] = []  # printed with the result, as `reprocessed`
    if reprocess_table is not None and start is not None:
        from riverbed.transform.runner import reprocess

        rewound = reprocess(project, reprocess_table, start)
        if not quiet and not as_json:
            rows = sum(b["rows"] for b in rewound)
            console.print(
                f"rewound {reprocess_table}: {len(rewound)} staged batches ({rows:,} rows) "
                "withdrawn; their raw files are transformed again now, and the load stage "
                "reloads the new batches in their place"
            )
    if stage != "all":
        run_partial(project, stage, engine, table, as_json, quiet, {"reprocessed": rewound})
        return
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
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if schedule is None or stopping:
            raise KeyboardInterrupt
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
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
        err_console.print(
            "interrupted: the run in flight is marked aborted; `riverbed runs` shows it and "
            "`riverbed run --redrive RUN_ID` resumes it"
        )
        raise typer.Exit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configured_schedule(every_seconds: float | None, cron: str | None) -> Any:
    from riverbed.orchestrate.schedule import schedule_for

    try:
        return schedule_for(every_seconds, cron)
    except ValueError as exc:
        raise RiverbedError(f"orchestration.cron / every_seconds: {exc}") from exc


def _describe(schedule: Any) -> str:
    seconds = getattr(schedule, "seconds", None)
    return f"every {seconds:g} s" if seconds is not None else f"cron {schedule.expr}"


def _logging(project: Project, quiet: bool) -> None:
    """JSON lines under .riverbed/logs/; the console shows warnings (the CLI prints the
    progress itself), nothing but errors when --quiet/--json."""
    import contextlib

    from riverbed.config.models import secret_refs
    from riverbed.observe.logs import redact, setup_logging

    setup_logging(project.home / "logs", console_level="ERROR" if quiet else "WARNING")
    for ref in secret_refs(project.config):  # whatever a library logs, these never show
        with contextlib.suppress(ValueError):  # not set: the command that needs it says so
            redact(ref.reveal())


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
        bool, typer.Option("--json", help="Print JSON for scripts: every run, with its idle flag.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run history: the latest runs, or with `show RUN_ID` one run's timeline state by state.
    RUN_ID is a run's id, or the id's hex tail (the short id the list shows).

    Example: `riverbed runs`, `riverbed runs show 1a2b3c`
    """
    from riverbed.cli_runs import print_runs, print_timeline

    if action not in (None, "show"):
        raise UsageError(f"riverbed runs {action}: did you mean `riverbed runs show RUN_ID`?")
    if action == "show" and run_id is None:
        raise UsageError("riverbed runs show needs a RUN_ID (see `riverbed runs`)")
    project = _project(config)
    if run_id is None:
        print_runs(project, limit, as_json, show_idle)
    else:
        print_timeline(project, run_id, as_json)


@app.command(short_help="Print the warehouse DDL the config implies.")
def ddl(
    dialect: Annotated[
        str | None,
        typer.Option(
            "--dialect",
            metavar="DIALECT",
            help="duckdb, postgres or redshift (default: the warehouse's).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Print the warehouse DDL the config implies (Redshift: DISTKEY, SORTKEY, ENCODE ZSTD).

    Example: `riverbed ddl --dialect redshift`
    """
    from riverbed.lake.manifest import open_manifest
    from riverbed.lake.storage import open_storage
    from riverbed.load.ddl import warehouse_ddl

    project = _project(config)
    manifest = open_manifest(project)
    try:
        statements = warehouse_ddl(
            project,
            open_storage(project.config.lake, project.root),
            manifest,
            dialect or project.config.warehouse.engine,
        )
    finally:
        manifest.close()
    print(";\n\n".join(statements) + ";")


@app.command(short_help="Run read-only SQL on the warehouse, as a principal.")
def query(
    sql: Annotated[str, typer.Argument(metavar="SQL", hidden=True)],
    principal: Annotated[
        str,
        typer.Option(
            "--as", metavar="PRINCIPAL", help="Who is asking (governance decides what they see)."
        ),
    ] = ...,  # type: ignore[assignment]
    output: Annotated[
        str, typer.Option("--format", metavar="table|csv|json", help="The output format.")
    ] = "table",
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="At most this many rows (a table shows 50 unless given)."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            metavar="SECONDS",
            help="Seconds before the query is stopped (default: timeout_seconds in "
            "warehouse.query, 300).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run SQL, one read-only statement, on the warehouse; rows print as they come.

    Example: `riverbed query --as admin "select count(*) from dim_customer where is_current_record"`
    """
    from riverbed.cli_query import run_query

    if output not in ("table", "csv", "json"):
        raise UsageError(f"--format {output}: choose table, csv or json")
    project = _project(config)
    principals = project.config.governance.principals
    if principal != "admin" or (principals and principal not in principals):
        raise UsageError(
            f"--as {principal}: only the admin principal can query for now "
            "(roles, row filters and masks arrive with governance)"
        )
    if timeout is None:
        timeout, key = (
            project.config.warehouse.query.timeout_seconds,
            "warehouse.query.timeout_seconds",
        )
    else:
        key = "--timeout"
    run_query(project, sql, output, limit, timeout, key)


@app.command(short_help="Capture lag, the lake, quality results, runs and alarms.")
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Capture lag, the lake's tables, quality results and unreadable files, at a glance.

    Example: `riverbed status`
    """
    from riverbed.observe.status import gather

    report = gather(_project(config))
    if as_json:
        print(json.dumps(report))
        return
    cap = report["capture"]
    _labelled("source", escape(f"{report['source']['dsn']} ({report['source']['state']})"))
    if cap["slot"] is None:
        _labelled("capture", "not started (run `riverbed capture --once`)")
    else:
        lag = cap["lag_bytes"]
        _labelled(
            "capture",
            f"slot {cap['slot']} at {cap['position']}, lag "
            f"{_lag_unknown(report) if lag is None else _bytes(lag)}"
            + (f" / {cap['lag_seconds']:.1f} s" if cap["lag_seconds"] is not None else "")
            + f", {cap['files']:,} raw files, {cap['rows']:,} rows",
        )
    if report["lake"]:
        table = Table("table", "raw files", "rows", "schema", "last landed")
        for name, info in report["lake"].items():
            table.add_row(
                name,
                f"{info['files']:,}",
                f"{info['rows']:,}",
                str(info["schema_version"]),
                info["landed_at"] or "-",
            )
        console.print(table)
    if report["quality"]:
        # the rules that did not pass go below the table, one line each: in a cell they
        # wrapped to a column a few characters wide
        quality = Table("table", "last batch", "rows in", "staged", "quarantined", "rules")
        flagged: list[str] = []
        for batch in report["quality"]:
            failing = [r for r in batch["rules"] if r["status"] != "pass"]
            flagged += [
                f"{batch['table']} {r['rule']}: {r['status']} {r['failed']:,} of "
                f"{r['checked']:,} rows"
                for r in failing
            ]
            quality.add_row(
                batch["table"],
                batch["status"],
                f"{batch['rows_in']:,}",
                f"{batch['rows_out']:,}",
                f"{batch['rows_quarantined']:,}",
                f"{len(failing)} of {len(batch['rules'])} flagged"
                if failing
                else f"all {len(batch['rules'])} pass"
                if batch["rules"]
                else "none",
            )
        console.print(quality)
        for line in flagged:
            _labelled("flagged", escape(line))
    for bad in report["bad_files"]:
        console.print(
            f"[yellow]unreadable raw file {bad['path']} set aside as {bad['moved_to']}: "
            f"{escape(bad['reason'])}[/yellow]"
        )
    if report["runs"]:
        last = report["runs"][0]
        ok = next((r for r in report["runs"] if r["status"] == "succeeded"), None)
        _labelled(
            "runs",
            f"last {last['run_id']} {last['status']}"
            + (f" at {last['failed_state']}" if last["failed_state"] else "")
            + (f"; last success {ok['run_id']}" if ok and ok is not last else "")
            + " (`riverbed runs` for more)",
        )
        hour = report["last_hour"]
        _labelled(
            "last hour",
            f"{int(hour['runs_succeeded'])} runs succeeded, "
            f"{int(hour['runs_failed'])} failed (slowest {hour['slowest_run_seconds']:.1f} s); "
            f"{int(hour['transform_rows_in']):,} rows transformed, "
            f"{int(hour['transform_rows_quarantined']):,} quarantined, "
            f"{int(hour['load_rows']):,} loaded",
        )
    else:
        _labelled("runs", "none yet (`riverbed run --once`)")
    for alarm in report["alarms"]:
        color = {"OK": "green", "ALARM": "red"}.get(alarm["state"], "yellow")
        _labelled(
            "alarm",
            f"{escape(alarm['alarm'])}: [{color}]{alarm['state']}[/{color}] "
            f"{escape(alarm['reason'])}",
        )


def _lag_unknown(report: dict[str, Any]) -> str:
    unreachable = report["source"]["state"] == "unreachable"
    return "unknown (source unreachable)" if unreachable else "-"


def _labelled(label: str, markup: str) -> None:
    """``label`` in a column of its own and ``markup`` beside it, wrapped to the console's
    width under itself (a pipe gets 80 columns): nothing cut, no line too wide."""
    indent = 11
    text = Text.from_markup(markup)
    for i, line in enumerate(text.wrap(console, max(console.width - indent, 30), overflow="fold")):
        line.rstrip()
        console.print(Text(f"{label if i == 0 else '':<{indent}}") + line, highlight=False)


@app.command(short_help="Serve /metrics for Prometheus; evaluate alarms between runs.")
def serve(
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, metavar="PORT", help="Port (0: any free one).")
    ] = 9108,
    config: ConfigOption = None,
) -> None:
    """Serve the pipeline's metrics in Prometheus text format at /metrics until Ctrl-C
    (dashboards and the JSON API join them here later), and evaluate the alarms between runs,
    so that one on time since the last success fires even when nothing runs.

    Example: `riverbed serve --port 9108`, then `curl localhost:9108/metrics`
    """
    import threading
    import time

    from riverbed.observe.prometheus import serve_metrics
    from riverbed.orchestrate.runner import measure_between_runs, watch_alarms

    project = _project(config)
    _logging(project, quiet=False)
    try:
        server = serve_metrics(
            project.path(project.config.state.path),
            host,
            port,
            refresh=lambda: measure_between_runs(project),
        )
    except OSError as exc:
        raise RiverbedError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port"
        ) from exc
    bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
    console.print(f"metrics at http://{bound_host}:{bound_port}/metrics (Ctrl-C stops)")
    stop = threading.Event()
    watch_alarms(project, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.shutdown()


# --- demo ---------------------------------------------------------------------------------


@app.command(short_help="Everything end to end on the embedded defaults, explained.")
def demo(
    duration: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Seconds of live traffic.")
    ] = 20.0,
    rate: Annotated[
        float, typer.Option(min=0, metavar="N", help="Changes per second of live traffic.")
    ] = 2000.0,
    dirty_ratio: Annotated[
        float,
        typer.Option(min=0, max=1, metavar="RATIO", help="Share of checkable rows written dirty."),
    ] = 0.02,
    every: Annotated[
        float,
        typer.Option(
            min=1, metavar="SECONDS", help="Seconds between pipeline runs during the traffic."
        ),
    ] = 5.0,
    config: ConfigOption = None,
) -> None:
    """Everything end to end on the embedded defaults: source, history, capture (snapshot,
    then following the WAL), live traffic with dirty rows, pipeline runs on a schedule
    (quality rules, SCD2 dimensions, facts), and a summary: what was captured, quality,
    dimension versions, fact totals, lag, alarms, and where to look next.

    Safe to run twice: an existing shop is kept and gets more traffic.

    Example: `riverbed demo --duration 30`
    """
    from riverbed.cli_demo import run_demo

    project = _project(config)
    _logging(project, quiet=False)
    run_demo(project, duration=duration, rate=rate, dirty_ratio=dirty_ratio, every=every)
