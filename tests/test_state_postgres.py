"""What the PostgreSQL state store adds to the contract (tests/test_state_contract*.py): its
schema is its own, and a connection the server dropped is opened again."""

from __future__ import annotations

import psycopg
import pytest

from conftest import Database
from riverbed.errors import ErrorClass, RiverbedError
from riverbed.state import LakeFile
from riverbed.state.postgres import PostgresStore

FILE = LakeFile(
    path="raw/orders/a.parquet",
    stage="raw",
    table="orders",
    rows=5,
    bytes=100,
    min_lsn=10,
    max_lsn=20,
    schema_version=1,
)


def test_two_schemas_are_two_stores(state_database: Database, pg_state: tuple[str, str]) -> None:
    dsn, schema = pg_state
    one = PostgresStore(dsn, schema)
    two = PostgresStore(dsn, schema + "_b")
    try:
        one.capture.commit("s", [FILE], 20)
        assert two.lake.files("raw") == [] and two.capture.position("s") is None
        assert PostgresStore(dsn, schema).capture.position("s") == 20  # opened again: kept
    finally:
        one.close()
        two.close()
        with state_database.connect(autocommit=True) as conn:
            conn.execute(f"drop schema {schema}_b cascade")


def test_a_dropped_connection_is_a_transient_error_then_opened_again(
    state_database: Database, pg_state: tuple[str, str]
) -> None:
    store = PostgresStore(*pg_state)
    try:
        store.capture.commit("s", [FILE], 20)
        with state_database.connect(autocommit=True) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = current_database() and pid <> pg_backend_pid()"
            )
        try:
            store.capture.position("s")
        except RiverbedError as exc:  # the statement that found it gone
            assert exc.error_class == ErrorClass.TRANSIENT
            assert isinstance(exc.__cause__, psycopg.OperationalError)
        assert store.capture.position("s") == 20
        store.capture.commit("s", [], 30)
        assert store.capture.position("s") == 30
    finally:
        store.close()


def test_a_server_that_cannot_be_reached_is_one_line_naming_the_keys() -> None:
    with pytest.raises(RiverbedError) as failed:
        PostgresStore("host=127.0.0.1 port=1 dbname=nowhere user=riverbed connect_timeout=2")
    text = str(failed.value)
    assert "cannot connect to the state store postgresql://riverbed@127.0.0.1:1/nowhere" in text
    assert "state.dsn and state.password" in text
    assert failed.value.error_class == ErrorClass.TRANSIENT
