"""The state store's contract for the audit trail (riverbed.state.store.AuditLog): records
read back as appended, filtered, and hash-chained so that a record edited, deleted or inserted
behind the store's back is found and named. Every implementation runs these through the
protocol; the tampering goes around it, with a connection of its own to the store's file or
schema."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import reopen_store, store_place
from riverbed.state.audit_chain import GENESIS, digest
from riverbed.state.postgres.db import translated
from riverbed.state.records import AuditEntry, AuditRecord
from riverbed.state.store import StateStore

T0 = 1_700_000_000.0


def entry(n: int, principal: str = "ann", allowed: bool = True, **kw: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "ts": T0 + n,
        "principal": principal,
        "path": "cli",
        "action": "query",
        "sql": f"select {n} from dim_customer",
        "tables": ("dim_customer",),
        "allowed": allowed,
        "reason": None if allowed else "dim_customer is not granted",
        "rows": n if allowed else None,
        "seconds": 0.25,
    }
    return AuditEntry(**(fields | kw))


def fill(store: StateStore, count: int) -> list[AuditRecord]:
    return [store.audit.append(entry(n)) for n in range(1, count + 1)]


def tamper(store: StateStore, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run ``statements`` on the store's file (SQLite) or schema (PostgreSQL) with a connection
    of its own: an editor that goes around the store."""
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            for sql, params in statements:
                conn.execute(sql, params)
        finally:
            conn.close()
        return
    conninfo, schema = store_place(store)[1:]
    with psycopg.connect(conninfo, autocommit=True) as pg:
        pg.execute(f"set search_path to {schema}")
        for sql, params in statements:
            pg.execute(translated(sql), params)


def problem(store: StateStore) -> tuple[str | None, int | None]:
    check = store.audit.verify()
    assert check.intact == (check.problem is None)
    return check.problem, check.record


# --- appending and reading -------------------------------------------------------------------


def test_records_read_back_as_appended_and_chained(state_store: StateStore) -> None:
    change = AuditEntry(
        ts=int(T0) + 9,  # an int is kept as the float it reads back as
        principal="ops",
        path="govern",
        action="rotate",
        detail={"key_ids": ("k1", "k2"), "rewrapped": 3},
    )
    appended = [*fill(state_store, 2), state_store.audit.append(change)]
    assert [r.id for r in appended] == [1, 2, 3]
    assert appended[0].prev_hash == GENESIS
    assert [r.prev_hash for r in appended[1:]] == [r.hash for r in appended[:-1]]
    assert all(len(r.hash) == 64 for r in appended)

    read = state_store.audit.records()
    assert read == appended[::-1]  # newest first, every field as appended
    first = read[-1]
    assert (first.principal, first.path, first.action, first.sql) == (
        "ann",
        "cli",
        "query",
        "select 1 from dim_customer",
    )
    assert (first.tables, first.allowed, first.rows, first.seconds) == (
        ("dim_customer",),
        True,
        1,
        0.25,
    )
    assert read[0].ts == T0 + 9 and isinstance(read[0].ts, float)
    assert read[0].detail == {"key_ids": ["k1", "k2"], "rewrapped": 3}
    assert (read[0].sql, read[0].rows, read[0].seconds, read[0].tables) == (None, None, None, ())


def test_records_are_filtered_by_principal_denial_and_time(state_store: StateStore) -> None:
    audit = state_store.audit
    audit.append(entry(1, "ann"))
    audit.append(entry(2, "bob", allowed=False))
    audit.append(entry(3, "ann", allowed=False))
    audit.append(entry(4, "bob"))
    audit.append(entry(5, "ann"))

    def ids(**filters: Any) -> list[int]:
        return [r.id for r in audit.records(**filters)]

    assert ids() == [5, 4, 3, 2, 1]
    assert ids(principal="ann") == [5, 3, 1]
    assert ids(principal="carol") == []
    assert ids(denied=True) == [3, 2]
    assert ids(since=T0 + 3) == [5, 4, 3]
    assert ids(limit=2) == [5, 4]
    assert ids(principal="ann", denied=True, since=T0 + 2) == [3]
    assert ids(principal="bob", limit=1) == [4]


def test_an_empty_log_and_a_whole_one_verify(state_store: StateStore) -> None:
    check = state_store.audit.verify()
    assert (check.intact, check.records, check.head) == (True, 0, GENESIS)
    records = fill(state_store, 5)
    check = state_store.audit.verify()
    assert (check.intact, check.records, check.head) == (True, 5, records[-1].hash)


# --- tampering, found and named --------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("sql", "select 1"),
        ("allowed", 0),
        ("rows", 9999),
        ("ts", T0),
        ("principal", "mallory"),
        ("reason", "granted"),
        ("detail", '{"note": "added"}'),
        ("detail", "not json"),
        ("tables", '["fact_orders"]'),
        ("prev_hash", GENESIS),
        ("hash", "f" * 64),
    ],
)
def test_an_edited_field_names_its_record(state_store: StateStore, column: str, value: Any) -> None:
    fill(state_store, 5)
    tamper(state_store, (f"update audit_log set {column} = ? where id = 3", (value,)))
    assert problem(state_store) == ("edited", 3)


def test_an_edited_record_given_a_new_hash_is_named_by_the_next_one(
    state_store: StateStore,
) -> None:
    records = fill(state_store, 5)
    forged = AuditRecord(**{**vars(records[2]), "principal": "mallory"})
    tamper(
        state_store,
        (
            "update audit_log set principal = 'mallory', hash = ? where id = 3",
            (digest(forged, forged.prev_hash),),
        ),
    )
    assert problem(state_store) == ("edited", 3)


def test_the_newest_record_edited_and_rehashed_is_found_by_the_head(
    state_store: StateStore,
) -> None:
    records = fill(state_store, 3)
    forged = AuditRecord(**{**vars(records[2]), "rows": 0})
    tamper(
        state_store,
        (
            "update audit_log set rows = 0, hash = ? where id = 3",
            (digest(forged, forged.prev_hash),),
        ),
    )
    assert problem(state_store) == ("edited", 3)


@pytest.mark.parametrize(("deleted", "count"), [(3, 5), (1, 5), (5, 5), (4, 5)])
def test_a_deleted_record_is_named(state_store: StateStore, deleted: int, count: int) -> None:
    fill(state_store, count)
    tamper(state_store, ("delete from audit_log where id = ?", (deleted,)))
    assert problem(state_store) == ("deleted", deleted)


def test_the_newest_records_deleted_then_more_appended_are_still_found(
    state_store: StateStore,
) -> None:
    fill(state_store, 5)
    tamper(state_store, ("delete from audit_log where id >= 4", ()))
    assert problem(state_store) == ("deleted", 4)
    state_store.audit.append(entry(6))
    assert problem(state_store) == ("deleted", 4)


def _insert_at(store: StateStore, place: int, forged: AuditRecord) -> None:
    """Move the records from ``place`` on one id up, and put ``forged`` at ``place``."""
    columns = (
        "id, ts, principal, path, action, sql, detail, tables, allowed, reason, rows, seconds,"
        " prev_hash, hash"
    )
    row = (
        place,
        forged.ts,
        forged.principal,
        forged.path,
        forged.action,
        forged.sql,
        json.dumps(forged.detail),
        json.dumps(list(forged.tables)),
        int(forged.allowed),
        forged.reason,
        forged.rows,
        forged.seconds,
        forged.prev_hash,
        forged.hash,
    )
    tamper(
        store,
        ("update audit_log set id = -id where id >= ?", (place,)),
        ("update audit_log set id = 1 - id where id < 0", ()),
        (f"insert into audit_log ({columns}) values ({', '.join('?' * 14)})", row),
    )


@pytest.mark.parametrize("rehashed", [True, False])
def test_a_record_inserted_in_the_middle_is_named(state_store: StateStore, rehashed: bool) -> None:
    records = fill(state_store, 5)
    forged = AuditRecord(
        **{**vars(records[2]), "id": 3, "principal": "mallory", "prev_hash": records[1].hash}
    )
    if rehashed:  # chained to record 2 as an append would have: only record 4 disagrees
        forged = AuditRecord(**{**vars(forged), "hash": digest(forged, forged.prev_hash)})
    _insert_at(state_store, 3, forged)
    assert [r.id for r in state_store.audit.records()] == [6, 5, 4, 3, 2, 1]
    assert problem(state_store) == ("inserted", 3)


def test_a_record_added_after_the_newest_is_named(state_store: StateStore) -> None:
    records = fill(state_store, 3)
    forged = AuditRecord(**{**vars(records[2]), "id": 4, "prev_hash": records[2].hash})
    forged = AuditRecord(**{**vars(forged), "hash": digest(forged, forged.prev_hash)})
    _insert_at(state_store, 4, forged)
    assert problem(state_store) == ("inserted", 4)


# --- concurrent writers ----------------------------------------------------------------------


def test_concurrent_appends_keep_one_chain(state_store: StateStore) -> None:
    """Threads sharing the store, and a second store on the same file (as another process
    would open it), append at once: one chain, every record in it once."""
    others: list[Any] = [reopen_store(state_store)]
    stores = [state_store, state_store, state_store, *others]
    errors: list[BaseException] = []

    def append(store: Any, worker: int) -> None:
        try:
            for n in range(30):
                store.audit.append(entry(n, principal=f"w{worker}"))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for other in others:
        other.close()
    assert not errors
    total = 30 * len(stores)
    records = state_store.audit.records()
    assert sorted(r.id for r in records) == list(range(1, total + 1))
    check = state_store.audit.verify()
    assert (check.intact, check.records) == (True, total)
