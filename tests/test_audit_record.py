"""What the gateway and the governance commands append to the audit trail
(riverbed.govern.audit): a decision as it was made, the SQL kept as written, a change without
any secret in its detail."""

from __future__ import annotations

import time

import pytest

from riverbed.govern.audit import record_change, record_decision
from riverbed.state.store import StateStore


def test_a_decision_is_recorded_as_made(state_store: StateStore) -> None:
    before = time.time()
    sql = "select * from users where password = 'hunter2'"  # the principal's own query
    record = record_decision(
        state_store,
        principal="ann",
        path="export",
        sql=sql,
        tables=["users"],
        allowed=False,
        reason="users is not granted",
        rows=None,
        seconds=0.5,
    )
    assert (record.principal, record.path, record.action, record.sql) == (
        "ann",
        "export",
        "query",
        sql,
    )
    assert (record.tables, record.allowed, record.reason, record.rows, record.seconds) == (
        ("users",),
        False,
        "users is not granted",
        None,
        0.5,
    )
    assert before - 0.5 <= record.ts <= time.time() - 0.5  # when it was asked
    assert state_store.audit.records() == [record]


def test_a_decision_comes_by_a_read_path(state_store: StateStore) -> None:
    with pytest.raises(ValueError, match="cli, api, web, export"):
        record_decision(
            state_store,
            principal="ann",
            path="govern",
            sql="select 1",
            tables=[],
            allowed=True,
            reason=None,
            rows=1,
            seconds=0.0,
        )


def test_a_change_is_recorded_with_its_detail(state_store: StateStore) -> None:
    record = record_change(
        state_store,
        principal="ops",
        action="forget",
        detail={"table": "customers", "key": "42", "key_id": "k7", "files": 3},
    )
    assert (record.path, record.action, record.allowed, record.sql) == (
        "govern",
        "forget",
        True,
        None,
    )
    assert record.detail == {"table": "customers", "key": "42", "key_id": "k7", "files": 3}
    assert state_store.audit.verify().intact


@pytest.mark.parametrize(
    "detail",
    [
        {"password": "x"},
        {"roles": [{"name": "bi", "token": "t"}]},
        {"master_key": "abc"},
        {"wrapped_keys": ["a"]},
        {"Secret": 1},
        {"material": b"\x00\x01"},
    ],
)
def test_a_change_never_records_a_secret(state_store: StateStore, detail: dict) -> None:
    with pytest.raises(ValueError, match="audit detail"):
        record_change(state_store, principal="ops", action="rotate", detail=detail)
    assert state_store.audit.records() == []


def test_a_password_in_a_message_is_masked(state_store: StateStore) -> None:
    record = record_change(
        state_store,
        principal="ops",
        action="apply",
        detail={"note": "connected to postgresql://admin:s3cr3t@db:5432/wh"},
    )
    assert "s3cr3t" not in str(record.detail) and "admin:***@db" in record.detail["note"]
