"""The lake in an S3-compatible object store (AWS S3, MinIO, Ceph, ...), through pyarrow.

How writes stay atomic: S3 makes an object visible only when a PutObject, a
CompleteMultipartUpload or a CopyObject finishes, so

- ``write_atomic`` of up to ``SINGLE_PUT_MAX`` bytes is one PutObject (pyarrow buffers the
  stream and, with ``allow_delayed_open``, sends it whole on close);
- ``open_atomic`` (and larger ``write_atomic``) streams a multipart upload to a dot-named temp
  key next to the target, then copies it to the target server-side and deletes the temp key.

The detour exists because pyarrow's S3 output stream cannot be aborted from Python: closing it
or merely dropping it completes the upload with whatever was written, so streaming straight
to the target would publish a truncated file when the writer fails halfway. A crash leaves at
most an unfinished multipart upload (invisible; expire it with a bucket lifecycle rule) or a
dot-named temp object, which no listing shows. CopyObject handles objects up to 5 GB.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from riverbed.config.stores import LakeConfig
from riverbed.lake.storage import (
    LakeError,
    bucket_of,
    check_path,
    check_prefix,
    is_hidden,
    temp_path,
    translating,
)

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto
    from riverbed.lake.s3_sse import SseWriter

# pyarrow sends a delayed-open stream of less than 10 MiB as one PutObject; stay well below.
SINGLE_PUT_MAX = 8 * 1024 * 1024


class S3Storage:
    """A lake under ``s3://bucket/prefix``."""

    crypto: LakeCrypto | None = None  # set by open_storage

    def __init__(self, filesystem: Any, url: str, sse: SseWriter | None = None):
        self.fs = filesystem
        self.url = url.rstrip("/")
        self.base = self.url.removeprefix("s3://")  # "bucket/prefix", as pyarrow paths go
        self.bucket = bucket_of(self.url)
        self.sse = sse  # lake.s3_sse: writes go through it, with server-side encryption

    @classmethod
    def from_config(cls, lake: LakeConfig) -> S3Storage:
        """Connect as ``lake`` says: its endpoint and region, its keys or else the AWS default
        credential chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance role)."""
        access_key, secret_key = _credentials(lake)
        options: dict[str, Any] = {"allow_delayed_open": True}
        if lake.endpoint_url is not None:
            endpoint = urlsplit(lake.endpoint_url)
            if endpoint.scheme and endpoint.netloc:
                options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
            else:
                options.update(endpoint_override=lake.endpoint_url)
        if lake.region is not None:
            options.update(region=lake.region)
        try:
            filesystem = pafs.S3FileSystem(access_key=access_key, secret_key=secret_key, **options)
        except ValueError as exc:  # pyarrow.ArrowInvalid for a malformed endpoint or option
            raise LakeError(
                f"{lake.path}: cannot set up the S3 client ({exc}); "
                "check lake.endpoint_url and lake.region"
            ) from exc
        sse = None
        if lake.s3_sse is not None:
            from riverbed.lake.s3_sse import SseWriter

            sse = SseWriter(lake, (access_key, secret_key))
        return cls(filesystem, lake.path, sse)

    def write_atomic(self, path: str, data: bytes) -> None:
        if self.sse is not None:
            with translating(self.url, path, "writing"), _boto_errors(self.url, path):
                self.sse.put(self.bucket, self._object(path), data)
            return
        if len(data) > SINGLE_PUT_MAX:
            with self.open_atomic(path) as sink:
                sink.write(data)
            return
        with translating(self.url, path, "writing"):
            stream = self.fs.open_output_stream(self._key(path))
            stream.write(data)
            stream.close()

    @contextmanager
    def open_atomic(self, path: str) -> Iterator[BinaryIO]:
        if self.sse is not None:
            with (
                translating(self.url, path, "writing"),
                _boto_errors(self.url, path),
                self.sse.open(self.bucket, self._object(path)) as spool,
            ):
                yield spool
            return
        target = self._key(path)
        temp = f"{self.base}/{temp_path(path)}"
        with translating(self.url, path, "writing"):
            sink = self.fs.open_output_stream(temp)
        try:
            with translating(self.url, path, "writing"):  # the caller's writes
                yield sink
            with translating(self.url, path, "writing"):
                sink.close()  # completes the temp object, or raises having completed nothing
                self.fs.copy_file(temp, target)
        except BaseException:
            # Closing publishes the partial temp object (it cannot be aborted); delete it.
            with suppress(Exception):
                sink.close()
            with suppress(Exception):
                self.fs.delete_file(temp)
            raise
        # The target is complete; a temp object left by a failure here is invisible.
        with suppress(OSError):
            self.fs.delete_file(temp)

    def read(self, path: str) -> bytes:
        with (
            translating(self.url, path, "reading"),
            self._missing_bucket_check(),
            self.fs.open_input_stream(self._key(path)) as stream,
        ):
            data: bytes = stream.read()
            return data

    def open_input(self, path: str) -> Any:
        with translating(self.url, path, "opening"), self._missing_bucket_check():
            return self.fs.open_input_file(self._key(path))

    def exists(self, path: str) -> bool:
        with translating(self.url, path, "looking up"):
            info = self.fs.get_file_info(self._key(path))
        return bool(info.type == pafs.FileType.File)

    def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = check_prefix(prefix)
        top = f"{self.base}/{prefix}" if prefix else self.base
        # Not allow_not_found: with it, pyarrow lists a missing bucket as empty.
        selector = pafs.FileSelector(top, recursive=True)
        with translating(self.url, prefix, "listing"):
            try:
                infos = self.fs.get_file_info(selector)
            except FileNotFoundError:
                return []
        cut = len(self.base) + 1
        return sorted(
            info.path[cut:]
            for info in infos
            if info.type == pafs.FileType.File and not is_hidden(info.path[cut:])
        )

    def delete(self, path: str) -> None:
        with translating(self.url, path, "deleting"), suppress(FileNotFoundError):
            self.fs.delete_file(self._key(path))

    def rename(self, src: str, dst: str) -> None:
        # CopyObject then DeleteObject: dst appears whole; a crash in between leaves both.
        with translating(self.url, src, f"moving to {dst}"):
            if self.sse is None:
                self.fs.move(self._key(src), self._key(dst))
                return
            with _boto_errors(self.url, src):
                self.sse.copy(self.bucket, self._object(src), self._object(dst))
            self.fs.delete_file(self._key(src))

    def arrow_filesystem(self) -> tuple[Any, str]:
        return self.fs, self.base

    def _key(self, path: str) -> str:
        return f"{self.base}/{check_path(path)}"

    def _object(self, path: str) -> str:
        """The object key of ``path`` in the bucket (boto3 names bucket and key apart)."""
        return self._key(path).removeprefix(f"{self.bucket}/")

    @contextmanager
    def _missing_bucket_check(self) -> Iterator[None]:
        # A GET on a missing bucket answers 404 like a missing key; tell the two apart only
        # on this error path, so the user hears "bucket does not exist" rather than "no file".
        try:
            yield
        except FileNotFoundError as exc:
            if self.fs.get_file_info(self.bucket).type == pafs.FileType.NotFound:
                raise LakeError(
                    f"{self.url}: bucket '{self.bucket}' does not exist; create it or fix lake.path"
                ) from exc
            raise


@contextmanager
def _boto_errors(url: str, path: str) -> Iterator[None]:
    """boto3's errors as LakeErrors (its ClientError is no OSError)."""
    try:
        yield
    except LakeError:
        raise
    except OSError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("botocore", "boto3", "s3transfer"):
            raise
        transient = "EndpointConnectionError" in type(exc).__name__
        raise LakeError(
            f"{url}: writing {path}: {type(exc).__name__}: {exc}", transient=transient
        ) from exc


def _credentials(lake: LakeConfig) -> tuple[str | None, str | None]:
    """The configured key pair, or (None, None) for the AWS default credential chain."""
    refs = {
        "lake.access_key_id": lake.access_key_id,
        "lake.secret_access_key": lake.secret_access_key,
    }
    unset = [name for name, ref in refs.items() if ref is None]
    if len(unset) == 2:
        return None, None
    if unset:
        raise LakeError(
            f"{lake.path}: {unset[0]} is not set; set both lake.access_key_id and "
            "lake.secret_access_key, or neither to use the AWS default credentials"
        )
    values: builtins.list[str] = []
    for name, ref in refs.items():
        assert ref is not None
        try:
            values.append(ref.reveal())
        except ValueError as exc:  # names the variable or file, never the value
            raise LakeError(f"{name}: {exc}; set it, or fix {name} in riverbed.yaml") from exc
    return values[0], values[1]
