"""The lake in a local folder.

A write goes to ``.name.<hex>.tmp`` in the target's folder, is fsynced, then renamed over the
target with ``os.replace`` (atomic within one file system) and the folder is fsynced, so after
a crash or power loss a path holds the old file or the complete new one, never a torn one.
A crash before the rename leaves only the dot-named temp file, which no listing shows.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow.fs as pafs

from riverbed.lake.storage import check_path, check_prefix, is_hidden, temp_path, translating
from riverbed.private import FOLDER_MODE, open_private

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto


class LocalStorage:
    """A lake rooted at a local folder (created on first write)."""

    crypto: LakeCrypto | None = None  # set by open_storage

    def __init__(self, root: Path):
        self.root = root.absolute()
        self.url = str(self.root)

    def write_atomic(self, path: str, data: bytes) -> None:
        with self.open_atomic(path) as sink:
            sink.write(data)

    @contextmanager
    def open_atomic(self, path: str) -> Iterator[BinaryIO]:
        target = self._file(path)
        with translating(self.url, path, "writing"):
            _make_folders(target.parent)
            temp = self.root / temp_path(path)
            sink = open_private(temp, "xb")
        try:
            with translating(self.url, path, "writing"):  # the caller's writes: a full disk
                yield sink
            with translating(self.url, path, "writing"):
                # A ParquetWriter may close its sink; fsync through a fresh descriptor then.
                if sink.closed:
                    with open(temp, "rb") as again:
                        os.fsync(again.fileno())
                else:
                    sink.flush()
                    os.fsync(sink.fileno())
                    sink.close()
                os.replace(temp, target)
                _fsync_folder(target.parent)
        except BaseException:
            with suppress(OSError):
                sink.close()
            with suppress(OSError):
                temp.unlink(missing_ok=True)
            raise

    def read(self, path: str) -> bytes:
        with translating(self.url, path, "reading"):
            return self._file(path).read_bytes()

    def open_input(self, path: str) -> Any:
        with translating(self.url, path, "opening"):
            return pafs.LocalFileSystem().open_input_file(str(self._file(path)))

    def exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = check_prefix(prefix)
        top = self.root / prefix if prefix else self.root
        found: builtins.list[str] = []
        with translating(self.url, prefix, "listing"):
            for folder, subfolders, files in os.walk(top, onerror=_raise):
                subfolders[:] = [name for name in subfolders if not name.startswith(".")]
                base = Path(folder).relative_to(self.root)
                found.extend((base / name).as_posix() for name in files if not is_hidden(name))
        return sorted(found)

    def delete(self, path: str) -> None:
        target = self._file(path)
        with translating(self.url, path, "deleting"):
            target.unlink(missing_ok=True)
            if target.parent.is_dir():
                _fsync_folder(target.parent)

    def rename(self, src: str, dst: str) -> None:
        source, target = self._file(src), self._file(dst)
        with translating(self.url, src, f"moving to {dst}"):
            _make_folders(target.parent)
            os.replace(source, target)
            _fsync_folder(target.parent)
            if source.parent != target.parent:
                _fsync_folder(source.parent)

    def arrow_filesystem(self) -> tuple[Any, str]:
        return pafs.LocalFileSystem(), self.root.as_posix()

    def _file(self, path: str) -> Path:
        return self.root / check_path(path)


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents, making each new entry durable."""
    if folder.is_dir():
        return
    _make_folders(folder.parent)
    try:
        folder.mkdir(mode=FOLDER_MODE)
    except FileExistsError:  # another writer created it first
        return
    folder.chmod(FOLDER_MODE)  # mkdir's mode passes through the umask
    _fsync_folder(folder.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _raise(exc: OSError) -> None:
    # os.walk swallows errors by default; a missing top folder is an empty listing, the rest
    # (permissions, I/O) must surface.
    if not isinstance(exc, FileNotFoundError):
        raise exc
