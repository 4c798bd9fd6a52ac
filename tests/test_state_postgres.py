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


def test_a_store_from_before_commit_times_opens_and_keeps_its_files(
    state_database: Database, pg_state: tuple[str, str]
) -> None:
    dsn, schema = pg_state
    with state_database.connect(autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
        conn.execute(
            f"create table {schema}.lake_files (path text primary key, stage text not null,"
            " table_name text not null, rows bigint not null, bytes bigint not null, min_lsn"
            " bigint not null, max_lsn bigint not null, schema_version bigint not null,"
            " full_load bigint not null default 0, slot text, created_at double precision"
            " not null)"
        )
        conn.execute(
            f"insert into {schema}.lake_files values"
            " ('raw/orders/old.parquet', 'raw', 'orders', 1, 1, 100, 100, 1, 0, 's', 0)"
        )
    store = PostgresStore(dsn, schema)
    try:
        (old,) = store.lake.files("raw", "orders")
        assert (old.path, old.min_commit_ts, old.max_commit_ts) == (
            "raw/orders/old.parquet",
            None,
            None,
        )
        store.lake.add([FILE])
        assert [f.path for f in store.lake.files("raw")] == [FILE.path, old.path]
    finally:
        store.close()


def test_opening_a_made_store_waits_for_no_writer(pg_state: tuple[str, str]) -> None:
    """A store made once is opened without its writer lock: a scrape or a status while a long
    write transaction is open does not wait for it."""
    dsn, schema = pg_state
    PostgresStore(dsn, schema).close()
    writer = PostgresStore(dsn, schema)
    try:
        with writer.transaction():
            writer.capture.commit("s", [FILE], 20)
            reader = PostgresStore(dsn + " options='-c lock_timeout=2000'", schema)
            assert reader.capture.position("s") is None  # not committed yet
            reader.close()
    finally:
        writer.close()
