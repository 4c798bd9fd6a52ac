"""One contract for every lake storage: a local folder and S3 (a real moto server, run as a
separate process so that pyarrow's blocking calls never wait on our own interpreter's GIL)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from conftest import free_port, s3_bucket
from riverbed.config.stores import LakeConfig
from riverbed.lake.s3 import SINGLE_PUT_MAX
from riverbed.lake.storage import LakeError, LakeFileMissing, LakeStorage, open_storage, translate

BUCKET = "riverbed-test"
KEY_VAR, SECRET_VAR = "RIVERBED_TEST_S3_KEY", "RIVERBED_TEST_S3_SECRET"
SECRET = "s3cr3t-never-printed"
ORDERS = "raw/orders/date=2026-11-27/hour=10/part-0001.parquet"


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: str) -> str:
    """The session's S3 server with one empty bucket."""
    s3_bucket(s3_server, BUCKET, "testing", SECRET)
    return s3_server


def s3_config(endpoint: str, bucket: str = BUCKET) -> LakeConfig:
    return LakeConfig.model_validate(
        {
            "path": f"s3://{bucket}/lake-{uuid.uuid4().hex[:8]}",
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "access_key_id": {"env": KEY_VAR},
            "secret_access_key": {"env": SECRET_VAR},
        }
    )


@dataclass(frozen=True)
class Lake:
    config: LakeConfig
    root: Path


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    if request.param == "local":
        return Lake(LakeConfig(), tmp_path)  # the default, .riverbed/lake in the project
    monkeypatch.setenv(KEY_VAR, "testing")
    monkeypatch.setenv(SECRET_VAR, SECRET)
    return Lake(s3_config(request.getfixturevalue("s3_endpoint")), tmp_path)


@pytest.fixture
def storage(lake: Lake) -> LakeStorage:
    return open_storage(lake.config, lake.root)


def all_objects(storage: LakeStorage) -> list[str]:
    """Every file under the lake root as the file system sees it, dot-files included."""
    fs, base = storage.arrow_filesystem()
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    return sorted(
        info.path[len(base) + 1 :]
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    )


def orders_table(first: int, rows: int) -> pa.Table:
    ids = list(range(first, first + rows))
    return pa.table({"order_id": ids, "status": [f"s{i % 5}" for i in ids]})


# --- the contract -------------------------------------------------------------------------


def test_write_then_read_exists_and_list(storage: LakeStorage) -> None:
    storage.write_atomic(ORDERS, b"first file")
    storage.write_atomic("raw/orders/date=2026-11-27/hour=09/part-0000.parquet", b"earlier")
    storage.write_atomic("manifest.json", b"{}")

    assert storage.read(ORDERS) == b"first file"
    assert storage.exists(ORDERS)
    assert not storage.exists("raw/orders/date=2026-11-27/hour=10/other.parquet")
    assert not storage.exists("raw/orders")  # a folder is not a file
    assert storage.list() == [
        "manifest.json",
        "raw/orders/date=2026-11-27/hour=09/part-0000.parquet",
        ORDERS,
    ]
    assert storage.list("raw/orders/date=2026-11-27/hour=10") == [ORDERS]
    assert storage.list("raw/orders/date=2026-11-27/hour=10/") == [ORDERS]
    assert storage.list("raw/customers") == []


def test_overwrite_replaces_the_whole_file(storage: LakeStorage) -> None:
    storage.write_atomic(ORDERS, b"a much longer first version")
    storage.write_atomic(ORDERS, b"v2")
    assert storage.read(ORDERS) == b"v2"
    assert storage.list() == [ORDERS]


def test_prefixes_are_folders_not_string_prefixes(storage: LakeStorage) -> None:
    paths = ["raw/orders/a/1.bin", "raw/orders/b/c/2.bin", "raw/order_items/3.bin", "staged/4.bin"]
    for path in paths:
        storage.write_atomic(path, path.encode())
    assert storage.list("raw/orders") == ["raw/orders/a/1.bin", "raw/orders/b/c/2.bin"]
    assert storage.list("raw") == sorted(paths[:3])
    assert storage.list("raw/orders/b/c") == ["raw/orders/b/c/2.bin"]
    assert [storage.read(path) for path in paths] == [path.encode() for path in paths]


def test_missing_file_is_a_terminal_lake_file_missing(storage: LakeStorage) -> None:
    for attempt in (storage.read, storage.open_input):
        with pytest.raises(LakeFileMissing) as caught:
            attempt("raw/orders/none.parquet")
        assert not caught.value.transient
        assert isinstance(caught.value, FileNotFoundError)
        assert storage.url in str(caught.value) and "raw/orders/none.parquet" in str(caught.value)


def test_open_atomic_streams_a_parquet_file_in_row_groups(storage: LakeStorage) -> None:
    schema = orders_table(0, 1).schema
    with storage.open_atomic(ORDERS) as sink:
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for group in range(3):
                writer.write_table(orders_table(group * 1000, 1000))
                assert not storage.exists(ORDERS)
                assert storage.list() == []
        assert storage.list() == []  # the Parquet footer is written, still not published

    assert storage.list() == [ORDERS]
    assert pq.ParquetFile(storage.open_input(ORDERS)).num_row_groups == 3
    table = pq.read_table(storage.open_input(ORDERS))
    assert table.equals(orders_table(0, 3000))


def test_large_writes_stay_invisible_until_complete(storage: LakeStorage) -> None:
    # Above one S3 part (10 MiB), so the object store holds uploaded parts mid-block.
    chunk = os.urandom(4 * 1024 * 1024)
    with storage.open_atomic("raw/big/stream.bin") as sink:
        for _ in range(3):
            sink.write(chunk)
        assert storage.list() == [] and not storage.exists("raw/big/stream.bin")
    assert storage.read("raw/big/stream.bin") == chunk * 3

    blob = os.urandom(SINGLE_PUT_MAX + 1)  # too big for one PUT: staged, then copied
    storage.write_atomic("raw/big/blob.bin", blob)
    assert storage.read("raw/big/blob.bin") == blob
    assert all_objects(storage) == ["raw/big/blob.bin", "raw/big/stream.bin"]


def test_an_exception_inside_open_atomic_leaves_nothing(storage: LakeStorage) -> None:
    storage.write_atomic("raw/orders/keep.bin", b"kept")
    with (
        pytest.raises(RuntimeError, match="writer failed"),
        storage.open_atomic(ORDERS) as sink,
        pq.ParquetWriter(sink, orders_table(0, 1).schema) as writer,
    ):
        writer.write_table(orders_table(0, 1000))
        raise RuntimeError("writer failed")
    with pytest.raises(KeyError), storage.open_atomic("raw/orders/half.bin") as sink:
        sink.write(os.urandom(11 * 1024 * 1024))  # a multipart upload was under way
        raise KeyError("boom")

    assert not storage.exists(ORDERS)
    assert storage.list() == ["raw/orders/keep.bin"]
    assert all_objects(storage) == ["raw/orders/keep.bin"]  # no temp file or object left


CRASHING_WRITER = """
import sys
from pathlib import Path
from riverbed.config.stores import LakeConfig
from riverbed.lake.storage import open_storage

storage = open_storage(LakeConfig.model_validate_json(sys.argv[1]), Path(sys.argv[2]))
with storage.open_atomic("raw/orders/crash.bin") as sink:
    sink.write(b"x" * (12 * 1024 * 1024))
    sink.flush()
    print("written", flush=True)
    sys.stdin.read()  # wait to be killed
"""


def test_a_writer_killed_mid_file_leaves_nothing_visible(lake: Lake, storage: LakeStorage) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, lake.config.model_dump_json(), str(lake.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
        assert storage.list() == []  # listing while the writer is open
        writer.kill()  # SIGKILL: no cleanup code runs
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert storage.list() == [] and not storage.exists("raw/orders/crash.bin")
    if lake.config.path.startswith("s3://"):
        assert all_objects(storage) == []  # an unfinished multipart upload is no object
    else:
        (leftover,) = all_objects(storage)  # the temp file, dot-named next to its target
        assert leftover.startswith("raw/orders/.crash.bin.") and leftover.endswith(".tmp")


def test_rename_moves_a_file_aside(storage: LakeStorage) -> None:
    storage.write_atomic(ORDERS, b"bad rows")
    storage.write_atomic("quarantine/orders/part-0001.parquet", b"older")
    storage.rename(ORDERS, "quarantine/orders/part-0001.parquet")
    assert not storage.exists(ORDERS)
    assert storage.read("quarantine/orders/part-0001.parquet") == b"bad rows"
    assert storage.list() == ["quarantine/orders/part-0001.parquet"]
    with pytest.raises(LakeFileMissing):
        storage.rename(ORDERS, "quarantine/orders/again.parquet")


def test_delete_and_delete_missing(storage: LakeStorage) -> None:
    storage.write_atomic(ORDERS, b"x")
    storage.delete(ORDERS)
    storage.delete(ORDERS)
    storage.delete("raw/never/was.bin")
    assert not storage.exists(ORDERS)
    assert storage.list() == []


def test_arrow_filesystem_reads_a_hive_dataset(storage: LakeStorage) -> None:
    for hour, first in (("09", 0), ("10", 100)):
        path = f"raw/orders/date=2026-11-27/hour={hour}/part-0000.parquet"
        with storage.open_atomic(path) as sink:
            pq.write_table(orders_table(first, 100), sink)
    fs, base = storage.arrow_filesystem()
    with storage.open_atomic("raw/orders/date=2026-11-27/hour=11/part-0000.parquet") as sink:
        sink.write(b"PAR1 half a file")  # in flight: a dataset scan must not trip over it
        sink.flush()
        dataset = ds.dataset(
            f"{base}/raw/orders", filesystem=fs, format="parquet", partitioning="hive"
        )
        table = dataset.to_table().sort_by("order_id")
        sink.write(b" and the rest")
    assert table.column("order_id").to_pylist() == list(range(200))
    assert set(table.column("hour").to_pylist()) == {9, 10}


@pytest.mark.parametrize(
    "path", ["", "/abs/x.bin", "a//b.bin", "a/../b.bin", ".hidden", "a/.tmp/b"]
)
def test_paths_must_be_plain_and_relative(storage: LakeStorage, path: str) -> None:
    with pytest.raises(ValueError, match="must be relative"):
        storage.write_atomic(path, b"x")


# --- per backend --------------------------------------------------------------------------


def test_local_relative_path_resolves_against_the_project(tmp_path: Path) -> None:
    assert open_storage(LakeConfig(path="data/lake"), tmp_path).url == str(tmp_path / "data/lake")
    elsewhere = tmp_path / "elsewhere"
    assert open_storage(LakeConfig(path=str(elsewhere)), tmp_path / "p").url == str(elsewhere)


def test_missing_bucket_is_terminal_and_named(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, "testing")
    monkeypatch.setenv(SECRET_VAR, SECRET)
    storage = open_storage(s3_config(s3_endpoint, bucket="no-such-bucket"), Path("."))
    attempts = [
        lambda: storage.write_atomic(ORDERS, b"x"),
        lambda: storage.read(ORDERS),
        lambda: storage.list("raw"),
    ]
    for attempt in attempts:
        with pytest.raises(LakeError) as caught:
            attempt()
        message = str(caught.value)
        assert not caught.value.transient and not isinstance(caught.value, LakeFileMissing)
        assert "bucket 'no-such-bucket' does not exist; create it or fix lake.path" in message
        assert SECRET not in message


def test_unreachable_endpoint_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, "testing")
    monkeypatch.setenv(SECRET_VAR, SECRET)
    storage = open_storage(s3_config(f"http://127.0.0.1:{free_port()}"), Path("."))
    with pytest.raises(LakeError) as caught:
        storage.exists(ORDERS)
    assert caught.value.transient
    assert storage.url in str(caught.value) and "lake.endpoint_url" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_credentials_come_from_secret_refs(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, "testing")
    monkeypatch.delenv(SECRET_VAR, raising=False)
    with pytest.raises(
        LakeError, match=f"lake.secret_access_key: environment variable {SECRET_VAR}"
    ):
        open_storage(s3_config(s3_endpoint), Path("."))
    half = s3_config(s3_endpoint).model_copy(update={"secret_access_key": None})
    with pytest.raises(LakeError, match="set both lake.access_key_id and lake.secret_access_key"):
        open_storage(half, Path("."))


@pytest.mark.parametrize(
    ("message", "transient", "expected"),
    [
        (
            "When reading information for key 'p/x' in bucket 'b': AWS Error NETWORK_CONNECTION "
            "during HeadObject operation: curlCode: 7, Could not connect to server",
            True,
            "did not answer (NETWORK_CONNECTION: curlCode: 7, Could not connect to server)",
        ),
        (
            "When uploading part for key 'p/x' in bucket 'b': AWS Error UNKNOWN (HTTP status 503) "
            "during UploadPart operation: Service Unavailable (Request ID: 42)",
            True,
            "did not answer (UNKNOWN HTTP 503: Service Unavailable)",
        ),
        (
            "When listing objects under key 'p/' in bucket 'b': AWS Error ACCESS_DENIED during "
            "ListObjectsV2 operation: Access Denied (Request ID: 42)",
            False,
            "access denied (ACCESS_DENIED); check lake.access_key_id",
        ),
        (
            "When initiating multiple part upload for key 'x' in bucket 'b': AWS Error "
            "NO_SUCH_BUCKET during CreateMultipartUpload operation: The specified bucket does "
            "not exist (Request ID: 42)",
            False,
            "s3://b/p: bucket 'b' does not exist; create it or fix lake.path",
        ),
    ],
)
def test_s3_errors_are_classified(message: str, transient: bool, expected: str) -> None:
    error = translate(OSError(message), "s3://b/p", "raw/x.parquet", "writing")
    assert error.transient is transient
    assert expected in str(error)
    assert "Request ID" not in str(error)
