"""Disks that fill up or refuse, for the tests of disk faults (test_disk_errors, tests/chaos):
a small tmpfs mounted for the test (root only: skipped elsewhere, or where mounting is not
allowed), a file that takes all the room left on it, a remount to resize it; folders made
read-only, and the command prefix that makes root obey that (without CAP_DAC_OVERRIDE root
ignores file permissions)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` (made) with a tmpfs of ``size`` (mount's size=, e.g. 1m) mounted on it,
    unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(disk: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """A file taking all the room left on ``disk`` but ``leave`` bytes."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as sink, contextlib.suppress(OSError):
        while True:
            sink.write(b"\0" * 4096)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def writable(folder: Path, yes: bool) -> None:
    """``folder`` and every folder under it writable again, or read-only."""
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        path.chmod(0o755 if yes else 0o555)


_CAPS = "-dac_override,-dac_read_search"
# a process run under this is bound by file permissions, as a user other than root would be
UNPRIVILEGED = ("setpriv", f"--bounding-set={_CAPS}", f"--inh-caps={_CAPS}")
