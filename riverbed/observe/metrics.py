"""Metrics in the state store: named numbers with labels and a timestamp.

Every stage records what it did (rows, files, bytes, seconds, lag) through
``Manifest.record_metrics``; this module reads them back for alarms, `riverbed status` and the
Prometheus endpoint, and prunes old samples. Names follow Prometheus' conventions: ``_total``
for counts that only grow within a process, ``_seconds`` and ``_bytes`` for units.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from riverbed.lake.manifest import Manifest

RETENTION_SECONDS = 14 * 24 * 3600  # samples older than this are pruned after each run


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    ts: float
    labels: dict[str, str] = field(default_factory=dict)


class Metrics:
    """Reads and writes the ``metrics`` table of one state store."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def record(
        self,
        values: dict[str, float],
        labels: dict[str, str] | None = None,
        ts: float | None = None,
    ) -> None:
        self.manifest.record_metrics(values, labels, ts)

    def series(
        self,
        name: str,
        since: float,
        until: float | None = None,
        labels: dict[str, str] | None = None,
    ) -> list[tuple[float, float]]:
        """(ts, value) of ``name`` in [since, until), oldest first; only samples whose labels
        include every given label."""
        rows = self.manifest.query(
            "select ts, value, labels from metrics where name = ? and ts >= ? and ts < ? "
            "order by ts",
            (name, since, until if until is not None else float("inf")),
        )
        wanted = labels or {}
        return [
            (ts, value)
            for ts, value, encoded in rows
            if not wanted or _matches(json.loads(encoded), wanted)
        ]

    def latest(self, prefix: str = "") -> list[Sample]:
        """The newest sample of every (name, labels) whose name starts with ``prefix``."""
        rows = self.manifest.query(
            "select name, labels, value, max(ts) from metrics where name like ? "
            "group by name, labels order by name, labels",
            (prefix.replace("%", r"\%") + "%",),
        )
        return [Sample(name, value, ts, json.loads(labels)) for name, labels, value, ts in rows]

    def prune(self, older_than: float = RETENTION_SECONDS, now: float | None = None) -> int:
        """Delete samples older than ``older_than`` seconds, keeping each series' newest one
        (a gauge that stopped changing still has a current value). Returns the rows deleted."""
        cutoff = (time.time() if now is None else now) - older_than
        # runs after every pipeline run: the ts index finds the (usually no) old samples, and
        # the (name, ts) index answers "is there a newer one" for each, so the cost does not
        # grow with the table
        with self.manifest.transaction() as db:
            cursor = db.execute(
                "delete from metrics where ts < ? and exists (select 1 from metrics n "
                "where n.name = metrics.name and n.labels = metrics.labels and n.ts > metrics.ts)",
                (cutoff,),
            )
            return cursor.rowcount


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
