"""Nothing readable around the gate: every file Riverbed writes is 0600 and every folder 0700
whatever the umask, and the embedded PostgreSQL lets no one in without its generated password,
which no output shows (issue 18, item 8)."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import free_port, run_cli, write_config
from riverbed.config.loader import demo_config_text
from riverbed.source.embedded import SYSTEM_USER, _bin

SEED = ("--customers", "40", "--sellers", "5", "--products", "20", "--orders", "200")
OTHER_USER = "nobody"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that takes nothing away: modes must come from Riverbed, not from the umask."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def modes(root: Path) -> dict[str, int]:
    """The permission bits of ``root`` and of everything under it, by path relative to it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, subfolders, files in os.walk(root):
        for name in subfolders + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def loose(found: dict[str, int], root: Path) -> list[str]:
    """What is not 0600 (a file) or 0700 (a folder), but for the one exception that must be."""
    wrong = []
    for name, mode in found.items():
        path = root / name
        wanted = 0o700 if path.is_dir() else 0o600
        if name == "." and os.geteuid() == 0:
            # as root the server runs as its own account, which must pass through this folder
            # to its data: traverse only, for the server's group, which no one else is in
            wanted = 0o710
            assert path.stat().st_gid == grp.getgrnam(SYSTEM_USER).gr_gid
        if mode != wanted:
            wrong.append(f"{name}: {oct(mode)}")
    return wrong


@pytest.mark.usefixtures("loose_umask")
def test_library_writers_create_private_files_whatever_the_umask(tmp_path: Path) -> None:
    """Called directly, without the command line's umask: the lake, the state store, the
    DuckDB warehouse, the logs, the lock files."""
    from riverbed.lake.local import LocalStorage
    from riverbed.lake.lock import ProcessLock
    from riverbed.lake.parquet import write_table
    from riverbed.load.duckdb_warehouse import DuckDBWarehouse
    from riverbed.observe.logs import setup_logging
    from riverbed.state import SQLiteStore

    home = tmp_path / ".riverbed"
    write_table(LocalStorage(home / "lake"), "raw/t/date=x/a.parquet", pa.table({"a": [1]}))
    store = SQLiteStore(home / "state.db")
    store.close()
    warehouse = DuckDBWarehouse(home / "warehouse.duckdb")
    warehouse.close()
    setup_logging(home / "logs", console=False)
    logging.getLogger("riverbed.test").warning("a line")
    lock = ProcessLock(home / "capture.lock", "capture")
    try:
        found = modes(home)
    finally:
        lock.release()
        setup_logging(tmp_path / "elsewhere", console=False)
    assert {"lake/raw/t/date=x/a.parquet", "state.db", "warehouse.duckdb", "logs"} <= set(found)
    assert [
        f"{n}: {oct(m)}" for n, m in found.items() if m != (0o700 if (home / n).is_dir() else 0o600)
    ] == []


@pytest.mark.usefixtures("loose_umask")
def test_a_project_after_capture_and_run_is_private_and_its_source_asks_for_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    folder = tmp_path / "proj"
    config = write_config(folder, demo_config_text().replace("port: 54329", f"port: {port}"))
    home = folder / ".riverbed"
    outputs: list[str] = []

    def cli(*args: str) -> None:
        result = run_cli(*args, "-c", str(config))
        outputs.append(result.text)
        assert result.code == 0, result.text

    try:
        cli("source", "up")
        cli("shop", "seed", *SEED, "--months", "2", "-q")
        cli("capture", "--once", "-q")
        cli("run", "--once")
        cli("source", "status")
        found = modes(home)
        assert {"lake", "state.db", "warehouse.duckdb", "pg", "pg.pgpass", "logs"} <= {
            name.split("/")[0] for name in found
        }
        assert any(name.endswith(".parquet") for name in found)
        assert loose(found, home) == []
        password = (home / "pg.pgpass").read_text().strip().split(":")[-1]
        assert len(password) >= 32
        logs = "".join(p.read_text() for p in (home / "logs").iterdir())
        assert password not in "".join(outputs) + logs + (home / "pg.log").read_text()
        if os.geteuid() == 0:
            _another_user_gets_nothing(home, port)
    finally:
        run_cli("source", "down", "-c", str(config))


def _another_user_gets_nothing(home: Path, port: int) -> None:
    """As ``nobody``: no file of the project can be read, and the server refuses every
    connection without the password, replication included, the password file being out of
    reach too."""
    entry = pwd.getpwnam(OTHER_USER)

    def as_other(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={"PATH": os.environ["PATH"], "PGPASSFILE": str(home / "pg.pgpass")},
        )

    files = [p for p in home.rglob("*") if p.is_file()]
    assert files
    for path in files:
        read = as_other("cat", str(path))
        assert read.returncode != 0 and "Permission denied" in read.stderr, path
    listing = as_other("ls", str(home))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    psql = str(_bin("psql"))
    for conninfo in (
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres replication=database",
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres password=postgres",
    ):
        attempt = as_other(psql, "-w", "-X", "-c", "select 1", conninfo)
        assert attempt.returncode != 0, conninfo
        assert (
            "no password supplied" in attempt.stderr
            or "password authentication failed" in attempt.stderr
        ), attempt.stderr
