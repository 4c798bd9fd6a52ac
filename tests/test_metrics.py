"""The metrics store: samples read back by name, labels and time; old samples pruned, except
each series' newest (a gauge that stopped changing still has a current value)."""

from __future__ import annotations

from pathlib import Path

from riverbed.state import SQLiteStore


def test_prune_drops_old_samples_but_keeps_each_series_newest(tmp_path: Path) -> None:
    manifest = SQLiteStore(tmp_path / "state.db")
    metrics = manifest.metrics
    try:
        for ts in (100.0, 200.0, 300.0):
            metrics.record({"rows": ts}, {"table": "a"}, ts=ts)
        metrics.record({"rows": 7.0}, {"table": "b"}, ts=150.0)  # old, but b's newest
        metrics.record({"lag": 1.0}, ts=900.0)
        deleted = metrics.prune(older_than=500, now=1000.0)  # cutoff 500
        assert deleted == 2
        assert metrics.series("rows", 0, labels={"table": "a"}) == [(300.0, 300.0)]
        assert metrics.series("rows", 0, labels={"table": "b"}) == [(150.0, 7.0)]
        assert metrics.series("lag", 0) == [(900.0, 1.0)]
        assert metrics.prune(older_than=500, now=1000.0) == 0
        latest = {(s.name, tuple(s.labels.items())): s.value for s in metrics.latest()}
        assert latest == {
            ("lag", ()): 1.0,
            ("rows", (("table", "a"),)): 300.0,
            ("rows", (("table", "b"),)): 7.0,
        }
    finally:
        manifest.close()


def test_prune_folds_a_counters_old_increments_into_one(tmp_path: Path) -> None:
    manifest = SQLiteStore(tmp_path / "state.db")
    metrics = manifest.metrics
    try:
        for ts in (100.0, 200.0, 300.0, 900.0):
            metrics.record({"load_rows": 10.0, "capture_rows_total": 2.0}, {"table": "a"}, ts=ts)
        assert metrics.prune(older_than=500, now=1000.0) == 4  # 3 -> 1, twice
        totals = {s.name: s.value for s in metrics.totals()}
        assert totals == {"load_rows": 40.0, "capture_rows_total": 8.0}
        # the folded sample is old: an alarm's recent periods see only recent increments
        assert metrics.series("load_rows", 500.0) == [(900.0, 10.0)]
    finally:
        manifest.close()
