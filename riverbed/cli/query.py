"""`riverbed query`, and what it does between the warehouse and the terminal: rows printed as they
stream in (CSV, a JSON array, or a table of the first screenful), a timeout, and Ctrl-C.

The query runs in the main thread. A watchdog thread keeps the clock and hears Ctrl-C through
the signal wakeup fd; either way it stops the query with Warehouse.interrupt, and the query's
QueryStopped becomes one line here.

pyarrow and the warehouse load when a query runs, not with every command of the command line.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import typer
from rich.table import Table
from rich.text import Text

from riverbed.cli.common import (
    ConfigOption,
    app,
    check_choice,
    console,
    err_console,
    open_project,
    say_wrapped,
)
from riverbed.config import Project
from riverbed.errors import RiverbedError, UsageError
from riverbed.serve.values import batch_columns, cell_text, write_csv, write_json

if TYPE_CHECKING:
    import pyarrow as pa

    from riverbed.load.warehouse import Warehouse

OutputFormat = Literal["table", "csv", "json"]  # query --format
TABLE_ROWS = 50  # rows a table shows unless --limit says otherwise: about a screenful
_POLL_SECONDS = 0.1  # how often the watchdog looks at the clock


class QueryInterrupted(RiverbedError):
    """Ctrl-C stopped the query."""

    exit_code = 130


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
    check_choice("--format", output, get_args(OutputFormat))
    project = open_project(config)
    from riverbed.govern.policy import GovernError, Policy

    try:
        Policy.from_config(project.config).principal(principal)
    except GovernError as exc:
        raise UsageError(f"--as {principal}: {exc}") from None
    if timeout is None:
        timeout, key = (
            project.config.warehouse.query.timeout_seconds,
            "warehouse.query.timeout_seconds",
        )
    else:
        key = "--timeout"
    run_query(project, principal, sql, output, limit, timeout, key)


def run_query(
    project: Project,
    principal: str,
    sql: str,
    output: str,
    limit: int | None,
    timeout: float,
    timeout_key: str,
) -> None:
    """Run ``sql`` as ``principal``, through the governance gateway, read-only on the
    project's warehouse and print its rows in ``output`` format (table, csv or json) as they come: at most ``limit`` rows (a table: TABLE_ROWS
    unless given), stopped after ``timeout`` seconds (``timeout_key`` names where that limit
    was set, for the message)."""
    from riverbed.load.warehouse import QueryStopped, open_warehouse
    from riverbed.serve.queries import governed_rows

    shown = limit if limit is not None else (TABLE_ROWS if output == "table" else None)
    with Watchdog(timeout) as watch, ExitStack() as stack:
        try:
            warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
            stack.callback(warehouse.close)
            watch.warehouse = warehouse
            watch.check()
            rows = stack.enter_context(governed_rows(project, warehouse, principal, sql))
            # a table reads one row more than it shows, to know whether there are more
            wanted = shown + 1 if output == "table" and shown is not None else shown
            batches = watch.fetching(rows.batches, wanted)
            if output == "csv":
                write_csv(rows.names, batches, sys.stdout)
            elif output == "json":
                write_json(rows.names, batches, sys.stdout)
            else:
                print_table(rows.names, batches, shown)
            sys.stdout.flush()
            watch.check()
        except QueryStopped as exc:
            if watch.reason is None:  # stopped by someone else, e.g. the server's own timeout
                raise
            raise watch.stopped(timeout_key) from exc
        except BrokenPipeError:
            # the reader went away (`| head`): what it read is all it wanted; the query stops
            # and stdout, whose buffer can no longer be flushed, goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Watchdog:
    """Stops the query once ``timeout`` seconds passed since the block began, or on Ctrl-C."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.warehouse: Warehouse | None = None
        self.reason: str | None = None  # "timeout" or "interrupt", once stopped
        self._started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="query-watchdog", daemon=True)
        self._wakeup, self._wakeup_end = os.pipe()
        os.set_blocking(self._wakeup_end, False)
        self._previous: Any = None
        self._previous_fd = -1

    def __enter__(self) -> Watchdog:
        # Python runs a signal's handler in the main thread between two bytecodes, which a
        # main thread inside the driver's C call never reaches before the query ends. Its C
        # handler, run in whichever thread the signal hit, also writes the signal's number to
        # the wakeup fd, which the watchdog reads; the Python handler is left nothing to do.
        self._previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
        self._previous_fd = signal.set_wakeup_fd(self._wakeup_end, warn_on_full_buffer=False)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGINT, self._previous)
        os.close(self._wakeup)
        os.close(self._wakeup_end)

    def fetching(
        self, batches: Iterator[pa.RecordBatch], limit: int | None
    ) -> Iterator[pa.RecordBatch]:
        """``batches`` up to ``limit`` rows, stopping at the first fetch after a stop."""
        left = limit
        while left is None or left > 0:
            batch = next(batches, None)
            self.check()
            if batch is None:
                return
            if left is not None:
                batch = batch.slice(0, left)
                left -= batch.num_rows
            yield batch

    def check(self) -> None:
        """Raise QueryStopped when the watchdog stopped the query between two fetches."""
        from riverbed.load.warehouse import QueryStopped

        if self.reason is not None:
            raise QueryStopped(self.reason)

    def stopped(self, timeout_key: str) -> RiverbedError:
        """The one-line error for a query the watchdog stopped."""
        if self.reason == "timeout":
            return RiverbedError(
                f"query stopped after {self.timeout:g} s ({timeout_key}); "
                "raise it with --timeout SECONDS, or narrow the query"
            )
        return QueryInterrupted("interrupted: the query is stopped, nothing it did is kept")

    def _watch(self) -> None:
        asked = 0.0  # when the warehouse was last asked to stop
        while not self._done.is_set():
            ready, _, _ = select.select([self._wakeup], [], [], _POLL_SECONDS)
            signals = os.read(self._wakeup, 64) if ready else b""
            if signal.SIGINT in signals:
                if self.reason == "interrupt":  # a second Ctrl-C: the query did not stop
                    err_console.print("interrupted", highlight=False)
                    os._exit(130)
                self.reason = "interrupt"
            elif self.reason is None and time.monotonic() - self._started > self.timeout:
                self.reason = "timeout"
            # again each second until the query ends: a stop asked for as the statement
            # began may have found nothing running to stop
            now = time.monotonic()
            if self.reason and self.warehouse is not None and now - asked >= 1.0:
                asked = now
                with suppress(Exception):  # a cancel request that failed: the next one
                    self.warehouse.interrupt()


# --- output -----------------------------------------------------------------------------------


def print_table(names: list[str], batches: Iterator[pa.RecordBatch], shown: int | None) -> None:
    """The first ``shown`` rows as a table (``batches`` holds one more when there are more),
    then how many rows, or how to get the rest."""
    rows: list[tuple[Any, ...]] = []
    for batch in batches:
        rows.extend(zip(*batch_columns(batch)))
    more = shown is not None and len(rows) > shown
    table = Table(*names)
    cells = [[cell_text(v) or "" for v in row] for row in rows[:shown]]
    for row in cells:
        # Text, not a markup string: values print as they are (":x:" is no emoji here)
        table.add_row(*map(Text, row))
    console.print(table)
    # too many or too wide columns for the terminal: rich cuts values ("1…"), so say so
    if not any("…" in c for c in [*names, *(c for row in cells for c in row)]) and any(
        "…" in segment.text for segment in console.render(table)
    ):
        console.print(
            f"values cut (…) to fit {console.width} columns; select fewer columns, or use "
            "--format csv",
            highlight=False,
        )
    if more:
        say_wrapped(
            f"showing the first {shown:,} rows; there are more: --limit N shows more, "
            "--format csv prints them all"
        )
    else:
        console.print(f"{len(rows):,} row{'' if len(rows) == 1 else 's'}")
