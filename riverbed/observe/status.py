"""What `riverbed status` reports: source, capture position and lag, the lake's contents."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from riverbed.config.loader import Project
from riverbed.errors import RiverbedError, SlotReplaced
from riverbed.lake.positions import format_lsn
from riverbed.source.connection import source_for
from riverbed.state import StateStore, TableSummary, existing_state
from riverbed.state.records import BatchQuality, Lag


def gather(
    project: Project, measure_lag: Callable[[StateStore], Lag | None] = lambda _: None
) -> dict[str, Any]:
    """The report; ``measure_lag`` measures the capture lag from the source when no capture
    runs (riverbed.capture.lag, which the command line hands in: observe imports no stage),
    raising SlotReplaced when the slot is another project's."""
    cfg = project.config
    source = source_for(project)
    slot = cfg.source.slot
    report: dict[str, Any] = {
        "source": {"dsn": source.display, "state": "unknown"},
        "capture": {
            "slot": None,
            "position": None,
            "lag_bytes": None,
            "lag_seconds": None,
            "slot_replaced": False,  # another project took the slot over: no lag measured
            "files": 0,
            "rows": 0,
        },
        "lake": {},
        "quality": [],
        "bad_files": [],
        "runs": [],
        "alarms": [],
        "last_hour": {},
    }
    manifest = existing_state(project)
    if manifest is not None:
        slot = manifest.capture.names(cfg.source)[0]
    position = manifest.capture.position(slot) if manifest and slot else None
    try:
        with source.connect(autocommit=True) as conn:
            conn.execute("select 1")
            report["source"]["state"] = "reachable"
    except RiverbedError:
        report["source"]["state"] = "unreachable"
    if manifest is None:
        return report
    try:
        lake = manifest.lake.summary("raw")
        metrics = manifest.metrics.newest("capture_")
        if position is not None:
            cap = report["capture"]
            cap["slot"] = slot
            cap["position"] = format_lsn(position)
            # measured now when no capture runs; a running capture's own samples otherwise
            try:
                lag = measure_lag(manifest) if report["source"]["state"] == "reachable" else None
            except SlotReplaced:  # another project's slot: its lag is not this lake's
                lag, cap["slot_replaced"] = None, True
            if lag is not None:
                cap["lag_bytes"], cap["lag_seconds"] = lag.bytes, lag.seconds
            elif report["source"]["state"] == "reachable" and not cap["slot_replaced"]:
                # a capture's own samples (it holds the slot); with the source unreachable
                # nothing is measured, and the last sample would pass for the lag now
                for key in ("lag_bytes", "lag_seconds"):
                    sample = metrics.get(f"capture_{key}")
                    cap[key] = sample[0] if sample else None
            cap["files"] = sum(t.files for t in lake.values())
            cap["rows"] = sum(t.rows for t in lake.values())
            cap["metrics_at"] = max((ts for _, ts in metrics.values()), default=None)
        report["lake"] = _lake_tables(lake)
        report["quality"] = [_quality(b) for b in manifest.transform.quality()]
        report["bad_files"] = [asdict(b) for b in manifest.transform.bad_files()]
        report["runs"] = _runs(manifest)
        report["alarms"] = [asdict(s) for s in manifest.alarms.states()]
        report["last_hour"] = _last_hour(manifest, time.time())
        report["generated_at"] = time.time()
    finally:
        manifest.close()
    return report


def _quality(batch: BatchQuality) -> dict[str, Any]:
    return {
        "table": batch.table,
        "batch_id": batch.batch_id,
        "status": batch.status,
        "rows_in": batch.rows_in,
        "rows_out": batch.rows_out,
        "rows_quarantined": batch.rows_quarantined,
        "at": batch.at,
        # as `run --json` shows a rule's result, with the ratio unrounded
        "rules": [{**r.as_dict(), "ratio": r.ratio} for r in batch.results],
    }


def _lake_tables(lake: dict[str, TableSummary]) -> dict[str, dict[str, Any]]:
    """Each table's raw files in the lake, as the report shows them."""
    tables: dict[str, dict[str, Any]] = {}
    for table, info in lake.items():
        landed = info.landed_at
        tables[table] = {
            "files": info.files,
            "rows": info.rows,
            "snapshot_rows": info.snapshot_rows,
            "schema_version": info.schema_version,
            "landed_at": datetime.fromtimestamp(landed, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if landed
            else None,
        }
    return tables


def _runs(manifest: StateStore, limit: int = 5) -> list[dict[str, Any]]:
    """The latest runs (the orchestrator's history), newest first."""
    return [
        {
            "run_id": run.run_id,
            # kill -9: running in the history until the next run
            "status": "died" if run.process_gone() else run.status,
            "trigger": run.trigger,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "failed_state": run.failed_state,
            "error": run.error,
        }
        for run in manifest.runs.latest(limit)
    ]


def _last_hour(manifest: StateStore, now: float) -> dict[str, float]:
    """Sums of the pipeline's counters over the last hour, and the slowest run."""
    metrics = manifest.metrics
    since = now - 3600
    out: dict[str, float] = {}
    for name in (
        "transform_rows_in",
        "transform_rows_quarantined",
        "load_rows",
        "runs_succeeded",
        "runs_failed",
    ):
        out[name] = sum(v for _, v in metrics.series(name, since))
    durations = [v for _, v in metrics.series("run_duration_seconds", since)]
    out["slowest_run_seconds"] = max(durations, default=0.0)
    return out
