"""Where lake files live: one small protocol, a local folder and S3-compatible implementations.

Every write is atomic: an object is visible complete or not at all, so a reader (or a stage
rerun after a crash) never sees half a file. In-flight writes use names that start with ``.``
next to their target; :meth:`LakeStorage.list` never shows such names, and
``pyarrow.dataset`` ignores them by default, so a path component starting with ``.`` is
reserved and refused.

Errors from the libraries below (``OSError`` from the OS and from pyarrow's S3 client) are
translated here, once, into::

    RiverbedError
    └── LakeError           a lake operation failed; its ``error_class`` says whether a retry
        │                   may help (TRANSIENT: a full disk, an object store not answering)
        └── LakeFileMissing the file does not exist (also a FileNotFoundError)
"""

from __future__ import annotations

import builtins
import errno
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from riverbed.config.stores import LakeConfig
from riverbed.errors import RiverbedError

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto


class LakeError(RiverbedError):
    """A lake read or write failed; made with ``transient=True`` when retrying later may
    succeed (RiverbedError's ``error_class``)."""


class LakeFileMissing(LakeError, FileNotFoundError):
    """The file asked for does not exist in the lake."""


class LakeStorage(Protocol):
    """A folder of files addressed by '/'-separated paths relative to the lake root."""

    url: str  # the lake root as the user wrote it, for messages
    # how its Parquet files are encrypted (lake.encryption), None when they are not; only
    # riverbed.lake.parquet uses it
    crypto: LakeCrypto | None

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path``, replacing any file there; visible complete or not at all."""
        ...

    def open_atomic(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A binary sink for streaming a large file (e.g. a ParquetWriter's ``where``).

        The file becomes visible at ``path`` only when the with-block exits cleanly; on an
        exception nothing is left visible and the exception propagates.
        """
        ...

    def read(self, path: str) -> bytes:
        """The whole file; raises LakeFileMissing when it does not exist."""
        ...

    def open_input(self, path: str) -> Any:
        """A random-access ``pyarrow.NativeFile`` (e.g. for ``pyarrow.parquet.ParquetFile``)."""
        ...

    def exists(self, path: str) -> bool:
        """Whether a (complete) file exists at ``path``."""
        ...

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Paths of all files under the folder ``prefix``, recursively, sorted; never in-flight
        writes. A missing folder lists as empty."""
        ...

    def delete(self, path: str) -> None:
        """Remove the file; a missing file is not an error."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Move a file, replacing ``dst``. Local: one atomic rename. S3: copy then delete, so
        after a crash both may exist (``dst`` is always complete)."""
        ...

    def arrow_filesystem(self) -> tuple[Any, str]:
        """``(pyarrow.fs.FileSystem, base path)`` of the lake root, for ``pyarrow.dataset``."""
        ...


def open_storage(lake: LakeConfig, root: Path) -> LakeStorage:
    """The storage ``lake.path`` names: ``s3://bucket/prefix``, or a local folder (a relative
    one is resolved against ``root``, the project folder). Nothing is written until first use;
    a local path that is a file is refused here, where the message can name ``lake.path``."""
    storage = _storage(lake, root)
    if lake.encryption.enabled:  # pyarrow's encryption module alone takes a quarter second
        from riverbed.lake.crypto import crypto_for

        storage.crypto = crypto = crypto_for(lake.encryption, root)
        keyring = getattr(crypto.keys, "path", None) if crypto is not None else None
        if isinstance(keyring, Path) and not keyring.exists():
            _refuse_orphaned_files(storage, keyring)
    return storage


# the last bytes of a Parquet file whose footer is encrypted ("PAR1" when it is not)
_ENCRYPTED_MAGIC = b"PARE"
_CHECKED_FILES = 200  # the newest, by name (their paths begin with their date and hour)


def _refuse_orphaned_files(storage: LakeStorage, keyring: Path) -> None:
    """Refuse to make a new keyring for a lake that holds files encrypted with a lost one: new
    files would land under new keys while the old ones could never be read (or erased) again.
    A lake written unencrypted so far, or an empty one, gets its keyring on first write."""
    parquet = sorted(p for p in storage.list("") if p.endswith(".parquet"))[-_CHECKED_FILES:]
    for path in reversed(parquet):
        try:
            with storage.open_input(path) as file:
                size = file.size()
                if size < 4:
                    continue
                file.seek(size - 4)
                tail = file.read(4)
        except (OSError, LakeError):
            continue  # unreadable for other reasons: the reader says so where it matters
        if tail == _ENCRYPTED_MAGIC:
            raise LakeError(
                f"lake.encryption: the keyring {keyring} is missing, and the lake holds files "
                f"encrypted with it (e.g. {path}): restore the keyring from its backup, or "
                "point lake.encryption.keyring at it; nothing was written"
            )


def _storage(lake: LakeConfig, root: Path) -> LakeStorage:
    if lake.path.startswith("s3://"):
        from riverbed.lake.s3 import S3Storage

        return S3Storage.from_config(lake)
    from riverbed.lake.local import LocalStorage

    folder = Path(lake.path).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    # the folder may not exist yet (it is created on first write), but none of it may be a file
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "it" if existing == folder else str(existing)
        raise LakeError(
            f"lake.path: {folder} must be a folder, but {what} is a file; set lake.path to a "
            "folder (it is created if missing)"
        )
    return LocalStorage(folder)


# --- paths shared by the implementations ---------------------------------------------------


def check_path(path: str) -> str:
    """``path`` if it is a plain relative file path inside the lake, else ValueError."""
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise ValueError(
            f"lake path {path!r} must be relative, '/'-separated, without empty, '.' or '..' "
            "parts, and no part may start with '.' (reserved for in-flight writes)"
        )
    return path


def check_prefix(prefix: str) -> str:
    """A folder prefix for listing, without its trailing '/'; '' is the lake root."""
    prefix = prefix.rstrip("/")
    return check_path(prefix) if prefix else ""


def is_hidden(relative: str) -> bool:
    """Whether a listed path is an in-flight write (or other dot-file) that callers never see."""
    return any(part.startswith(".") for part in relative.split("/"))


def temp_path(path: str) -> str:
    """A unique in-flight name in the same folder as ``path``: ``dir/.name.<hex>.tmp``."""
    target = PurePosixPath(path)
    return str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:16]}.tmp"))


# --- error translation ---------------------------------------------------------------------

# pyarrow's S3 errors are OSErrors whose message reads "AWS Error <CODE> during <Op> operation:
# <server message>", with "UNKNOWN (HTTP status <n>)" for codes the SDK has no name for.
_AWS_CODE = re.compile(r"AWS Error (\w+)(?: \(HTTP status (\d+)\))?")
_AWS_DETAIL = re.compile(r"operation: (.*?)(?: \(Request ID: [^)]*\))?$", re.DOTALL)
_AWS_TRANSIENT = {
    "NETWORK_CONNECTION",
    "REQUEST_TIMEOUT",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "THROTTLING",
    "INTERNAL_FAILURE",
}
_AWS_CREDENTIALS = {
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "INVALID_SIGNATURE",
    "INCOMPLETE_SIGNATURE",
    "MISSING_AUTHENTICATION_TOKEN",
    "INVALID_CLIENT_TOKEN_ID",
    "UNRECOGNIZED_CLIENT",
    "REQUEST_EXPIRED",
    "EXPIRED_TOKEN",
}
_OS_TRANSIENT = {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ECONNRESET}


def translate(exc: OSError, url: str, path: str, doing: str) -> LakeError:
    """The LakeError for a library ``exc`` raised while ``doing`` (e.g. "writing") ``path``."""
    where = f"{url}: {doing} {path}" if path else f"{url}: {doing}"
    if isinstance(exc, FileNotFoundError):
        return LakeFileMissing(f"{url}: {path or 'the lake root'} does not exist")
    if isinstance(exc, PermissionError):
        return LakeError(f"{where}: permission denied; fix the folder's permissions or lake.path")
    match = _AWS_CODE.search(str(exc))
    if match is None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # transient: `capture --follow` waits and resumes once there is room again
            return LakeError(
                f"{where}: no space left on the device{_free_space(url)}; free space there or "
                "move lake.path to a larger disk",
                transient=True,
            )
        if exc.errno == errno.EROFS:
            return LakeError(
                f"{where}: the file system is read-only; mount it writable or move lake.path"
            )
        reason = exc.strerror or str(exc)
        return LakeError(f"{where}: {reason}", transient=exc.errno in _OS_TRANSIENT)
    code, status = match.group(1), int(match.group(2) or 0)
    if code == "NO_SUCH_BUCKET":
        return LakeError(
            f"{url}: bucket '{bucket_of(url)}' does not exist; create it or fix lake.path"
        )
    if code == "NO_SUCH_KEY":
        return LakeFileMissing(f"{url}: {path} does not exist")
    if code in _AWS_CREDENTIALS or status in (401, 403):
        return LakeError(
            f"{where}: access denied ({code}); check lake.access_key_id and "
            "lake.secret_access_key (or the AWS_* environment variables) and the bucket's policy"
        )
    detail = _AWS_DETAIL.search(str(exc))
    reason = f"{code}{f' HTTP {status}' if status else ''}: {detail.group(1) if detail else exc}"
    if code in _AWS_TRANSIENT or status >= 500 or status == 429:
        return LakeError(
            f"{where}: the object store did not answer ({reason}); check lake.endpoint_url and "
            "that the server is up",
            transient=True,
        )
    return LakeError(f"{where}: {reason}")


def _free_space(url: str) -> str:
    """`` (N MB free)`` for a local lake, to show how far from room a write was; else ''."""
    if url.startswith("s3://"):
        return ""
    folder = Path(url)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({free / 1e6:,.1f} MB free)"


def bucket_of(url: str) -> str:
    """The bucket of an ``s3://bucket/prefix`` url."""
    return url.removeprefix("s3://").split("/", 1)[0]


@contextmanager
def translating(url: str, path: str, doing: str) -> Iterator[None]:
    """Raise library OSErrors inside the block as LakeErrors, chained with ``from``."""
    try:
        yield
    except LakeError:
        raise
    except OSError as exc:
        raise translate(exc, url, path, doing) from exc
