"""Files only their owner can read: every file Riverbed writes is created 0600, every folder 0700.

The lake holds clear emails and phone numbers, the warehouse and the state store copies of
them, the logs the SQL that touched them: none of it is for the other accounts of the machine.

Two layers, because neither covers everything alone:

- **Explicit modes where Riverbed creates a file or folder** (this module): ``private_folders``
  for every folder a writer makes, ``create_private`` for the files it opens itself (lake files
  and their temp files, log files, the lock files, the pii key, the embedded server's secret),
  ``private_file`` for a database file an engine opens (the SQLite state store is created empty
  and 0600 before SQLite opens it, and SQLite gives its -wal and -shm the mode of the database
  file). This holds whatever the umask, and for a library user who calls Riverbed's functions
  without the command line.
- **A umask of 077 for the command line's process** (``restrict_umask``, called once at its
  start): it covers the files an engine creates on its own, which no argument reaches: DuckDB
  creates ``warehouse.duckdb`` (it refuses an empty file made for it, so the file is tightened
  right after it opens) and its ``.wal`` with the umask's mode; the child processes the
  command line starts (Spark's JVM, a notifier's command) inherit it.

For a library user the DuckDB ``.wal`` is the one file left to the process's umask; it lives in
a folder this module made 0700, which no other account can enter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FILE_MODE = 0o600
FOLDER_MODE = 0o700
PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    """Make every file this process (and its children) creates from now on private."""
    os.umask(PRIVATE_UMASK)


def private_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents 0700; folders that exist are left as they are
    (they may be the user's own, or shared on purpose)."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # another writer made it first
            continue
        path.chmod(FOLDER_MODE)  # mkdir's mode passes through the umask; this one does not


def create_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """Open ``path`` with ``flags``, creating it 0600 if it is new; returns the descriptor."""
    descriptor = os.open(path, flags, FILE_MODE)
    if flags & os.O_CREAT:
        os.fchmod(descriptor, FILE_MODE)  # the umask may have taken bits off, never added
    return descriptor


def open_private(path: Path, mode: str, **kwargs: Any) -> Any:
    """``open(path, mode)`` for the modes that create a file ("a", "w", "x", with "b" or "+"),
    a new file being created 0600 and an existing one tightened to 0600."""

    def opener(name: str, flags: int) -> int:
        return create_private(Path(name), flags)

    return open(path, mode, opener=opener, **kwargs)  # noqa: SIM115 - the caller closes it


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist, or tighten it to 0600 if it does:
    for a database file an engine is about to open."""
    private_folders(path.parent)
    os.close(create_private(path, os.O_WRONLY | os.O_CREAT))
