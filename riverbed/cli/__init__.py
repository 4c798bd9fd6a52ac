"""The ``riverbed`` command line: the map of the product.

Each command loads the config once, at the edge, and hands typed objects to the package that does
the work. User errors (RiverbedError) become one red line and a non-zero exit, never a traceback.

One module per command or group of commands (``init``, ``source``, ``shop``, ``capture``,
``run``, ``runs``, ``ddl``, ``query``, ``audit``, ``forget``, ``keys``, ``status``, ``serve``,
``report``, ``demo``); each registers its
commands on the shared apps of ``riverbed.cli.common``. The order of the imports below is the
order of `riverbed --help`'s list. Nothing imports the command line but ``riverbed.__main__``.
"""

from __future__ import annotations

import gc
import sys

from rich.markup import escape

from riverbed.cli.common import app, err_console
from riverbed.errors import RiverbedError
from riverbed.private import restrict_umask

# isort: off
from riverbed.cli import init as init
from riverbed.cli import source as source
from riverbed.cli import shop as shop
from riverbed.cli import capture as capture
from riverbed.cli import run as run
from riverbed.cli import runs as runs
from riverbed.cli import ddl as ddl
from riverbed.cli import query as query
from riverbed.cli import audit as audit
from riverbed.cli import govern as govern
from riverbed.cli import forget as forget
from riverbed.cli import keys as keys
from riverbed.cli import status as status
from riverbed.cli import serve as serve
from riverbed.cli import report as report
from riverbed.cli import demo as demo
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: user errors become red lines and an exit code, never a traceback.

    Typer's standalone mode handles usage errors (exit 2) and --help; everything of ours that a
    user can act on is a RiverbedError.
    """
    # everything the command writes, and what the engines and child processes it starts write,
    # is for the user alone (riverbed.private)
    restrict_umask()
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
