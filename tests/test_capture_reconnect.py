"""`capture --follow` survives a lost replication connection: it reconnects with backoff and
resumes exactly from the lake's committed position, so nothing is lost or doubled."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from capture_support import capture_config

from conftest import Database, run_cli, start_cli
from riverbed.config import load_project
from riverbed.lake.manifest import Manifest

TABLES = "source:\n  schema: r\n"


def raw_rows(config: Path) -> list[int]:
    project = load_project(config)
    manifest = Manifest(project.path(project.config.state.path))
    try:
        import pyarrow.parquet as pq

        ids: list[int] = []
        for file in manifest.files("raw", "items"):
            table = pq.read_table(project.path("lake") / file.path, columns=["id", "_op"])
            ids += [i for i, op in zip(*table.to_pydict().values()) if op in ("I", "L")]
        return sorted(ids)
    finally:
        manifest.close()


def wait_for(
    condition: object, what: str, proc: subprocess.Popen[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            raise AssertionError(f"capture exited while waiting for {what}: {proc.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_follow_reconnects_after_the_connection_is_killed(
    database: Database, tmp_path: Path
) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema r; create table r.items (id int primary key, name text)")
        conn.execute("insert into r.items select g, 'x' from generate_series(1, 10) g")
    text = capture_config(tmp_path, database).read_text()
    config = tmp_path / "riverbed.yaml"
    config.write_text(text.replace("source:\n  dsn:", "source:\n  schema: r\n  dsn:"))
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    proc = start_cli("capture", "--follow", "-c", str(config))
    try:
        with database.connect(autocommit=True) as conn:
            conn.execute("insert into r.items select g, 'y' from generate_series(11, 20) g")
            wait_for(lambda: len(raw_rows(config)) == 20, "the first changes", proc)
            killed = conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where backend_type = 'walsender' and datname = current_database()"
            ).fetchall()
            assert killed and all(k[0] for k in killed)
            conn.execute("insert into r.items select g, 'z' from generate_series(21, 30) g")
            wait_for(lambda: len(raw_rows(config)) >= 30, "changes after the reconnect", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "reconnecting" in err
    assert raw_rows(config) == list(range(1, 31))  # nothing lost, nothing twice
