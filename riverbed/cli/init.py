"""`riverbed init`: a commented riverbed.yaml, for the demo shop or inferred from a database.

With ``--from-source DSN`` the file is proposed from that database's catalog: the reading is
riverbed.source.catalog's, the decisions riverbed.config.proposal's, the text
riverbed.config.writer's; this module connects, checks the target file and says what it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riverbed.cli.common import app, console
from riverbed.config import demo_config_text
from riverbed.errors import RiverbedError, SourceError, UsageError, first_line


@app.command(short_help="Write a commented riverbed.yaml: the demo shop's, or your database's.")
def init(
    # described in the docstring: typer would list it with its Python type (<path>)
    directory: Annotated[Path, typer.Argument(metavar="DIRECTORY", hidden=True)] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing riverbed.yaml.")
    ] = False,
    from_source: Annotated[
        str | None,
        typer.Option(
            "--from-source",
            metavar="DSN",
            help="Infer the tables from this PostgreSQL (its password is not written).",
        ),
    ] = None,
    schema: Annotated[
        str, typer.Option("--schema", metavar="SCHEMA", help="With --from-source: the schema.")
    ] = "public",
    tables: Annotated[
        list[str] | None,
        typer.Option(
            "--tables",
            metavar="T1,T2",
            help="With --from-source: only these tables (default: all of the schema).",
        ),
    ] = None,
) -> None:
    """Write a commented riverbed.yaml into DIRECTORY (default: here): the demo shop's, or,
    with --from-source, one inferred from your database's keys, foreign keys and constraints.

    Example: `riverbed init my-pipeline` or
    `riverbed init --from-source "host=db dbname=app user=me" --schema app`
    """
    if directory.exists() and not directory.is_dir():
        raise RiverbedError(
            f"{directory} is a file, not a folder; give `riverbed init` a folder to write "
            "riverbed.yaml into"
        )
    target = directory / "riverbed.yaml"
    if target.exists() and not force:
        raise RiverbedError(f"{target} already exists; edit it, or pass --force to overwrite it")
    if from_source is None:
        _write(target, demo_config_text())
        console.print(f"wrote {target}; check it with `riverbed source status -c {target}`")
        return
    only = [name.strip() for value in tables or [] for name in value.split(",") if name.strip()]
    _init_from_source(target, from_source, schema, only or None)


def _init_from_source(target: Path, dsn: str, schema: str, only: list[str] | None) -> None:
    import psycopg

    from riverbed.config.fields import IDENTIFIER
    from riverbed.config.proposal import propose
    from riverbed.config.writer import PASSWORD_VARIABLE, config_text, public_dsn
    from riverbed.source.catalog import read_catalog
    from riverbed.source.connection import Source

    if not IDENTIFIER.match(schema):  # source.schema takes plain names only
        raise UsageError(
            f"--schema {schema}: riverbed captures a schema with a plain name (letters, digits, "
            "underscore); rename it, or choose another with --schema"
        )
    written_dsn, has_password = public_dsn(dsn)
    shown = Source(written_dsn, None, None).display
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            catalog = read_catalog(conn, schema, only)
    except psycopg.OperationalError as exc:
        raise SourceError(
            f"cannot connect to {shown}: {first_line(exc)}; check the DSN given to --from-source"
        ) from exc
    except psycopg.Error as exc:  # connected, but the catalog could not be read
        raise SourceError(
            f"cannot read the catalog of {shown}: {first_line(exc)}; connect as a user who "
            f"can read schema {schema}"
        ) from exc
    proposal = propose(catalog)
    if not proposal.tables:
        left = ", ".join(item.table.name for item in proposal.left_out)
        raise RiverbedError(
            f"no table of schema {schema} can be captured ({left}: no primary key or replica "
            f"identity); add primary keys, or `alter table {schema}.NAME replica identity full`"
        )
    _write(target, config_text(proposal, written_dsn, has_password))
    dims = [p.table.name for p in proposal.tables if p.kind == "dimension"]
    facts = [p.table.name for p in proposal.tables if p.kind == "fact"]
    console.print(
        f"wrote {target} from {shown}, schema {schema}: dimensions {', '.join(dims) or 'none'}; "
        f"facts {', '.join(facts) or 'none'}"
    )
    for item in proposal.left_out:
        console.print(f"left out {item.table.name}: {item.reason} (the fix is in the file)")
    if has_password:
        console.print(
            f"the DSN's password is not in the file: it reads password: {{env: "
            f"{PASSWORD_VARIABLE}}}; export {PASSWORD_VARIABLE} before `riverbed capture`"
        )
    console.print(f"review it, then `riverbed capture --once -c {target}`")


def _write(target: Path, text: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise RiverbedError(
            f"cannot write {target} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
