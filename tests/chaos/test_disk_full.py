"""The lake's disk full, then the state store's, and the lake's folder refusing permission,
under live traffic. Each is a small tmpfs
mounted for the test (tests/disk_support.py: we run as root, and `mount -t tmpfs` works here;
without root the scenario is skipped), filled by a file that takes all the room left (the
state store's leaves it 48 KB, enough to open it, not to record much), so the next write
fails with ENOSPC in the middle of a file; deleting the filler ends the fault. capture waits
it out (one "no space left" line, the capture_interrupted alarm when the state store can
record it), runs that meet it fail with a line and are followed by the next, and the
warehouse ends exact.

Permission is denied by making the lake's folders read-only; we run as root, which ignores
file permissions, so every service runs under setpriv without CAP_DAC_OVERRIDE (UNPRIVILEGED),
bound by permissions as another user would be (chattr +i would work for root too, but not on
every filesystem: tmpfs has no immutable flag)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from disk_support import UNPRIVILEGED, fill, small_tmpfs, writable

from chaos.conftest import MakeChaos
from chaos.frame import Chaos, alarm_fired, assert_exact, fault_reported
from conftest import Database

FULL = "no space left"


def full_disk_met(chaos: Chaos, disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` until capture says it is full, a moment more, then free it."""
    capture = chaos.service("capture")
    seen = capture.stderr().lower().count(FULL)
    filler = fill(disk, leave)
    try:
        chaos.wait(
            f"capture to meet the full {disk.name}",
            lambda: capture.stderr().lower().count(FULL) > seen,
            120,
        )
        time.sleep(2)
    finally:
        filler.unlink()


def test_the_lake_disk_and_the_state_store_disk_full(
    database: Database, make_chaos: MakeChaos, tmp_path: Path
) -> None:
    with (
        small_tmpfs(tmp_path / "lake_disk", "256m") as lake_disk,
        small_tmpfs(tmp_path / "state_disk", "64m") as state_disk,
    ):
        chaos = make_chaos(
            database,
            lake={"path": str(lake_disk / "lake")},
            state={"path": str(state_disk / "state.db")},
        )
        chaos.start()
        chaos.flowing()
        full_disk_met(chaos, lake_disk)
        chaos.flowing()
        full_disk_met(chaos, state_disk, leave=48 * 1024)
        chaos.flowing()
        chaos.end_workload()

        chaos.catch_up()
        fault_reported(chaos.service("capture"), r"(?i)capture interrupted: .*no space left")
        alarm_fired(chaos, "capture_interrupted")
        chaos.stop()
        chaos.no_manual_step()
        assert_exact(chaos.config, database)


def test_a_lake_folder_that_refuses_permission(database: Database, make_chaos: MakeChaos) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("denying root permission needs setpriv (and root to drop the capability)")
    chaos = make_chaos(database)
    chaos.prefix = UNPRIVILEGED
    chaos.start()
    chaos.flowing()
    capture = chaos.service("capture")
    lake = chaos.config.parent / ".riverbed" / "lake"
    writable(lake, False)
    try:
        chaos.wait(
            "capture to meet the read-only lake",
            lambda: "permission denied" in capture.stderr().lower(),
            120,
        )
        time.sleep(2)
    finally:
        writable(lake, True)
    chaos.flowing()
    chaos.end_workload()

    chaos.catch_up()
    fault_reported(capture, r"(?i)permission denied")
    chaos.stop()
    chaos.no_manual_step()
    assert_exact(chaos.config, database)
