"""What the warehouse and the lake hold of a few keys: the message of a check that found them
missing from a dimension or a fact, or there when the source has none (pipeline_support's
check_dimensions and check_facts).

A rare race leaves one key wrong in a run of a chaos test, and the run's folder is gone with the
CI machine. So the message itself says where the key went astray: every version the dimension
holds of it (validity, flags, the source position that started it) and the dimension's
high-water mark, then each of its rows in the lake's visible raw, staged and quarantined files
(op, position, file, and whether the transform consumed the raw file and the load the staged
one). Never captured, captured but not staged, staged but not loaded, loaded then closed: each
reads differently. Bounded: a few keys, a few rows each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.capture.snapshot import SNAPSHOT_SEQ
from riverbed.config import load_project
from riverbed.lake.parquet import read_table
from riverbed.lake.positions import format_lsn
from riverbed.lake.storage import open_storage
from riverbed.load.scd2 import SCD_COLUMNS
from riverbed.state import open_state

SHOWN_KEYS = 3
ROWS_PER_KEY = 12  # of each of the warehouse's versions and the lake's rows
LAKE_STAGES = ("raw", "staged", "quarantine")

Ask = Callable[[Path, str], list[dict[str, Any]]]


def trace_keys(
    project: Path, target: str, table: str, natural: str, keys: Sequence[Any], ask: Ask
) -> str:
    """Lines on the first SHOWN_KEYS of ``keys``: ``target``'s versions of each, then the
    rows of ``table`` in the lake of the project at ``project`` (a config path)."""
    shown = list(keys)[:SHOWN_KEYS]
    if not shown:
        return ""
    lines = [f"trace of {target} {natural} {shown}:"]
    lines += _versions(project, target, natural, shown, ask)
    lines += _lake_rows(project, table, natural, shown)
    return "\n".join(lines)


def _versions(project: Path, target: str, natural: str, keys: list[Any], ask: Ask) -> list[str]:
    listed = ", ".join(_literal(k) for k in keys)
    try:
        rows = ask(project, f"select * from {target} where {natural} in ({listed})")
        marks = ask(project, f"select * from _riverbed_scd2_positions where dimension = '{target}'")
    except Exception as exc:  # a check's message must not fail on its diagnosis
        return [f"  warehouse: unreadable ({type(exc).__name__}: {str(exc)[:200]})"]
    # a dimension's: the merge passes over events at or below it
    lines = [f"  {target} high-water mark: {_positions(marks)}"] if marks else []
    for key in keys:
        versions = sorted(
            (r for r in rows if r[natural] == key), key=lambda r: str(r.get("effective_date"))
        )
        lines.append(f"  {target} {natural}={key}: {len(versions)} version(s)")
        for row in versions[:ROWS_PER_KEY]:
            shown = {c: _short(c, row[c]) for c in (*SCD_COLUMNS, "batch_id") if c in row}
            lines.append("    " + " ".join(f"{c}={v}" for c, v in shown.items()))
    return lines


def _short(column: str, value: Any) -> str:
    """A value as the trace shows it: times to the microsecond without their zone (UTC),
    positions as PostgreSQL writes them, a snapshot row's _seq from SNAPSHOT_SEQ."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if column == "_lsn":
        return format_lsn(int(value))
    if column == "_seq":
        return _seq(int(value))
    return str(value)


def _seq(seq: int) -> str:
    return f"S+{seq - SNAPSHOT_SEQ}" if seq < SNAPSHOT_SEQ // 2 else str(seq)


def _positions(marks: list[dict[str, Any]]) -> str:
    mark = marks[0]
    return f"({format_lsn(int(mark['_lsn']))}, {_seq(int(mark['_seq']))})"


def _lake_rows(project: Path, table: str, natural: str, keys: list[Any]) -> list[str]:
    """The keys' rows in every visible lake file of ``table``, in source order."""
    try:
        loaded = load_project(project)
        storage = open_storage(loaded.config.lake, loaded.root)
        manifest = open_state(loaded)
    except Exception as exc:
        return [f"  lake: unreadable ({type(exc).__name__}: {str(exc)[:200]})"]
    try:
        pending = {f.path for f in manifest.transform.pending(table)}
        unloaded = {f.path for f in manifest.loads.unloaded([table])}
        found: dict[Any, list[tuple[int, int, str]]] = {k: [] for k in [*keys, None]}
        for stage in LAKE_STAGES:
            for file in manifest.lake.files(stage, table):
                note = _note(file.path, stage, pending, unloaded)
                try:
                    matches = _matches(storage, file.path, natural, keys)
                except Exception as exc:  # one file unreadable: say so, read the others
                    matches = [(None, 0, 0, f"unreadable ({type(exc).__name__})")]
                for key, lsn, seq, op in matches:
                    found.setdefault(key, []).append((lsn, seq, f"{stage} {op} {note}{file.path}"))
    except Exception as exc:
        return [f"  lake: unreadable ({type(exc).__name__}: {str(exc)[:200]})"]
    finally:
        manifest.close()
    lines = []
    for key, rows in found.items():
        rows.sort()
        if key is None and not rows:
            continue
        which = f"{natural}={key}" if key is not None else "truncates (T rows), unreadable files"
        lines.append(f"  lake {table} {which}: {len(rows)} row(s)")
        lines += [f"    ({format_lsn(n)}, {_seq(s)}) {what}" for n, s, what in rows[:ROWS_PER_KEY]]
    return lines


def _note(path: str, stage: str, pending: set[str], unloaded: set[str]) -> str:
    if stage == "raw" and path in pending:
        return "(not transformed) "
    if stage == "staged" and path in unloaded:
        return "(not loaded) "
    return ""


def _matches(
    storage: Any, path: str, natural: str, keys: list[Any]
) -> list[tuple[Any, int, int, str]]:
    """(key, _lsn, _seq, _op) of the rows of ``keys`` in one lake file, and of its T rows
    (a truncate ends every key; its key is None)."""
    rows = read_table(storage, path, columns=[natural, "_op", "_lsn", "_seq"])
    column = rows.column(natural)
    wanted = pa.array(keys).cast(column.type)
    rows = rows.filter(
        pc.or_kleene(pc.is_in(column, value_set=wanted), pc.equal(rows.column("_op"), "T"))
    )
    return [(r[natural], int(r["_lsn"]), int(r["_seq"]), str(r["_op"])) for r in rows.to_pylist()]


def _literal(key: Any) -> str:
    return str(key) if isinstance(key, int) else "'" + str(key).replace("'", "''") + "'"
