"""Metrics as the stages read them: every stage records what it did (rows, files, bytes,
seconds, lag) through the state store's metrics repository (riverbed.state.store.Metrics,
counters as increments and gauges as readings: riverbed.config.metric_names.is_counter);
alarms, `riverbed status` and the Prometheus endpoint read them back. ``_seconds`` and
``_bytes`` name units.
"""

from __future__ import annotations

from riverbed.config.metric_names import SINCE_LAST_SUCCESS as SINCE_LAST_SUCCESS
from riverbed.state import StateStore

RETENTION_SECONDS = 14 * 24 * 3600  # samples older than this are pruned after each run


def since_last_success(manifest: StateStore, now: float) -> float | None:
    """Seconds from the end of the last successful run to ``now`` (from the start of the first
    run when none succeeded yet); None before any run. Computed whenever it is needed: a value
    stored at some instant is stale the next second."""
    last = manifest.runs.last_success()
    since = last if last is not None else manifest.runs.first_started()
    return None if since is None else max(0.0, now - since)
