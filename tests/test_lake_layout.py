"""Lake paths: what capture and transform name a file is what every later stage reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from riverbed.lake.layout import (
    bad_path,
    bad_prefix,
    batch_file_path,
    batch_of,
    parse_raw_path,
    quarantine_batch_dir,
    raw_file_path,
    set_aside_from,
    snapshot_file_path,
    staged_batch_dir,
    truncate_file_path,
)

# 2026-11-27 10:59:59 UTC: the last second of the hour
LATE_IN_HOUR = int(datetime(2026, 11, 27, 10, 59, 59, tzinfo=UTC).timestamp()) * 10**6
HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)


def test_raw_paths_read_back_as_built() -> None:
    changes = raw_file_path("order_items", LATE_IN_HOUR, 0x16B3748, 0x1_0000_0000, 3, 12_345)
    assert changes.startswith("raw/order_items/date=2026-11-27/hour=10/")
    read = parse_raw_path(changes)
    assert (read.table, read.hour, read.kind) == ("order_items", HOUR, "changes")
    assert (read.first_lsn, read.last_lsn, read.version, read.n) == (
        0x16B3748,
        0x1_0000_0000,
        3,
        12_345,
    )
    snapshot = parse_raw_path(snapshot_file_path("orders", LATE_IN_HOUR, 0x16B3748, 2, 7))
    assert (snapshot.kind, snapshot.first_lsn, snapshot.chunk, snapshot.n) == (
        "snapshot",
        0x16B3748,
        2,
        7,
    )
    truncate = parse_raw_path(truncate_file_path("orders", LATE_IN_HOUR, 0x16B3748))
    assert (truncate.kind, truncate.hour, truncate.last_lsn) == ("truncate", HOUR, 0x16B3748)


def test_names_sort_in_source_order() -> None:
    paths = [raw_file_path("t", LATE_IN_HOUR, lsn, lsn, 1, 0) for lsn in (0xF, 0x10, 0x1_0000_0000)]
    assert sorted(paths) == paths


@pytest.mark.parametrize(
    "path",
    [
        "staged/orders/batch=00AB-1/part-00000.parquet",
        "raw/orders/streamed.parquet",
        "raw/orders/date=2026-11-27/hour=10/streamed.parquet",
    ],
)
def test_a_path_that_is_not_a_raw_file_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="raw"):
        parse_raw_path(path)


def test_batch_files_and_set_aside_files() -> None:
    staged = batch_file_path("staged", "orders", "00AB-1", 3)
    assert staged == f"{staged_batch_dir('orders', '00AB-1')}/part-00003.parquet"
    assert batch_of(staged) == "00AB-1"
    assert batch_of(f"{quarantine_batch_dir('orders', '00AB-2')}/part-00000.parquet") == "00AB-2"
    raw = raw_file_path("orders", LATE_IN_HOUR, 1, 2, 1, 0)
    assert batch_of(raw) is None
    assert bad_path(raw).startswith(bad_prefix("orders"))
    assert set_aside_from(bad_path(raw)) == raw
