"""Shared fixtures: one real embedded PostgreSQL for the session, fresh databases per test,
and a helper that runs the ``riverbed`` command line as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from riverbed.config.source import EmbeddedSourceConfig
from riverbed.source.embedded import EmbeddedServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Database:
    name: str
    dsn: str

    def connect(self, autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=autocommit)


def run_sql(database: Database, *statements: str) -> None:
    """Each statement in its own transaction (its own commit time)."""
    with database.connect(autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def superuser_password(server: EmbeddedServer) -> str:
    """The embedded server's generated superuser password, for a test that must type it."""
    from riverbed.source.secret import read_or_create

    return read_or_create(server.password_file, "postgres")


def _embedded_server(folder: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(folder / "pg", EmbeddedSourceConfig(port=free_port()))
    server.up()
    try:
        yield server
    finally:
        server.down()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A real PostgreSQL 18 with wal_level=logical, shared by the whole session."""
    yield from _embedded_server(tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="session")
def shop_source(pg_server: EmbeddedServer) -> Iterator[Database]:
    """The demo shop's source database of shop_history."""
    yield from _fresh_database(pg_server)


@pytest.fixture(scope="session")
def shop_warehouse(pg_server: EmbeddedServer) -> Iterator[Database]:
    """shop_history's PostgreSQL warehouse."""
    yield from _fresh_database(pg_server)


@pytest.fixture(scope="session")
def shop_history(
    shop_source: Database, shop_warehouse: Database, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The demo shop with a history and live changes, loaded into a DuckDB and a PostgreSQL
    warehouse (tests/shop_support.py), by engine: once for every test that reads charts."""
    from shop_support import shop_projects

    return shop_projects(tmp_path_factory.mktemp("shop"), shop_source, shop_warehouse)


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A PostgreSQL of the test's own, for tests that stop and restart the source: the session
    server is shared by every test and must keep running."""
    yield from _embedded_server(tmp_path_factory.mktemp("own_pg"))


@pytest.fixture
def own_database(own_server: EmbeddedServer) -> Database:
    """A database on ``own_server``."""
    with psycopg.connect(own_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create database riverbed_test")
    return Database("riverbed_test", own_server.dsn("riverbed_test"))


@pytest.fixture
def database(pg_server: EmbeddedServer) -> Iterator[Database]:
    """A fresh, empty database on the session server, dropped afterwards."""
    yield from _fresh_database(pg_server)


@pytest.fixture
def warehouse_database(pg_server: EmbeddedServer) -> Iterator[Database]:
    """A second fresh database on the session server: a PostgreSQL warehouse beside the
    source ``database``."""
    yield from _fresh_database(pg_server)


def _fresh_database(pg_server: EmbeddedServer) -> Iterator[Database]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    yield Database(name, pg_server.dsn(name))
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"drop database {name} with (force)")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server for the session, in its own process: pyarrow's S3 calls run outside
    the GIL and would deadlock against an in-process server thread. Yields its endpoint."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def s3_bucket(endpoint: str, bucket: str, key: str, secret: str) -> None:
    """Create ``bucket`` on the test S3 server."""
    import pyarrow.fs as pafs

    pafs.S3FileSystem(
        access_key=key,
        secret_key=secret,
        endpoint_override=endpoint.removeprefix("http://"),
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    ).create_dir(bucket)


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "riverbed.yaml"
    path.write_text(text)
    return path


def external_config(folder: Path, database: Database) -> Path:
    """A riverbed.yaml whose source is ``database`` on the session server."""
    return write_config(folder, f'source:\n  dsn: "{database.dsn}"\n')


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def start_cli(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    """Start ``riverbed ARGS`` in the background, as a user would in another terminal: output
    piped as text (unless ``popen`` says otherwise), no input."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen(
        [sys.executable, "-m", "riverbed", *args],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        text=True,
        **options,
    )


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> CliResult:
    """Run ``riverbed ARGS`` in a subprocess, exactly as a user types it."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "riverbed", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# every implementation of the state store runs the contract tests (tests/test_state_contract*.py)
STATE_STORES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def state_database(pg_server: EmbeddedServer) -> Iterator[Database]:
    """The database the PostgreSQL state stores of the session live in, a schema each."""
    yield from _fresh_database(pg_server)


@pytest.fixture
def pg_state(state_database: Database) -> Iterator[tuple[str, str]]:
    """A PostgreSQL state store's place of the test's own: (conninfo, a fresh schema), the
    schema dropped afterwards."""
    schema = f"state_{uuid.uuid4().hex[:12]}"
    yield state_database.dsn, schema
    with state_database.connect(autocommit=True) as conn:
        conn.execute(f"drop schema if exists {schema} cascade")


@pytest.fixture(params=STATE_STORES)
def state_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty state store of each implementation (riverbed.state.store.StateStore)."""
    from riverbed.state import SQLiteStore
    from riverbed.state.postgres import PostgresStore

    store: Any
    if request.param == "postgres":
        store = PostgresStore(*request.getfixturevalue("pg_state"))
    else:
        store = SQLiteStore(tmp_path / "state.db")
    try:
        yield store
    finally:
        store.close()


def store_place(store: Any) -> tuple[str, ...]:
    """Where a state store of the contract tests is: ("sqlite", path) or ("postgres",
    conninfo, schema), the arguments of ``open_place`` (in another process, say)."""
    from riverbed.state import SQLiteStore

    if isinstance(store, SQLiteStore):
        return ("sqlite", str(store.path))
    return ("postgres", store.conninfo, store.schema)


def open_place(engine: str, *where: str) -> Any:
    """The state store at a ``store_place``."""
    from riverbed.state import SQLiteStore
    from riverbed.state.postgres import PostgresStore

    return SQLiteStore(Path(where[0])) if engine == "sqlite" else PostgresStore(*where)


def reopen_store(store: Any) -> Any:
    """A second store on the same file or schema, as another process would open it."""
    return open_place(*store_place(store))


def capture_and_run(config: Path) -> dict[str, Any]:
    """`capture --once` then `run --once` on ``config``, both succeeding: the run's report."""
    import json

    captured = run_cli("capture", "--once", "-q", "-c", str(config))
    assert captured.code == 0, captured.text
    ran = run_cli("run", "--once", "--json", "-c", str(config))
    assert ran.code == 0, ran.text
    return json.loads(ran.out)  # type: ignore[no-any-return]
