"""`riverbed init`: a commented riverbed.yaml for the demo shop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riverbed.cli.common import app, console
from riverbed.config import demo_config_text
from riverbed.errors import RiverbedError


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
