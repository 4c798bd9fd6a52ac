"""`riverbed shop seed|run`: the demo shop's history and live traffic. `riverbed demo` seeds
and drives the shop with the same functions (seed_shop, drive_workload, report_workload)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from riverbed.cli.common import (
    ConfigOption,
    console,
    err_console,
    open_project,
    plural,
    say_wrapped,
    shop_app,
    stop_signals,
)
from riverbed.config import Project
from riverbed.errors import RiverbedError, SourceError, UsageError, first_line


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
    seed_shop(open_project(config), spec, reset, quiet)


def seed_shop(project: Project, spec: Any, reset: bool, quiet: bool) -> Any:
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

    def advance(table: str, _rows: int, orders_done: int) -> None:
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
    say_wrapped(f"seeded {summary} in {result.seconds:.1f} s ({rate:,.0f} rows/s)", highlight=False)
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
    stats, stopped, lost = drive_workload(open_project(config), spec, quiet or as_json)
    if as_json:
        print(json.dumps(stats.as_dict()))
    else:
        report_workload(stats, spec, stopped)
    if lost is not None:
        raise lost


def drive_workload(
    project: Project, spec: Any, quiet: bool
) -> tuple[Any, bool, RiverbedError | None]:
    """Run the workload until its duration ends, SIGINT/SIGTERM, or the source goes away.

    Returns (stats, stopped, lost): ``lost`` is the error to end with when the source went away
    (stopped or restarted), raised by the caller once it has reported what was committed.
    """
    import psycopg.errors

    from riverbed.shop.workload import Workload, WorkloadStats
    from riverbed.source.connection import connection_lost, source_for

    # a signal lets the transaction in flight finish, then the workload stops and reports
    with stop_signals() as stopping:
        status = err_console.status("starting ...")
        if not quiet:
            status.start()

        def show(stats: WorkloadStats) -> None:
            status.update(
                f"{plural(stats.total, 'change')} in {plural(stats.transactions, 'transaction')}, "
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
    return stats, bool(stopping), lost


def report_workload(stats: Any, spec: Any, stopped: bool) -> None:
    target = f" (target {spec.rate:,.0f}/s)" if spec.rate else ""
    table = Table(
        "change",
        "rows",
        title=f"{plural(stats.total, 'change')} in {stats.elapsed:.1f} s: "
        f"{stats.rate:,.0f} changes/s{target}",
    )
    for change, rows in sorted(stats.changes.items()):
        table.add_row(change, f"{rows:,}")
    console.print(table)
    say_wrapped(
        f"{plural(stats.transactions, 'transaction')}, largest "
        f"{plural(stats.largest_transaction, 'row')} "
        f"({plural(stats.large_transactions, 'bulk import')}), "
        f"{stats.toast_updates} TOAST-sized descriptions"
    )
    if spec.dirty_ratio:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(stats.dirty.items())) or "none"
        say_wrapped(
            f"dirty rows: {sum(stats.dirty.values()):,} of {stats.eligible:,} checkable "
            f"({stats.dirty_ratio:.1%}): {kinds}"
        )
    if stopped:
        console.print("stopped by signal; every transaction was either committed or rolled back")
