"""``riverbed run --reprocess TABLE --from START``: rewind a fact table's bookmarks, so the
next run transforms those raw files again (store.transform.withdraw takes the staged batches
back)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from riverbed.config.loader import Project
from riverbed.errors import UsageError
from riverbed.lake.lock import every_run_lock
from riverbed.lake.positions import parse_lsn
from riverbed.state import StateStore, open_state
from riverbed.state.records import WithdrawnBatch


def reprocess(project: Project, table: str, start: str) -> list[WithdrawnBatch]:
    """Rewind ``table``'s bookmarks to ``start`` (an LSN like 0/16B3748, or an ISO time), so
    the next run transforms those raw files again. Returns the staged batches withdrawn."""
    project.config.require_table(table, "--reprocess")
    cfg = project.config.tables[table]
    if cfg.kind == "dimension":
        # its load passes over every event at or before the dimension's high-water mark, so the
        # batches would be staged again and change nothing, while the run said it loaded them
        raise UsageError(
            f"--reprocess {table}: {table} is a dimension ({cfg.target}), whose versions are "
            "history the facts point at and are not rewritten; changed transforms and rules "
            "apply to its changes from the next run on. --reprocess takes a fact table"
        )
    # every lock a run or a single stage holds: withdrawn between a run's transform and its
    # load, the batches would be missing from that load, which then publishes without them
    with every_run_lock(project):
        manifest = open_state(project)
        try:
            lsn = _start_lsn(manifest, table, start)
            return manifest.transform.withdraw(table, lsn)
        finally:
            manifest.close()


# past every position: the state store's integers are signed 64-bit, an LSN unsigned
AFTER_ALL = (1 << 63) - 1


def _start_lsn(manifest: StateStore, table: str, start: str) -> int:
    text = start.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", text):
        return min(parse_lsn(text), AFTER_ALL)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--from {start!r}: give an LSN like 0/16B3748 or a time like 2026-11-27T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    hour = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    # raw files are partitioned by commit hour: the first file of that hour or later
    later = [f.min_lsn for f in manifest.lake.files("raw", table) if f.committed_from(hour)]
    return min(later) if later else AFTER_ALL
