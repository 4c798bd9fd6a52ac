"""Every metric name Riverbed records, in one place: what an alarm may name.

A leaf (no imports), so the config can check ``alarms.<name>.metric`` at load without importing
the stages. A stage that records a new metric adds its name here; tests check that every name
recorded is listed (a misspelt alarm metric is refused at load instead of staying
INSUFFICIENT_DATA forever). No metric name is templated: per-table and per-state series are
told apart by labels, so a plain set is enough.
"""

SINCE_LAST_SUCCESS = "seconds_since_last_success"  # a gauge of the clock: see since_last_success

# stored as increments: see is_counter
COUNTERS = frozenset(
    {
        "transform_rows_in",
        "transform_rows_out",
        "transform_rows_quarantined",
        "transform_batches",
        "quality_failures",
        "quality_rows_checked",
        "quality_rows_failed",
        "load_rows",
        "load_batches",
        "state_retries",
        "state_failures",
        "runs_succeeded",
        "runs_failed",
        "runs_taken_over",  # runs whose process died, aborted by the next run's lock
        "published_runs",
        "extract_refresh_failures",  # publish could not refresh the extract (serve.extracts)
        "extract_refresh_deferred",  # `run --follow` left it to a later run (extract_every)
        "notifications_given_up",
        "capture_rows_total",
        "capture_files_total",
        "capture_bytes_total",
        "capture_transactions_total",
        "capture_interruptions_total",
        "capture_slot_invalidated_total",  # a capture refused: the server invalidated its slot  # a capture --follow retrying a transient failure
    }
)

# readings: the newest sample is the value
GAUGES = frozenset(
    {
        "capture_lag_bytes",
        "capture_lag_seconds",
        "capture_position",
        "source_up",  # 0 when the source could not be reached to measure the capture lag
        "state_duration_seconds",
        "run_duration_seconds",
        "run_peak_rss_bytes",
        "warehouse_loaded_at",
        "extract_loaded_at",  # when the warehouse data the current extract reflects was loaded
        "extract_refreshed_at",  # when the current extract was published
        "extract_refresh_seconds",
        "extract_cells_refreshed",
        # cells given a renamed dimension member's new label (relabel.py), and the seconds:
        # each renamed member's cells over all its history
        "extract_cells_relabelled",
        "extract_relabel_seconds",
        SINCE_LAST_SUCCESS,
    }
)

# derived metric -> (numerator, denominator): both counters, summed per period
RATIOS: dict[str, tuple[str, str]] = {
    "quality_failure_ratio": ("quality_rows_failed", "quality_rows_checked"),
}

METRIC_NAMES = frozenset(COUNTERS | GAUGES | set(RATIOS))


def is_counter(name: str) -> bool:
    """Whether samples of ``name`` are increments of a counter (else readings of a gauge).

    A counter (COUNTERS, or any name ending in ``_total``) is stored as increments: each sample
    is what one run, batch or flush added; its value is the sum of its samples, which only
    grows. A gauge (every other name) is a reading: its value is its newest sample."""
    return name in COUNTERS or name.endswith("_total")
