"""Helpers for capture tests: a project pointed at a test database, and an independent oracle.

The oracle never uses Riverbed's decoder: triggers on the source tables write every change
(transaction id, operation, the row as jsonb) to an audit table in the same transaction, and the
final table contents come straight from SELECT. The lake is checked against both.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from conftest import Database, write_config
from riverbed.config import load_project
from riverbed.lake.reader import read_changes
from riverbed.lake.storage import open_storage
from riverbed.shop.workload import Workload, WorkloadSpec
from riverbed.state import SQLiteStore

ISO_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

AUDIT_DDL = """
create schema if not exists audit;
create table if not exists audit.changes (
  id bigserial primary key, xid bigint not null, tbl text not null, op text not null, row jsonb
);
create or replace function audit.record() returns trigger language plpgsql as $$
begin
  if tg_op = 'TRUNCATE' then
    insert into audit.changes (xid, tbl, op) values (txid_current(), tg_table_name, 'T');
    return null;
  end if;
  insert into audit.changes (xid, tbl, op, row) values (
    txid_current(), tg_table_name, left(tg_op, 1),
    case when tg_op = 'DELETE' then to_jsonb(old) else to_jsonb(new) end);
  return null;
end $$;
"""


@contextmanager
def background_workload(database: Database, spec: WorkloadSpec) -> Iterator[None]:
    """The shop workload running in a thread for the duration of the with-block."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            with psycopg.connect(database.dsn, autocommit=True) as conn:
                Workload(conn, spec).run(stop.is_set)
        except BaseException as exc:  # reported by the with-block
            failure.append(exc)

    writer = threading.Thread(target=drive)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()
    if failure:
        raise failure[0]


def capture_config(
    folder: Path, database: Database, *, tables: str | None = None, extra: str = ""
) -> Path:
    """A riverbed.yaml: source = the test database, lake and state inside ``folder``; the slot
    and publication named ``riverbed`` (the tests' own database makes them theirs)."""
    text = f'source:\n  dsn: "{database.dsn}"\n  slot: riverbed\n  publication: riverbed\n'
    text += "lake:\n  path: lake\n  max_rows: 5000\n  max_seconds: 1\nstate:\n  path: state.db\n"
    text += "capture:\n  heartbeat_seconds: 1\n  status_interval_seconds: 1\n"
    if tables is not None:
        text += tables
    text += extra
    return write_config(folder, text)


def install_audit(conn: psycopg.Connection, schema: str, tables: list[str]) -> None:
    conn.execute(AUDIT_DDL)
    for table in tables:
        conn.execute(
            f"create trigger audit_{table} after insert or update or delete on {schema}.{table}"
            f" for each row execute function audit.record()"
        )
        conn.execute(
            f"create trigger audit_{table}_truncate after truncate on {schema}.{table}"
            f" for each statement execute function audit.record()"
        )


def lake_changes(config: Path, table: str, resolve_toast: bool = True) -> list[dict[str, Any]]:
    project = load_project(config)
    storage = open_storage(project.config.lake, project.root)
    manifest = SQLiteStore(project.path(project.config.state.path))
    try:
        return read_changes(storage, manifest, table, resolve_toast=resolve_toast).to_pylist()
    finally:
        manifest.close()


def replay(changes: list[dict[str, Any]], keys: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Apply a table's change log in order: the table as the lake says it is now."""
    state: dict[tuple[Any, ...], dict[str, Any]] = {}
    for change in changes:
        key = tuple(change[k] for k in keys)
        op = change["_op"]
        row = {k: v for k, v in change.items() if not k.startswith("_")}
        if op == "D":
            assert key in state, f"delete of a key the lake never had: {key}"
            del state[key]
        elif op == "T":
            state.clear()
        else:
            state[key] = row
    return state


def source_rows(
    conn: psycopg.Connection, schema: str, table: str, keys: list[str]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    cur = conn.execute(f"select * from {schema}.{table}")
    names = [d.name for d in cur.description]
    rows = {}
    for values in cur.fetchall():
        row = {n: normalise(v) for n, v in zip(names, values, strict=True)}
        rows[tuple(row[k] for k in keys)] = row
    return rows


def normalise(value: Any) -> Any:
    """One comparable form for values from psycopg, from Arrow and from jsonb."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        number = Decimal(str(value))
        # one canonical text for 20, 20.0 and 20.00 alike (jsonb drops trailing zeros)
        return format(number.normalize(), "f") if number.is_finite() else str(number)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if value is not None and type(value).__name__ == "UUID":
        return str(value)
    if isinstance(value, str) and ISO_TIMESTAMP.match(value):
        return datetime.fromisoformat(value).isoformat()
    return value


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: normalise(v) for k, v in row.items() if not k.startswith("_")}


def _entry(op: str, row: dict[str, Any], keys: list[str]) -> str:
    # a delete carries only the key (REPLICA IDENTITY DEFAULT), so compare deletes by key
    shown = {k: row[k] for k in keys} if op == "D" else row
    return f"{op} {json.dumps(shown, sort_keys=True, default=str)}"


def audit_by_xid(conn: psycopg.Connection, table: str, keys: list[str]) -> dict[int, Counter[str]]:
    """Per source transaction: a multiset of (op, row) the triggers saw for ``table``."""
    result: dict[int, Counter[str]] = {}
    for xid, op, row in conn.execute(
        "select xid, op, row from audit.changes where tbl = %s order by id", (table,)
    ):
        # txid_current() carries the epoch in its high bits; pgoutput sends the 32-bit xid
        result.setdefault(xid & 0xFFFFFFFF, Counter())[_entry(op, normalise(row or {}), keys)] += 1
    return result


def lake_by_xid(changes: list[dict[str, Any]], keys: list[str]) -> dict[int, Counter[str]]:
    """The same multiset from the lake's streamed rows (snapshot rows have no xid)."""
    result: dict[int, Counter[str]] = {}
    for change in changes:
        if change["_xid"] is None:
            continue
        result.setdefault(change["_xid"], Counter())[
            _entry(change["_op"], normalise_row(change), keys)
        ] += 1
    return result
