"""A lake (or state store) disk that fills up, turns read-only or refuses permission while
`riverbed capture` writes to it, and a malformed replication stream: one line naming the
path (or message) and the fix, exit 1, never a traceback; and once the trouble is gone, the
next capture takes up where the manifest says, every change exactly once.

The disk is a small tmpfs mounted for the test (root only; skipped elsewhere). Permission is
denied by taking write permission off the lake's folders; root, which ignores permissions,
runs the failing capture without CAP_DAC_OVERRIDE (setpriv)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from capture_support import lake_changes
from disk_support import UNPRIVILEGED, fill, remount, small_tmpfs, writable

from conftest import Database, run_cli, start_cli

ROWS = 3000
CUT_ROWS = 30_000  # the lost-connection test's insert
# about 1 KB of hex per row that zstd cannot squeeze much: 3000 rows are far more than 512 KB
INSERT = (
    "insert into w.notes select g, (select string_agg(md5(random()::text || g || i), '')"
    " from generate_series(1, 32) i) from generate_series({first}, {last}) g"
)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (room for the state store with every stage's tables and its write-ahead
    log, not much more)."""
    with small_tmpfs(tmp_path / "disk", "1m") as folder:
        yield folder


def capture(
    config: Path, *, unprivileged: bool = False, command: str = "capture"
) -> subprocess.CompletedProcess[str]:
    """`riverbed capture --once` (or another ``command`` with --once); ``unprivileged``: as a
    user whom file permissions bind (root without CAP_DAC_OVERRIDE)."""
    prefix: tuple[str, ...] = ()
    if unprivileged and os.geteuid() == 0:
        prefix = UNPRIVILEGED
    return subprocess.run(
        [*prefix, sys.executable, "-m", "riverbed", command, "--once", "-q", "-c", str(config)],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def notes_project(
    database: Database, disk: Path, tmp_path: Path, *, state_on_disk: bool = False
) -> Path:
    """A project capturing table w.notes into a lake on ``disk`` (with ``state_on_disk``: its
    state store there, the lake beside the config), its first 10 rows captured, the rest of
    ROWS inserted since."""
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema w; create table w.notes (id int primary key, body text)")
    lake, state = disk / "lake", tmp_path / "state.db"
    if state_on_disk:
        lake, state = tmp_path / "lake", disk / "state.db"
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: w_{uuid.uuid4().hex[:8]}\n'
        f"lake:\n  path: {lake}\n  max_rows: 500\nstate:\n  path: {state}\n"
        "tables:\n  notes:\n    kind: dimension\n    target: dim_note\n    keys: [id]\n"
        "    tracked: [body]\n"
    )
    with database.connect(autocommit=True) as conn:
        conn.execute(INSERT.format(first=1, last=10))
    first = run_cli("capture", "--once", "-q", "-c", str(config))
    assert first.code == 0, first.text
    with database.connect(autocommit=True) as conn:
        conn.execute(INSERT.format(first=11, last=ROWS))
    return config


def first_notes_captured(database: Database, tmp_path: Path) -> Path:
    """A project capturing table w.notes (lake and state store beside riverbed.yaml), its
    first 10 rows captured."""
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema w; create table w.notes (id int primary key, body text)")
        conn.execute(INSERT.format(first=1, last=10))
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: w_{uuid.uuid4().hex[:8]}\n'
        "lake:\n  path: lake\nstate:\n  path: state.db\n"
    )
    first = run_cli("capture", "--once", "-q", "-c", str(config))
    assert first.code == 0, first.text
    return config


def captured_ids(config: Path) -> list[int]:
    return sorted(c["id"] for c in lake_changes(config, "notes"))


@pytest.mark.parametrize("trouble", ["full", "read-only", "denied"])
def test_a_broken_lake_disk_is_one_line_and_the_next_capture_takes_every_change_once(
    database: Database, disk: Path, tmp_path: Path, trouble: str
) -> None:
    config = notes_project(database, disk, tmp_path)
    lake = disk / "lake"
    if trouble != "full":
        remount(disk, "size=64m")  # room enough: only the trouble under test stops capture
    if trouble == "read-only":
        remount(disk, "ro")
    elif trouble == "denied":
        writable(lake, False)
    failed = capture(config, unprivileged=trouble == "denied")
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert str(lake) in line
    assert {
        "full": "no space left",
        "read-only": "read-only",
        "denied": "permission denied",
    }[trouble] in line
    assert "lake.path" in line  # the fix names the setting

    if trouble == "full":
        remount(disk, "size=64m")
    elif trouble == "read-only":
        remount(disk, "rw")
    else:
        writable(lake, True)
    again = run_cli("capture", "--once", "-q", "-c", str(config))
    assert again.code == 0, again.text
    assert captured_ids(config) == list(range(1, ROWS + 1))


@pytest.mark.parametrize("trouble", ["full", "fills up", "read-only"])
def test_a_broken_state_store_disk_is_one_line_and_the_next_capture_takes_every_change_once(
    database: Database, disk: Path, tmp_path: Path, trouble: str
) -> None:
    config = notes_project(database, disk, tmp_path, state_on_disk=True)
    filler = disk / "filler"
    if trouble != "read-only":
        # "fills up": room to open the store, not to record what is captured
        fill(disk, leave=48 * 1024 if trouble == "fills up" else 0)
    else:
        remount(disk, "ro")
    failed = capture(config)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert str(disk / "state.db") in line and "state.path" in line
    assert {"full": "no space left", "fills up": "no space left", "read-only": "writable"}[
        trouble
    ] in line

    if trouble != "read-only":
        filler.unlink()
    else:
        remount(disk, "rw")
    again = run_cli("capture", "--once", "-q", "-c", str(config))
    assert again.code == 0, again.text
    assert captured_ids(config) == list(range(1, ROWS + 1))


@pytest.mark.parametrize("where", ["lake", "state"])
def test_follow_waits_out_a_full_disk_and_resumes_exactly_once(
    database: Database, disk: Path, tmp_path: Path, where: str
) -> None:
    config = notes_project(database, disk, tmp_path, state_on_disk=where == "state")
    if where == "state":
        filler = fill(disk, leave=48 * 1024)  # room to open the store, not to record much
    log = tmp_path / "follow.err"
    with log.open("w") as err:
        follower = start_cli(
            "capture", "--follow", "-c", str(config), stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 120
        while "no space left" not in log.read_text():
            assert follower.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "Traceback" not in log.read_text()
        if where == "state":
            filler.unlink()
        else:
            remount(disk, "size=64m")
        while captured_ids(config) != list(range(1, ROWS + 1)):
            assert follower.poll() is None, log.read_text()
            assert time.monotonic() < deadline + 120, captured_ids(config)[-5:]
            time.sleep(0.5)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(60)
    assert follower.returncode == 0, log.read_text()
    assert captured_ids(config) == list(range(1, ROWS + 1))


# `riverbed ARGS` whose replication stream arrives damaged: every Insert's first column kind
# byte replaced ("column kind"), or every Begin cut short ("truncated")
DAMAGED = """
import sys
from riverbed.capture.stream import ChangeStream

damage = sys.argv.pop(1)
original = ChangeStream._handle

def handle(self, buf):
    if damage == "column kind" and buf[:1] == b"I":
        buf = buf[:8] + b"x" + buf[9:]
    elif damage == "truncated" and buf[:1] == b"B":
        buf = buf[:5]
    original(self, buf)

ChangeStream._handle = handle
from riverbed.cli import main
sys.argv[0] = "riverbed"
main()
"""


@pytest.mark.parametrize("damage", ["column kind", "truncated"])
def test_a_malformed_replication_stream_is_one_line_and_loses_nothing(
    database: Database, tmp_path: Path, damage: str
) -> None:
    config = first_notes_captured(database, tmp_path)
    with database.connect(autocommit=True) as conn:
        conn.execute(INSERT.format(first=11, last=100))
    damaged = subprocess.run(
        [sys.executable, "-c", DAMAGED, damage, "capture", "--once", "-q", "-c", str(config)],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert damaged.returncode == 1, damaged.stderr
    assert "Traceback" not in damaged.stderr
    [line] = damaged.stderr.strip().splitlines()
    assert "replication stream" in line and "pgoutput" in line, line
    again = run_cli("capture", "--once", "-q", "-c", str(config))
    assert again.code == 0, again.text
    assert captured_ids(config) == list(range(1, 101))


# `riverbed ARGS` whose replication connection the source ends (pg_terminate_backend) when the
# first Insert of the stream arrives
CUT_OFF = """
import sys
import psycopg
from riverbed.capture.stream import ChangeStream

dsn = sys.argv.pop(1)
original = ChangeStream._handle
done = []

def handle(self, buf):
    if buf[:1] == b"I" and not done:
        done.append(1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where backend_type = 'walsender' and datname = current_database()"
            )
    original(self, buf)

ChangeStream._handle = handle
from riverbed.cli import main
sys.argv[0] = "riverbed"
main()
"""


def test_a_lost_source_connection_during_capture_once_is_one_line_and_loses_nothing(
    database: Database, tmp_path: Path
) -> None:
    config = first_notes_captured(database, tmp_path)
    with database.connect(autocommit=True) as conn:
        # more than a socket buffer, also in binary form (3,000 rows fit there: the stream
        # then read the commit before it saw the connection gone, and nothing was cut)
        conn.execute(INSERT.format(first=11, last=CUT_ROWS))
    cut = subprocess.run(
        [sys.executable, "-c", CUT_OFF, database.dsn, "capture", "--once", "-q", "-c", str(config)],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cut.returncode == 1, cut.stderr
    assert "Traceback" not in cut.stderr
    [line] = cut.stderr.strip().splitlines()
    assert "source" in line or "connection" in line or "server" in line, line
    again = run_cli("capture", "--once", "-q", "-c", str(config))
    assert again.code == 0, again.text
    assert captured_ids(config) == list(range(1, CUT_ROWS + 1))


@pytest.mark.parametrize("command", ["capture", "run"])
def test_a_project_folder_that_cannot_be_written_is_one_line(
    database: Database, tmp_path: Path, command: str
) -> None:
    """Riverbed's lock files and logs go beside riverbed.yaml: creating their folder raised a
    PermissionError."""
    with database.connect(autocommit=True) as conn:
        conn.execute("create schema w; create table w.notes (id int primary key, body text)")
        conn.execute(INSERT.format(first=1, last=10))
    folder = tmp_path / "project"
    folder.mkdir()
    config = folder / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: w_{uuid.uuid4().hex[:8]}\n'
        f"lake:\n  path: {tmp_path / 'lake'}\nstate:\n  path: {tmp_path / 'state.db'}\n"
    )
    folder.chmod(0o555)
    failed = capture(config, unprivileged=True, command=command)
    folder.chmod(0o755)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert str(folder / ".riverbed") in line and "writable" in line
    again = run_cli("capture", "--once", "-q", "-c", str(config))
    assert again.code == 0, again.text
    assert captured_ids(config) == list(range(1, 11))
