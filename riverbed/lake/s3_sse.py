"""Server-side encryption for an s3:// lake (``lake.s3_sse``): every object Riverbed writes
is sent with ``x-amz-server-side-encryption`` (``AES256``: SSE-S3; ``aws:kms``: SSE-KMS, with
``lake.s3_sse_kms_key_id`` when given, else the account's default KMS key).

pyarrow's S3 client (26) sends no SSE header on PutObject, multipart uploads or CopyObject (its
output-stream metadata knows ACL and the Content-* headers only), so with ``s3_sse`` set the
writes go through boto3, an optional dependency (``pip install "riverbed[s3-sse]"``) asked for
only then; reads and listings stay on pyarrow. A file is written to a local spool first (in
memory, past 8 MiB a 0600 temp file) and uploaded whole (one PutObject, or a multipart upload
that S3 makes visible only on completion), so it is still visible complete or not at all, and
no unencrypted temp object is ever stored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from riverbed.config.stores import LakeConfig
from riverbed.lake.storage import LakeError

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # beyond this a file being written spills to a temp file


class SseWriter:
    """Writes objects of one bucket with server-side encryption, through boto3."""

    def __init__(self, lake: LakeConfig, credentials: tuple[str | None, str | None]):
        try:
            import boto3
        except ImportError:
            raise LakeError(
                f"lake.s3_sse: {lake.s3_sse} needs boto3 (pyarrow cannot ask S3 for server-side "
                'encryption); install it (`pip install "riverbed[s3-sse]"`), or remove lake.s3_sse'
            ) from None
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=lake.endpoint_url,
            region_name=lake.region,
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
        )
        self.extra: dict[str, str] = {"ServerSideEncryption": str(lake.s3_sse)}
        if lake.s3_sse_kms_key_id is not None:
            self.extra["SSEKMSKeyId"] = lake.s3_sse_kms_key_id

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **self.extra)

    @contextmanager
    def open(self, bucket: str, key: str) -> Iterator[BinaryIO]:
        """A sink whose bytes are uploaded to ``key`` when the block exits cleanly; nothing is
        sent when it raises."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            yield spool  # type: ignore[misc]  # a binary file object
            spool.seek(0)
            self.client.upload_fileobj(spool, bucket, key, ExtraArgs=self.extra)

    def copy(self, bucket: str, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` server-side; the copy is encrypted as configured."""
        self.client.copy({"Bucket": bucket, "Key": src}, bucket, dst, ExtraArgs=self.extra)
