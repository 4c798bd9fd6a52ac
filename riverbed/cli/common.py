"""What every command of the ``riverbed`` command line shares: the Typer apps the commands
register on, the consoles, the --config option, loading the project, the stop signals, logging,
and the formatting helpers more than one command prints with.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from riverbed.config import Project, load_project
from riverbed.errors import UsageError

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


def open_project(config: Path | None) -> Project:
    """The project, its missing demo logins written (riverbed.govern.logins) before any
    logging starts, so the logs' redaction knows them."""
    from riverbed.govern.logins import ensure_logins

    project = load_project(config)
    ensure_logins(project)
    return project


def check_choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    """A usage error naming the values ``option`` takes, unless ``value`` is one of them
    (``allowed``: typing.get_args of the Literal that types the value)."""
    if value not in allowed:
        choices = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
        raise UsageError(f"{option} {value}: choose {choices}")


@contextmanager
def stop_signals(interrupt_after: int | None = None) -> Iterator[list[int]]:
    """SIGINT and SIGTERM (a supervisor's stop) while the block runs: each one's number is
    appended to the list yielded, for the work to stop when it sees it. With
    ``interrupt_after`` = N, the signal that comes after N of them raises KeyboardInterrupt
    instead (0: at once). The previous handlers are back when the block ends."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if interrupt_after is not None and len(stopping) >= interrupt_after:
            raise KeyboardInterrupt
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_logging(project: Project, quiet: bool) -> None:
    """JSON lines at logs.path (.riverbed/logs/riverbed.jsonl) from logs.level up; the console
    shows warnings (the CLI prints the progress itself), nothing but errors when --quiet/--json."""
    import contextlib

    from riverbed.config.models import secret_refs
    from riverbed.observe.logs import redact, setup_logging

    logs = project.config.logs
    path = project.path(logs.path)
    setup_logging(
        path.parent,
        console_level="ERROR" if quiet else "WARNING",
        file_level=logs.level,
        file_name=path.name,
    )
    for ref in secret_refs(project.config):  # whatever a library logs, these never show
        with contextlib.suppress(ValueError):  # not set: the command that needs it says so
            redact(ref.reveal())


def print_wrapped(text: Text, indent: int = 0, first: str = "", highlight: bool = False) -> None:
    """``text`` wrapped at spaces to the console's width (a pipe gets 80 columns) under
    ``indent`` columns, ``first`` in them on the first line, no line ending in a space: a
    terminal would otherwise break a line inside a figure or an id, and rich cut it."""
    width = max(console.width - indent, 30)
    for i, line in enumerate(text.wrap(console, width, overflow="fold")):
        line.rstrip()
        console.print(Text(f"{first if i == 0 else '':<{indent}}") + line, highlight=highlight)


def say_wrapped(text: str, highlight: bool = True) -> None:
    """Plain ``text`` (no markup) wrapped to the console's width (print_wrapped)."""
    print_wrapped(Text(text), highlight=highlight)


def plural(n: float, word: str, many: str | None = None) -> str:
    """``n`` (with thousands separators) and ``word``, or ``many`` (default ``word + "s"``)
    unless ``n`` is 1: "1 run", "2 runs", "1,000 batches"."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def labelled(label: str, markup: str) -> None:
    """``label`` in a column of its own and ``markup`` beside it, wrapped to the console's
    width under itself (a pipe gets 80 columns): nothing cut, no line too wide."""
    print_wrapped(Text.from_markup(markup), indent=11, first=label)


def print_table(table: Table, lines: list[tuple[str, str]]) -> None:
    """``table`` when it fits the console's width as it is, else ``lines`` (label, markup),
    each wrapped under its label (labelled). A table too wide is fitted by rich narrowing its
    widest columns whatever their words, so a long table name or a big figure came out cut
    ("1,234,5…"): a line per row keeps every id and figure whole."""
    # measured unbounded: measured at the console's width, rich reports what it would cut
    if console.measure(table, options=console.options.update_width(10_000)).maximum <= (
        console.width
    ):
        console.print(table)
    else:
        for label, markup in lines:
            labelled(label, markup)
