"""`riverbed forget TABLE KEY [KEY...]`: erase data subjects' personal values everywhere
Riverbed keeps them (riverbed.govern.erasure tells the steps and why they are safe to kill).

The command holds every lock a run holds, so no transform or load reads a file while it is
rewritten, and none stages an erased key's change before its tombstone is recorded. A rerun
finishes any erasure a kill interrupted, whichever keys it names.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from riverbed.cli.common import (
    ConfigOption,
    app,
    open_project,
    plural,
    say_wrapped,
    start_logging,
)
from riverbed.config import Project

if TYPE_CHECKING:
    from riverbed.govern.erasure import LakeErased
    from riverbed.load.warehouse import Warehouse


@app.command(short_help="Erase data subjects' personal data everywhere (e.g. forget customers 42).")
def forget(
    table: Annotated[str, typer.Argument(metavar="TABLE", hidden=True)],
    keys: Annotated[list[str], typer.Argument(metavar="KEY", hidden=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was erased as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Erase the data subjects of config table TABLE with these KEYs (a key of several
    columns: their values joined by ','): their personal columns (tables.<t>.pii, and the
    target's columns tagged pii in governance.tags), from every lake file (raw, staged,
    quarantine), every version in the warehouse (history rows stay, the values become NULL),
    the staging tables and any fact carrying them; the files are compacted so the bytes go
    too. A tombstone keeps later changes of the keys from bringing the values back. Safe to
    rerun; audited.

    Example: `riverbed forget customers 42`
    """
    project = open_project(config)
    from riverbed.govern.erasure import check_keys

    wanted = check_keys(project.config, table, keys)
    start_logging(project, quiet=as_json)
    done = erase_subjects(project, table, wanted)
    if as_json:
        print(
            json.dumps(
                {
                    name: {"keys": erased, **asdict(lake), "warehouse_rows": rows}
                    for name, erased, lake, rows in done
                }
            )
        )
        return
    for name, erased, lake, rows in done:
        say_wrapped(
            f"{name}: {plural(len(erased), 'key')} erased ({', '.join(erased)}): "
            f"{plural(lake.files, 'lake file')} rewritten, "
            f"{plural(sum(rows.values()), 'warehouse row')} scrubbed; later changes of "
            f"{'these keys' if len(erased) > 1 else 'this key'} are scrubbed as they arrive",
            highlight=False,
        )
        for path in lake.unreadable:
            say_wrapped(
                f"  could not read {path}, so could not search it: an unreadable raw file is "
                "set aside by `riverbed run`; check or delete it by hand",
                highlight=False,
            )


Erased = tuple[str, list[str], "LakeErased", dict[str, int]]


def erase_subjects(project: Project, table: str, wanted: list[str]) -> list[Erased]:
    """Erase the checked keys ``wanted`` of ``table`` (and finish any erasure a kill
    interrupted): per table, the keys erased, what the lake scrub did and the warehouse rows
    scrubbed by table. `riverbed forget` and the demo both erase through here."""
    from riverbed.govern.erasure import begin, erase_lake, finish
    from riverbed.lake.lock import every_run_lock
    from riverbed.lake.storage import open_storage
    from riverbed.load.warehouse import open_warehouse
    from riverbed.serve.extracts.store import prune as prune_extracts
    from riverbed.state import open_state

    cfg = project.config
    done: list[Erased] = []
    with every_run_lock(project):
        store = open_state(project)
        try:
            storage = open_storage(cfg.lake, project.root)
            for name, pending in begin(store, cfg, table, wanted).items():
                lake = erase_lake(storage, store, cfg, name, pending)
                warehouse = open_warehouse(cfg.warehouse, project.root)
                try:
                    rows = _erase_warehouse(project, warehouse, name, pending)
                finally:
                    warehouse.close()
                finish(store, name, pending, lake, sum(rows.values()))
                done.append((name, pending, lake, rows))
        finally:
            store.close()
        # extracts hold no personal column (a refresh refuses one); older generations go now
        # rather than after their grace, so no file from before the erasure outlives it
        prune_extracts(project, grace=0)
    return done


def _erase_warehouse(
    project: Project, warehouse: Warehouse, table: str, keys: list[str]
) -> dict[str, int]:
    """The warehouse's part of an erasure: the governed copies of every table the values
    reach are dropped first (their bytes then go with the compaction erase_rows ends with),
    the rows erased, and the copies built again from the erased tables."""
    from riverbed.config.personal import scrubs
    from riverbed.load.erase import erase_rows
    from riverbed.serve.copies import drop_copies, refresh_copies
    from riverbed.serve.queries import read_catalog

    cfg = project.config
    drop_copies(warehouse, [found.target for found in scrubs(cfg, table)])
    rows = erase_rows(warehouse, cfg, table, keys)
    if cfg.governance.copies:
        refresh_copies(project, warehouse, read_catalog(warehouse))
    return rows
