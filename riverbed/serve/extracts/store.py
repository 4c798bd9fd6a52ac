"""Where extracts live: ``.riverbed/extracts/<generation>.duckdb`` files, never the warehouse,
and ``current``, a small JSON file naming the generation readers open.

A generation is written whole by one refresh under a name no reader knows, closed, and only
then published by replacing ``current`` atomically (a temp file, fsync, os.replace): a reader
sees the previous complete generation or the new complete one, never a half. Nobody writes a
published generation again, so readers open it read-only, any number of processes at once:
DuckDB's single-writer lock is never taken on a file a page reads, and a load, which writes the
warehouse, never waits on a page. A refresh that fails or is killed leaves ``current`` as it
was; its file is an orphan the next refresh deletes.

Superseded generations are deleted after ``GRACE_SECONDS``, and at once beyond the newest
``KEEP_SUPERSEDED``: a reader that opened one keeps it (an open file outlives its name), and
one that read ``current`` just before a switch and finds its file gone answers live
(answer.py). Each generation is a whole copy of the extract (no reflink on most filesystems),
so a 5-minute grace at ``run --every 5`` kept ~60 of them: 27 GB of a 450 MB extract.
Every file is 0600 in a 0700 folder (riverbed.private).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from riverbed.config import Project
from riverbed.private import FILE_MODE, create_private, private_folders

GRACE_SECONDS = 30.0
KEEP_SUPERSEDED = 2  # the newest superseded generations a prune spares within the grace
FICLONE = 0x40049409  # linux/fs.h: share the source's blocks, copy-on-write
POINTER = "current"
SUFFIX = ".duckdb"


@dataclass(frozen=True)
class Generation:
    """A published extract: its file's name and what it reflects."""

    name: str
    fingerprint: str  # the datasets' definitions it was built under (datasets.fingerprint)
    watermark: float  # loaded_at of the newest load it holds (state store loads)
    run_id: str | None  # the run whose publish state made it
    loaded_at: float | None  # when the warehouse data it reflects was loaded
    refreshed_at: float  # when it was published
    full: bool  # built whole (else from the previous generation and the new loads)
    # refreshes since its file's deleted cells were last reclaimed (refresh.VACUUM_EVERY)
    unvacuumed: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def folder(project: Project) -> Path:
    return project.home / "extracts"


def current(project: Project) -> Generation | None:
    """The published generation, or None when there is none (or its file is gone)."""
    try:
        data = json.loads((folder(project) / POINTER).read_text())
        found = Generation(**data)
    except (OSError, ValueError, TypeError):
        return None
    return found if path_of(project, found.name).exists() else None


def path_of(project: Project, name: str) -> Path:
    return folder(project) / f"{name}{SUFFIX}"


def new_name() -> str:
    """A generation's name: sorts by when it was made, unique across processes."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def prepare(project: Project, name: str) -> Path:
    """The path a new generation is written at: the folder made private, the file created
    empty and 0600 (DuckDB refuses an empty file: removed again, its mode proven)."""
    private_folders(folder(project))
    return path_of(project, name)


def clone(source: Path, target: Path) -> bool:
    """``target`` made a copy of ``source``: a reflink where the filesystem has them (btrfs,
    XFS: no data copied, a refresh's first step costs the same for any size of extract, and
    the new generation's writes land in blocks of its own, so the previous one stays as it
    was), else a byte copy by the kernel; True when it was a reflink.

    ``target`` is created once and never truncated: ext4 flushes a file truncated to zero
    and written again when it is closed (its auto_da_alloc guard for programs that replace
    files that way), which added the writeback of the whole extract to every refresh."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with contextlib.suppress(OSError):  # ext4, tmpfs, another device: copied
                fcntl.ioctl(dst, FICLONE, src)
                return True
            _copy_range(src, dst, os.fstat(src).st_size)
            # written to disk here, in the copy's own thread (refresh.py): the first
            # checkpoint's fsync would otherwise wait for the whole copy's writeback
            os.fdatasync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return False


def _copy_range(src: int, dst: int, size: int) -> None:
    """``size`` bytes of ``src`` into ``dst`` in the kernel: copy_file_range, else sendfile
    (another filesystem on an old kernel)."""
    copied = 0
    try:
        while copied < size:
            done = os.copy_file_range(src, dst, size - copied, copied, copied)
            if done == 0:
                break
            copied += done
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(dst, copied, os.SEEK_SET)  # copy_file_range's offsets left the position at 0
    while copied < size:
        done = os.sendfile(dst, src, copied, size - copied)
        if done == 0:
            break
        copied += done
    if copied != size:
        raise OSError(errno.EIO, f"copied {copied} of {size} bytes of the extract")


def publish(project: Project, generation: Generation) -> None:
    """Make ``generation`` the one readers open: one atomic rename of the pointer."""
    here = folder(project)
    temp = here / f".{POINTER}.{uuid.uuid4().hex[:8]}"
    descriptor = create_private(temp)
    try:
        os.write(descriptor, json.dumps(generation.as_dict()).encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temp, here / POINTER)
    with contextlib.suppress(OSError):  # the rename itself made durable where it can be
        directory = os.open(here, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def prune(
    project: Project, grace: float = GRACE_SECONDS, keep_superseded: int = KEEP_SUPERSEDED
) -> list[str]:
    """Delete every generation file but the current one, except the newest ``keep_superseded``
    last changed less than ``grace`` seconds ago (superseded ones, and orphans of failed or
    killed refreshes), with their DuckDB side files and stale pointer temps; the names
    deleted."""
    here = folder(project)
    if not here.is_dir():
        return []
    keep = current(project)
    cutoff = time.time() - grace
    found: list[tuple[float, Path]] = []
    for path in here.iterdir():
        if keep is not None and path.name.startswith(keep.name):
            continue
        if not (SUFFIX in path.name or path.name.startswith(f".{POINTER}.")):
            continue
        with contextlib.suppress(FileNotFoundError):
            found.append((path.stat().st_mtime, path))
    # the newest young ones (names sort by when they were made); a generation's side files
    # (.wal) go with it
    young = sorted(
        (p.name for t, p in found if p.name.endswith(SUFFIX) and t > cutoff), reverse=True
    )
    spared = set(young[:keep_superseded])
    deleted = []
    for changed, path in found:
        owner = path.name.split(SUFFIX)[0] + SUFFIX if SUFFIX in path.name else None
        if owner in spared or (owner is None and changed > cutoff):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted.append(path.name)
    return deleted
