"""Metrics: named numbers with labels and a timestamp, recorded by every stage.

Counters are stored as increments and gauges as readings (riverbed.config.metric_names.
is_counter); pruning folds a counter's old increments into one sample instead of deleting them,
so its value never goes down, and keeps each gauge's newest sample.
"""

from __future__ import annotations

import json
import time

from riverbed.config.metric_names import COUNTERS, is_counter
from riverbed.state.records import Sample
from riverbed.state.sql.database import Database

SCHEMA = """
create table if not exists metrics (
  name    text not null,
  labels  text not null,
  value   real not null,
  ts      real not null
);
create index if not exists metrics_by_name on metrics (name, ts);
create index if not exists metrics_by_ts on metrics (ts);
"""


class SQLMetrics:
    def __init__(self, db: Database):
        self._db = db

    def record(
        self,
        values: dict[str, float],
        labels: dict[str, str] | None = None,
        ts: float | None = None,
    ) -> None:
        """Record one sample of each metric in ``values``, all with ``labels``, at ``ts``."""
        now = time.time() if ts is None else ts
        encoded = json.dumps(labels or {}, sort_keys=True)
        with self._db.write() as db:
            db.executemany(
                "insert into metrics (name, labels, value, ts) values (?, ?, ?, ?)",
                [(name, encoded, float(value), now) for name, value in values.items()],
            )

    def series(
        self,
        name: str,
        since: float,
        until: float | None = None,
        labels: dict[str, str] | None = None,
    ) -> list[tuple[float, float]]:
        """(ts, value) of ``name`` in [since, until), oldest first; only samples whose labels
        include every given label."""
        rows = self._db.rows(
            "select ts, value, labels from metrics where name = ? and ts >= ? and ts < ?"
            " order by ts",
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
        rows = self._db.rows(
            _newest("name, labels") + " order by name, labels", (_like_prefix(prefix),)
        )
        return [Sample(name, value, ts, json.loads(labels)) for name, labels, value, ts in rows]

    def newest(self, prefix: str = "") -> dict[str, tuple[float, float]]:
        """The newest value of each metric whose name starts with ``prefix``, whatever its
        labels: name -> (value, ts)."""
        rows = self._db.rows(_newest("name"), (_like_prefix(prefix),))
        return {r[0]: (r[2], r[3]) for r in rows}

    def totals(self) -> list[Sample]:
        """Every counter's value by (name, labels): the sum of its increments, stamped with
        the newest one's time."""
        rows = self._db.rows(
            "select name, labels, sum(value), max(ts) from metrics"
            " group by name, labels order by name, labels"
        )
        return [
            Sample(name, value, ts, json.loads(labels))
            for name, labels, value, ts in rows
            if is_counter(name)
        ]

    def prune(self, older_than: float, now: float | None = None) -> int:
        """Delete samples older than ``older_than`` seconds, keeping each gauge's newest one
        (a gauge that stopped changing still has a current value) and folding each counter's
        old increments into one sample (its value must never go down). Returns the rows
        deleted."""
        cutoff = (time.time() if now is None else now) - older_than
        # runs after every pipeline run: the ts index finds the (usually no) old samples, and
        # the (name, ts) index answers "is there a newer one" for each, so the cost does not
        # grow with the table
        with self._db.write() as db:
            old = db.execute(
                "select name, labels, sum(value), max(ts), count(*) from metrics where ts < ?"
                " group by name, labels having count(*) > 1",
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
                db.execute(
                    "insert into metrics (name, labels, value, ts) values (?, ?, ?, ?)",
                    (name, labels, total, ts),
                )
                deleted += count - 1
            counters = ", ".join("?" * len(COUNTERS))
            cursor = db.execute(
                "delete from metrics where ts < ? and exists (select 1 from metrics n"
                " where n.name = metrics.name and n.labels = metrics.labels and n.ts > metrics.ts)"
                # gauges only: a counter's folded sample is part of its value
                f" and name not in ({counters}) and name not like '%\\_total' escape '\\'",
                (cutoff, *sorted(COUNTERS)),
            )
            return deleted + cursor.rowcount


def _newest(series: str) -> str:
    """The newest sample (name, labels, value, ts) of each ``series`` (the columns that tell
    one from another) among the metrics whose name is like a parameter. (SQLite would take a
    bare ``value`` beside ``max(ts)`` from the newest row; PostgreSQL takes no bare column.)"""
    return (
        "select name, labels, value, ts from (select name, labels, value, ts, row_number()"
        f" over (partition by {series} order by ts desc) as newest from metrics"
        " where name like ? escape '\\') as samples where newest = 1"
    )


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
