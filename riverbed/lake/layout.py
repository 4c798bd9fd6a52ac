"""Where each file lives in the lake: every path is built here, and read back here.

  raw/<table>/date=YYYY-MM-DD/hour=HH/<first lsn>_<last lsn>_v<schema version>_<n>.parquet
  raw/<table>/date=YYYY-MM-DD/hour=HH/snapshot_<lsn>_<chunk>_<n>.parquet
  raw/<table>/date=YYYY-MM-DD/hour=HH/snapshot_<lsn>_truncate.parquet
  staged/<table>/batch=<id>/part-<n>.parquet
  quarantine/<table>/batch=<id>/part-<n>.parquet
  bad/<raw path>
  current/<table>/tier<k>-<token>.parquet       (derived: riverbed.transform.compacted)
  toast/<table>/tier<k>-<token>.parquet

Raw files are partitioned by the commit time (UTC) of their changes, a snapshot's by the
snapshot's time; LSNs in names are 16 hexadecimal digits, so names sort in source order. Staged
and quarantined files are grouped by the transform batch that wrote them. An unreadable raw file
set aside by the transform keeps its raw path under ``bad/``. The manifest, not a listing, says
which files exist; these names make a listing readable and tell a batch's files apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

RAW = "raw"
STAGED = "staged"
QUARANTINE = "quarantine"
BAD = "bad"
# derived files, rebuildable from the staged (current rows) and raw (TOAST history) files
CURRENT = "current"
TOAST = "toast"
COMPACTED = (CURRENT, TOAST)

HOUR_US = 3_600_000_000  # the width of a raw partition, in microseconds

_BATCH = "batch="
_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})")
_CHANGES = re.compile(r"([0-9A-F]{16})_([0-9A-F]{16})_v(\d+)_(\d+)\.parquet")
_SNAPSHOT = re.compile(r"snapshot_([0-9A-F]{16})_(\d+)_(\d+)\.parquet")
_TRUNCATE = re.compile(r"snapshot_([0-9A-F]{16})_truncate\.parquet")


# --- raw files --------------------------------------------------------------------------------


def partition_of(ts_us: int) -> str:
    """The lake partition of a commit time: "date=YYYY-MM-DD/hour=HH" (UTC)."""
    stamp = np.datetime64(ts_us // HOUR_US * 3600, "s").astype("datetime64[h]")
    day, hour = str(stamp).split("T")
    return f"date={day}/hour={hour}"


def raw_prefix(table: str) -> str:
    """The folder holding every raw file of ``table``, with its trailing '/'."""
    return f"{RAW}/{table}/"


def raw_file_path(
    table: str, commit_ts_us: int, first_lsn: int, last_lsn: int, version: int, n: int
) -> str:
    """A file of streamed changes committed in the hour of ``commit_ts_us``, between
    ``first_lsn`` and ``last_lsn``, in schema ``version``; ``n`` tells files of one capture
    flush apart."""
    name = f"{first_lsn:016X}_{last_lsn:016X}_v{version}_{n:04d}.parquet"
    return f"{raw_prefix(table)}{partition_of(commit_ts_us)}/{name}"


def snapshot_file_path(table: str, snapshot_ts_us: int, lsn: int, chunk: int, n: int) -> str:
    """File ``n`` of a snapshot's ``chunk`` of ``table``, taken at ``lsn``."""
    name = f"snapshot_{lsn:016X}_{chunk:02d}_{n:04d}.parquet"
    return f"{raw_prefix(table)}{partition_of(snapshot_ts_us)}/{name}"


def truncate_file_path(table: str, snapshot_ts_us: int, lsn: int) -> str:
    """The file of the one T row that ends ``table``'s rows before a snapshot at ``lsn``."""
    name = f"snapshot_{lsn:016X}_truncate.parquet"
    return f"{raw_prefix(table)}{partition_of(snapshot_ts_us)}/{name}"


@dataclass(frozen=True)
class RawPath:
    """What a raw file's path says about it."""

    table: str
    hour: datetime  # the start (UTC) of the commit hour its partition holds
    kind: str  # "changes", "snapshot" or "truncate"
    first_lsn: int
    last_lsn: int
    version: int | None  # the schema version, named by files of changes only
    chunk: int | None  # the snapshot chunk, named by snapshot files only
    n: int | None  # the file's number (None for a truncate file)


def parse_raw_path(path: str) -> RawPath:
    """Read a raw file's path back; ValueError naming the path if it is not one this module
    builds."""
    parts = path.split("/")
    partition = _PARTITION.fullmatch("/".join(parts[2:4])) if len(parts) == 5 else None
    if parts[0] != RAW or not parts[1] or partition is None:
        raise ValueError(f"{path!r} is not a raw file path (raw/<table>/date=.../hour=.../...)")
    table, name = parts[1], parts[4]
    hour = datetime.strptime(f"{partition[1]} {partition[2]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    if m := _CHANGES.fullmatch(name):
        first, last = int(m[1], 16), int(m[2], 16)
        return RawPath(table, hour, "changes", first, last, int(m[3]), None, int(m[4]))
    if m := _SNAPSHOT.fullmatch(name):
        lsn = int(m[1], 16)
        return RawPath(table, hour, "snapshot", lsn, lsn, None, int(m[2]), int(m[3]))
    if m := _TRUNCATE.fullmatch(name):
        lsn = int(m[1], 16)
        return RawPath(table, hour, "truncate", lsn, lsn, None, None, None)
    raise ValueError(f"{path!r} is not a raw file name this release writes")


# --- staged and quarantined batches -----------------------------------------------------------


def batch_dir(stage: str, table: str, batch_id: str) -> str:
    """The folder of one transform batch's files in ``stage`` (staged or quarantine), without
    a trailing '/'."""
    return f"{stage}/{table}/{_BATCH}{batch_id}"


def staged_batch_dir(table: str, batch_id: str) -> str:
    """The folder of one transform batch's staged files."""
    return batch_dir(STAGED, table, batch_id)


def quarantine_batch_dir(table: str, batch_id: str) -> str:
    """The folder of one transform batch's quarantined rows."""
    return batch_dir(QUARANTINE, table, batch_id)


def batch_file_path(stage: str, table: str, batch_id: str, n: int) -> str:
    """Part ``n`` of one transform batch's files in ``stage``; part names follow row order."""
    return f"{batch_dir(stage, table, batch_id)}/part-{n:05d}.parquet"


def batch_of(path: str) -> str | None:
    """The transform batch a staged or quarantined file belongs to (its ``batch=<id>``
    folder); None for any other file."""
    for part in path.split("/"):
        if part.startswith(_BATCH):
            return part.removeprefix(_BATCH)
    return None


# --- raw files set aside ----------------------------------------------------------------------


def bad_path(raw_path: str) -> str:
    """Where an unreadable raw file is set aside: its own path, under bad/."""
    return f"{BAD}/{raw_path}"


def bad_prefix(table: str) -> str:
    """The folder holding every raw file of ``table`` set aside, with its trailing '/'."""
    return bad_path(raw_prefix(table))


def set_aside_from(path: str) -> str:
    """The raw path a file under bad/ was set aside from."""
    return path.removeprefix(f"{BAD}/")


# --- compacted current rows and TOAST history -------------------------------------------------


def compacted_prefix(kind: str, table: str) -> str:
    """The folder of ``table``'s compacted files of ``kind`` (CURRENT or TOAST)."""
    return f"{kind}/{table}"


def compacted_file_path(kind: str, table: str, tier: int, token: str) -> str:
    """A compacted file of ``kind`` in ``tier``; ``token`` makes each merge's name its own."""
    return f"{compacted_prefix(kind, table)}/tier{tier}-{token}.parquet"
