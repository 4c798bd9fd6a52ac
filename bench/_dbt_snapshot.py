"""An external reference for bench/load.py: the same SCD2 change set through a dbt-duckdb
snapshot.

Not a benchmark itself. dbt's snapshot is how most teams keep SCD2 history in a warehouse:
each run compares a source table (the state now, every key) with the snapshot's current rows
and closes and inserts versions for what differs. Here the source is the dimension's source
before the batch (the first, untimed run builds the snapshot from it), then the state after
the batch (the same as bench/_hand_merge.py's snapshot: each changed key's last event, every
other key as it was); the second run, timed, applies the change. Strategy ``check`` on the
tracked columns: dbt has no type1 columns and no change events, so it must compare.

dbt runs as a subprocess, found on PATH or given (``--dbt``), in its own environment: it is a
bench-only dependency (``pip install -e .[bench]``; the extra is dbt-duckdb), never the
project's. What is printed: the snapshot node's time as dbt records it (``execution_time``
in target/run_results.json) and the process's wall time (dbt's start-up, parsing, the
node, writing its artifacts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from riverbed.load.model import DimensionModel

MISSING = "dbt-duckdb not installed: pip install -e .[bench]"
SOURCE = "src_customers"
SNAPSHOT = "dim_customer_snapshot"


def find(option: str | None) -> str | None:
    """The dbt executable: ``option`` if given, else ``dbt`` on PATH; None if there is none
    or it has no duckdb adapter."""
    found = shutil.which(option or "dbt")
    if found is None:
        return None
    try:
        shown = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=120, check=False
        )
    except OSError:
        return None
    return found if "duckdb" in shown.stdout.lower() else None


def snapshot_run(
    dbt: str, folder: Path, dim: DimensionModel, before: pa.Table, after: pa.Table
) -> dict[str, float]:
    """Snapshot ``before`` (untimed), then ``after``; dbt's node time and the process's wall
    time of the second run, in seconds, and the versions it closed."""
    project = folder / "dbt"
    project.mkdir(parents=True, exist_ok=True)
    database = project / "warehouse.duckdb"
    _write_project(project, database, dim)
    _load_source(database, before)
    _run(dbt, project, "the first snapshot (untimed)")
    _load_source(database, after)
    started = time.perf_counter()
    _run(dbt, project, "the snapshot of the change")
    process = time.perf_counter() - started
    results = json.loads((project / "target" / "run_results.json").read_text())
    node = sum(float(r["execution_time"]) for r in results["results"])
    with duckdb.connect(str(database), read_only=True) as con:
        found = con.execute(
            f"SELECT count(*) FILTER (WHERE dbt_valid_to IS NOT NULL) FROM {SNAPSHOT}"
        ).fetchone()
    closed = float(found[0]) if found else 0.0
    return {"node": node, "process": process, "closed": closed}


def _write_project(project: Path, database: Path, dim: DimensionModel) -> None:
    (project / "dbt_project.yml").write_text(
        "name: riverbed_bench\nversion: '1.0'\nprofile: riverbed_bench\n"
        "snapshot-paths: ['snapshots']\n"
        "flags:\n  send_anonymous_usage_stats: false\n  partial_parse: false\n"
    )
    (project / "profiles.yml").write_text(
        "riverbed_bench:\n  target: bench\n  outputs:\n    bench:\n"
        f"      type: duckdb\n      path: '{database}'\n      threads: 1\n"
    )
    (project / "snapshots").mkdir(exist_ok=True)
    tracked = ", ".join(dim.tracked)
    (project / "snapshots" / "snapshots.yml").write_text(
        "sources:\n  - name: bench\n    schema: main\n"
        f"    tables:\n      - name: {SOURCE}\n"
        "snapshots:\n"
        f"  - name: {SNAPSHOT}\n"
        f"    relation: source('bench', '{SOURCE}')\n"
        "    config:\n"
        f"      unique_key: {dim.keys[0]}\n      strategy: check\n"
        f"      check_cols: [{tracked}]\n"
    )


def _load_source(database: Path, rows: pa.Table) -> None:
    """Replace the source table with ``rows`` (dbt is not running: the file is free)."""
    with duckdb.connect(str(database)) as con:
        con.register("rows_in", rows)
        con.execute(f"CREATE OR REPLACE TABLE {SOURCE} AS SELECT * FROM rows_in")
        con.execute("CHECKPOINT")


def _run(dbt: str, project: Path, what: str) -> None:
    env = {**os.environ, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    done = subprocess.run(
        [dbt, "snapshot", "--project-dir", str(project), "--profiles-dir", str(project)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"dbt failed on {what} (exit {done.returncode}):\n{tail}")
