"""Prometheus exposition of the state store's metrics.

The numbers are not kept in this process: every stage writes samples to the state store
(written by other processes), and each scrape reads them from there. A counter
(``riverbed.observe.metrics.is_counter``) is exposed as a counter, ``riverbed_<name>_total``:
the sum of its stored increments, which never goes down (pruning folds old increments, it does
not drop them). Every other metric is a gauge: its newest sample. ``seconds_since_last_success``
is computed at scrape time from the run history, not read from a stored sample, which is stale
a second later. Sample timestamps are not exposed: Prometheus rejects samples far in the past,
and a value that has not changed for hours is still the current one.

``StateStoreCollector`` is a plain ``prometheus_client`` collector; ``metrics_text`` renders
it, and is what the web app's /metrics route (riverbed.serve.metrics) answers with.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from riverbed.config.metric_names import SINCE_LAST_SUCCESS, is_counter
from riverbed.observe.metrics import since_last_success
from riverbed.state import Sample, StateStore, open_store

log = logging.getLogger(__name__)

PREFIX = "riverbed_"
UP = "riverbed_up"
METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # Prometheus text format 0.0.4


def metric_name(name: str) -> str:
    """``riverbed_<name>`` in Prometheus' metric-name charset (others become ``_``)."""
    return PREFIX + re.sub(r"[^a-zA-Z0-9_:]", "_", name)


def label_name(name: str) -> str:
    """``name`` in Prometheus' label-name charset; never empty, never the reserved ``__``."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    if cleaned.startswith("__"):
        cleaned = "_" + cleaned.lstrip("_")
    return cleaned


# the state store to read: the SQLite file at a path, or what opens the project's store (None
# while there is none yet)
StateSource = Path | Callable[[], StateStore | None]


class StateStoreCollector(Collector):
    """One family per metric name in the state store ``state`` (a counter or a gauge), one
    sample per label set, plus ``riverbed_up 1``. ``refresh``, if given, runs before each
    read: it records what must be measured at scrape time (the capture lag, from the source)."""

    def __init__(self, state: StateSource, refresh: Callable[[], None] | None = None):
        self.state = state
        self.refresh = refresh

    def describe(self) -> Iterable[Metric]:
        # nothing to declare up front: registering must not open the store (the names are
        # only known at scrape time)
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(UP, "1 while the Riverbed metrics exporter answers")
        up.add_metric([], 1.0)
        yield up
        yield from families(*self._read())

    def _read(self) -> tuple[list[Sample], list[Sample]]:
        """(counters, gauges) of the store, as of now."""
        # a missing store is a pipeline that has not run yet, not an error; opening the
        # StateStore would create it, so look first
        if isinstance(self.state, Path) and not self.state.exists():
            return [], []
        if self.refresh is not None:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the stored values are still worth serving
                log.warning("metrics not refreshed before the scrape: %s", exc)
        # opened per scrape: other processes write the store, and a connection held open
        # across scrapes would pin the WAL and outlive a store that was replaced
        manifest = open_store(self.state) if isinstance(self.state, Path) else self.state()
        if manifest is None:
            return [], []
        try:
            metrics = manifest.metrics
            now = time.time()
            gauges = [
                s
                for s in metrics.latest()
                if not is_counter(s.name) and s.name != SINCE_LAST_SUCCESS
            ]
            gauges = _without_stale_lag(gauges)
            since = since_last_success(manifest, now)
            if since is not None:
                gauges.append(Sample(SINCE_LAST_SUCCESS, since, now))
            return metrics.totals(), gauges
        finally:
            manifest.close()


def _without_stale_lag(gauges: list[Sample]) -> list[Sample]:
    """``gauges`` less the capture lag when the source was down at the last measurement
    (source_up 0, newer than the lag): the stored lag is not current then, and serving it (a
    0, say) would look like a caught-up lake; absent, it is what absent() alerts on."""
    down = [s.ts for s in gauges if s.name == "source_up" and s.value == 0]
    if not down:
        return gauges
    return [
        s
        for s in gauges
        if not (s.name in ("capture_lag_bytes", "capture_lag_seconds") and s.ts <= max(down))
    ]


def families(
    counters: Iterable[Sample], gauges: Iterable[Sample]
) -> list[CounterMetricFamily | GaugeMetricFamily]:
    """Counter and gauge families for the samples, after sanitizing names and labels.

    A counter's family is its name without ``_total`` (the exposition adds it back). Two stored
    series that sanitize to the same name and labels would be an invalid exposition (a
    duplicate sample): a counter's are added up, of a gauge's the newer one is kept; a name
    that is a counter's and a gauge's is the counter's.
    """
    newest: dict[str, dict[tuple[tuple[str, str], ...], Sample]] = {}
    totals: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for sample in counters:
        name = metric_name(sample.name).removesuffix("_total")
        series = totals.setdefault(name, {})
        labels = _labels(sample)
        series[labels] = series.get(labels, 0.0) + float(sample.value)
    for sample in gauges:
        name = metric_name(sample.name)
        if name == UP or name in totals:
            continue  # ours, or a counter's; a stored metric named "up" must not duplicate it
        labels = _labels(sample)
        kept_series = newest.setdefault(name, {})
        kept = kept_series.get(labels)
        if kept is None or sample.ts >= kept.ts:
            kept_series[labels] = sample
    result: list[CounterMetricFamily | GaugeMetricFamily] = []
    for name in sorted(set(newest) | set(totals)):
        # add_sample, not add_metric: series of one metric recorded by different stages
        # may carry different label names, and add_metric wants one fixed set
        if name in totals:
            counter = CounterMetricFamily(name, f"Riverbed counter {name[len(PREFIX) :]}")
            for labels, total in sorted(totals[name].items()):
                counter.add_sample(name + "_total", dict(labels), total)
            result.append(counter)
        else:
            gauge = GaugeMetricFamily(name, f"Riverbed gauge {name[len(PREFIX) :]}")
            for labels, sample in sorted(newest[name].items()):
                gauge.add_sample(name, dict(labels), float(sample.value))
            result.append(gauge)
    return result


def _labels(sample: Sample) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({label_name(k): str(v) for k, v in sample.labels.items()}.items()))


def metrics_text(state: StateSource, refresh: Callable[[], None] | None = None) -> bytes:
    """The exposition (text format 0.0.4, CONTENT_TYPE) of the state store ``state``,
    ``refresh`` run first (see StateStoreCollector): what /metrics answers
    (riverbed.serve.metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateStoreCollector(state, refresh))
    return generate_latest(registry)
