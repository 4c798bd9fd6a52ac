"""Metrics in the state store: named numbers with labels and a timestamp.

Every stage records what it did (rows, files, bytes, seconds, lag) through
``Manifest.record_metrics``; this module reads them back for alarms, `riverbed status` and the
Prometheus endpoint, and prunes old samples. ``_seconds`` and ``_bytes`` name units.

Two kinds of metric, told apart by name (:func:`is_counter`):

- a counter (COUNTERS, or any name ending in ``_total``) is stored as increments: each sample
  is what one run, batch or flush added. Its value is the sum of its samples, which only grows:
  pruning folds old increments into one sample instead of deleting them. An alarm on one sees
  the increments of each period (``sum`` is what happened in the period).
- a gauge (every other name) is a reading: its value is its newest sample.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from riverbed.config.metric_names import COUNTERS
from riverbed.config.metric_names import SINCE_LAST_SUCCESS as SINCE_LAST_SUCCESS
from riverbed.lake.manifest import Manifest

RETENTION_SECONDS = 14 * 24 * 3600  # samples older than this are pruned after each run


def is_counter(name: str) -> bool:
    """Whether samples of ``name`` are increments of a counter (else readings of a gauge)."""
    return name in COUNTERS or name.endswith("_total")


def since_last_success(manifest: Manifest, now: float) -> float | None:
    """Seconds from the end of the last successful run to ``now`` (from the start of the first
    run when none succeeded yet); None before any run. Computed whenever it is needed: a value
    stored at some instant is stale the next second."""
    if not manifest.has_table("runs"):
        return None
    last, first = manifest.query(
        "select max(case when status = 'succeeded' then ended_at end), min(started_at) from runs"
    )[0]
    since = last if last is not None else first
    return None if since is None else max(0.0, now - float(since))


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

    def totals(self) -> list[Sample]:
        """Every counter's value by (name, labels): the sum of its increments, stamped with
        the newest one's time."""
        rows = self.manifest.query(
            "select name, labels, sum(value), max(ts) from metrics "
            "group by name, labels order by name, labels"
        )
        return [
            Sample(name, value, ts, json.loads(labels))
            for name, labels, value, ts in rows
            if is_counter(name)
        ]

    def prune(self, older_than: float = RETENTION_SECONDS, now: float | None = None) -> int:
        """Delete samples older than ``older_than`` seconds, keeping each gauge's newest one
        (a gauge that stopped changing still has a current value) and folding each counter's
        old increments into one sample (its value must never go down). Returns the rows
        deleted."""
        cutoff = (time.time() if now is None else now) - older_than
        # runs after every pipeline run: the ts index finds the (usually no) old samples, and
        # the (name, ts) index answers "is there a newer one" for each, so the cost does not
        # grow with the table
        with self.manifest.transaction() as db:
            old = db.execute(
                "select name, labels, sum(value), max(ts), count(*) from metrics where ts < ? "
                "group by name, labels having count(*) > 1",
                (cutoff,),
            ).fetchall()
            deleted = 0
            for name, labels, total, ts, count in old:
                if not is_counter(name):
                    continue
                db.execute(
                    "delete from metrics where name = ? and labels = ? and ts < ?",
                    (name, labels, cutoff),
                )
                db.execute("insert into metrics values (?, ?, ?, ?)", (name, labels, total, ts))
                deleted += count - 1
            counters = ", ".join("?" * len(COUNTERS))
            cursor = db.execute(
                "delete from metrics where ts < ? and exists (select 1 from metrics n "
                "where n.name = metrics.name and n.labels = metrics.labels and n.ts > metrics.ts)"
                # gauges only: a counter's folded sample is part of its value
                f" and name not in ({counters}) and name not like '%\\_total' escape '\\'",
                (cutoff, *sorted(COUNTERS)),
            )
            return deleted + cursor.rowcount


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
