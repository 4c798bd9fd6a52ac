"""Alarms: CloudWatch's decision rules (pure), and evaluation over real metrics in a real state
store, with persisted transitions and notifications through the real Dispatcher."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from riverbed.config.alarms import AlarmConfig
from riverbed.config.loader import parse_config
from riverbed.config.models import RiverbedConfig
from riverbed.observe.alarms import (
    datapoints,
    decide,
    evaluate_alarms,
    ratio_datapoints,
    statistic,
)
from riverbed.observe.notify import Dispatcher
from riverbed.state import SQLiteStore, StateStore
from riverbed.state.records import AlarmTransition

P = 60  # period_seconds in every test
T0 = 1_700_000_000.0  # a period boundary of the tests' clock


def alarm(**settings: Any) -> AlarmConfig:
    return AlarmConfig(
        **{"metric": "capture_lag_seconds", "period_seconds": P, "threshold": 3, **settings}
    )


def config_with(**alarms: dict[str, Any]) -> RiverbedConfig:
    text = yaml.safe_dump(
        {
            "notifiers": {"rec": {"type": "log"}},
            "alarms": {
                name: {
                    "metric": "capture_lag_seconds",
                    "period_seconds": P,
                    "threshold": 3,
                    "notify": ["rec"],
                }
                | settings
                for name, settings in alarms.items()
            },
        }
    )
    return parse_config(text, "test")


class Recorder:
    """A notifier that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def notify(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)


@pytest.fixture
def manifest(tmp_path: Path) -> StateStore:
    return SQLiteStore(tmp_path / "state.db")


def evaluate(config: RiverbedConfig, manifest: StateStore, now: float) -> list[AlarmTransition]:
    return evaluate_alarms(config, manifest, now, None)


# --- the pure decision ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("treatment", "points", "current", "expected"),
    [
        # missing: missing periods are not counted; all missing -> INSUFFICIENT_DATA
        ("missing", [None, None, None], "ALARM", "INSUFFICIENT_DATA"),
        ("missing", [None, None, None], "OK", "INSUFFICIENT_DATA"),
        ("missing", [5, 5, 5], "OK", "ALARM"),
        ("missing", [None, 5, 5], "OK", "ALARM"),  # 2 breaching, M = 2
        ("missing", [None, None, 5], "OK", "OK"),  # 1 breaching < M
        ("missing", [None, 1, None], "ALARM", "OK"),
        # ignore: like missing, but all missing keeps the state
        ("ignore", [None, None, None], "ALARM", "ALARM"),
        ("ignore", [None, None, None], "OK", "OK"),
        ("ignore", [None, None, None], "INSUFFICIENT_DATA", "INSUFFICIENT_DATA"),
        ("ignore", [None, 5, 5], "OK", "ALARM"),
        ("ignore", [None, None, 1], "ALARM", "OK"),
        # breaching: missing periods count as breaching
        ("breaching", [None, None, None], "INSUFFICIENT_DATA", "ALARM"),
        ("breaching", [1, None, None], "OK", "ALARM"),
        ("breaching", [1, 1, None], "ALARM", "OK"),
        # not_breaching: missing periods count as not breaching
        ("not_breaching", [None, None, None], "ALARM", "OK"),
        ("not_breaching", [5, None, None], "OK", "OK"),
        ("not_breaching", [5, None, 5], "OK", "ALARM"),
    ],
)
def test_missing_data_treatments(
    treatment: str, points: list[float | None], current: str, expected: str
) -> None:
    rule = alarm(evaluation_periods=3, datapoints_to_alarm=2, treat_missing_data=treatment)
    decision = decide(rule, points, current)  # type: ignore[arg-type]
    assert decision.state == expected


@pytest.mark.parametrize(
    ("points", "m", "expected"),
    [
        ([5, 1, 5], 2, "ALARM"),
        ([5, 1, 5], 3, "OK"),
        ([1, 1, 5], 1, "ALARM"),
        ([1, 1, 1], 1, "OK"),
        ([5, 5, 5], None, "ALARM"),  # M defaults to evaluation_periods
        ([5, 5, 1], None, "OK"),
    ],
)
def test_m_of_n(points: list[float], m: int | None, expected: str) -> None:
    rule = alarm(evaluation_periods=3, datapoints_to_alarm=m)
    assert decide(rule, points, "OK").state == expected


@pytest.mark.parametrize(
    ("comparison", "below", "equal", "above"),
    [
        (">", "OK", "OK", "ALARM"),
        (">=", "OK", "ALARM", "ALARM"),
        ("<", "ALARM", "OK", "OK"),
        ("<=", "ALARM", "ALARM", "OK"),
    ],
)
def test_comparisons(comparison: str, below: str, equal: str, above: str) -> None:
    rule = alarm(comparison=comparison)
    assert [decide(rule, [v], "OK").state for v in (2.5, 3, 3.5)] == [below, equal, above]


def test_reason_names_the_statistic_values_comparison_threshold_and_periods() -> None:
    rule = alarm(statistic="maximum", comparison=">=", evaluation_periods=3, datapoints_to_alarm=2)
    decision = decide(rule, [7, None, 4.5], "OK")
    assert decision.state == "ALARM"
    assert decision.value == 4.5  # the newest datapoint
    for part in (
        "maximum of capture_lag_seconds",
        ">= 3",
        "[7, missing, 4.5]",
        "3 period(s) of 60 s",
        "2 of 2",
    ):
        assert part in decision.reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [("average", 3.0), ("sum", 9.0), ("minimum", 1.0), ("maximum", 6.0), ("sample_count", 3.0)],
)
def test_statistics(name: str, expected: float) -> None:
    assert statistic(name, [2.0, 6.0, 1.0]) == expected
    assert statistic(name, []) is None


def test_window_boundaries() -> None:
    """Period i covers [now - (i+1)p, now - ip): a sample at now belongs to the next one."""
    rule = alarm(evaluation_periods=3, statistic="sum")
    now = T0 + 3 * P
    samples = [
        (T0 - 0.5, 100.0),  # before the window
        (T0, 1.0),  # oldest period's first instant
        (T0 + P - 0.5, 2.0),  # still the oldest period
        (T0 + P, 10.0),  # middle period
        (now - 0.5, 20.0),  # newest period
        (now, 1000.0),  # not yet: the next evaluation's
    ]
    assert datapoints(rule, samples, now) == [3.0, 10.0, 20.0]
    assert datapoints(rule, samples[:2], now) == [1.0, None, None]


# --- evaluation over the state store ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("average", 3.0), ("sum", 9.0), ("minimum", 1.0), ("maximum", 6.0), ("sample_count", 3.0)],
)
def test_each_statistic_over_all_label_sets(
    manifest: StateStore, name: str, expected: float
) -> None:
    metrics = manifest.metrics
    metrics.record({"capture_lag_seconds": 2.0}, {"table": "orders"}, T0 + 1)
    metrics.record({"capture_lag_seconds": 6.0}, {"table": "customers"}, T0 + 2)
    metrics.record({"capture_lag_seconds": 1.0, "other": 500.0}, None, T0 + 3)
    at_threshold = config_with(a={"statistic": name, "threshold": expected, "comparison": ">="})
    above = config_with(a={"statistic": name, "threshold": expected, "comparison": ">"})

    [fired] = evaluate(at_threshold, manifest, T0 + P)
    assert (fired.new_state, fired.value) == ("ALARM", expected)
    [cleared] = evaluate(above, manifest, T0 + P)
    assert (cleared.old_state, cleared.new_state) == ("ALARM", "OK")


def test_missing_ok_alarm_ok_then_insufficient_data(manifest: StateStore) -> None:
    config = config_with(lag_high={"treat_missing_data": "missing"})
    metrics = manifest.metrics
    recorder = Recorder()
    dispatcher = Dispatcher({"rec": recorder})

    assert evaluate_alarms(config, manifest, T0, dispatcher) == []  # no data yet: stays
    assert manifest.alarms.states()[0].state == "INSUFFICIENT_DATA"

    metrics.record({"capture_lag_seconds": 1.0}, ts=T0 + 10)
    metrics.record({"capture_lag_seconds": 9.0}, ts=T0 + P + 10)
    metrics.record({"capture_lag_seconds": 2.0}, ts=T0 + 2 * P + 10)
    states = []
    for now in (T0 + P, T0 + 2 * P, T0 + 2 * P + 30, T0 + 3 * P, T0 + 10 * P):
        states += [
            (t.old_state, t.new_state) for t in evaluate_alarms(config, manifest, now, dispatcher)
        ]
    assert states == [
        ("INSUFFICIENT_DATA", "OK"),
        ("OK", "ALARM"),
        ("ALARM", "OK"),
        ("OK", "INSUFFICIENT_DATA"),
    ]
    assert dispatcher.close(timeout=30)
    assert [(e["previous"], e["state"]) for e in recorder.events] == states

    fired = recorder.events[1]
    assert fired == {
        "kind": "alarm",
        "alarm": "lag_high",
        "state": "ALARM",
        "previous": "OK",
        "reason": fired["reason"],
        "metric": "capture_lag_seconds",
        "value": 9.0,
        "threshold": 3.0,
        "at": "2023-11-14T22:15:20+00:00",
    }
    for part in ("1 of 1", "maximum of capture_lag_seconds", "> 3", "[9]", "1 period(s) of 60 s"):
        assert part in fired["reason"]

    history = manifest.alarms.history("lag_high")
    assert [(h.old_state, h.new_state) for h in history] == list(reversed(states))
    assert history[0].ts == T0 + 10 * P
    [state] = manifest.alarms.states()
    assert (state.alarm, state.state, state.since) == (
        "lag_high",
        "INSUFFICIENT_DATA",
        T0 + 10 * P,
    )


def test_each_change_is_recorded_once(manifest: StateStore) -> None:
    config = config_with(a={}, b={"threshold": 100})
    manifest.metrics.record({"capture_lag_seconds": 9.0}, ts=T0 + 10)

    first = evaluate(config, manifest, T0 + P)
    assert sorted((t.alarm, t.new_state) for t in first) == [("a", "ALARM"), ("b", "OK")]
    for _ in range(3):
        assert evaluate(config, manifest, T0 + P) == []
        assert evaluate(config, manifest, T0 + P + 5) == []
    assert len(manifest.alarms.history()) == 2
    assert [h.alarm for h in manifest.alarms.history("a")] == ["a"]
    assert len(manifest.alarms.history(limit=1)) == 1
    since = {s.alarm: s.since for s in manifest.alarms.states()}
    assert since == {"a": T0 + P, "b": T0 + P}  # unchanged by the later evaluations


def test_ignore_keeps_the_state_when_all_data_is_missing(manifest: StateStore) -> None:
    config = config_with(a={"treat_missing_data": "ignore"})
    assert evaluate(config, manifest, T0) == []  # nothing to keep but the initial state
    manifest.metrics.record({"capture_lag_seconds": 9.0}, ts=T0 + 1)
    assert [t.new_state for t in evaluate(config, manifest, T0 + P)] == ["ALARM"]
    assert evaluate(config, manifest, T0 + 5 * P) == []
    [state] = manifest.alarms.states()
    assert state.state == "ALARM" and "state kept" in state.reason


@pytest.mark.parametrize(("treatment", "state"), [("breaching", "ALARM"), ("not_breaching", "OK")])
def test_no_data_at_all_counts_as_treated(manifest: StateStore, treatment: str, state: str) -> None:
    config = config_with(a={"treat_missing_data": treatment, "evaluation_periods": 2})
    [transition] = evaluate(config, manifest, T0)
    assert (transition.old_state, transition.new_state, transition.value) == (
        "INSUFFICIENT_DATA",
        state,
        None,
    )


def test_m_of_n_over_the_state_store(manifest: StateStore) -> None:
    config = config_with(a={"evaluation_periods": 3, "datapoints_to_alarm": 2})
    metrics = manifest.metrics
    metrics.record({"capture_lag_seconds": 9.0}, ts=T0 + 1)
    metrics.record({"capture_lag_seconds": 1.0}, ts=T0 + P + 1)
    assert [t.new_state for t in evaluate(config, manifest, T0 + 2 * P)] == ["OK"]  # 1 of 2
    metrics.record({"capture_lag_seconds": 9.0}, ts=T0 + 2 * P + 1)
    assert [t.new_state for t in evaluate(config, manifest, T0 + 3 * P)] == ["ALARM"]  # 2 of 3
    # the first breach leaves the window: 1 of 3
    assert [t.new_state for t in evaluate(config, manifest, T0 + 4 * P)] == ["OK"]


def test_a_ratio_metric_divides_the_sums_of_each_period() -> None:
    """quality_failure_ratio: rows failed / rows checked per period, every batch weighed by
    its rows; a period without checked rows is missing."""
    ratio = alarm(metric="quality_failure_ratio", evaluation_periods=3)
    failed = [(T0 + 1, 1.0), (T0 + 2, 0.0), (T0 + P + 1, 3.0), (T0 + P + 2, 1.0)]
    checked = [(T0 + 1, 7.0), (T0 + 2, 193.0), (T0 + P + 1, 10.0), (T0 + P + 2, 10.0)]
    assert ratio_datapoints(ratio, failed, checked, T0 + 3 * P) == [0.005, 0.2, None]


def test_a_ratio_alarm_over_the_state_store(manifest: StateStore) -> None:
    config = config_with(q={"metric": "quality_failure_ratio", "threshold": 0.05})
    metrics = manifest.metrics
    for i in range(20):  # many small batches, one bad row each, beside a big healthy one
        metrics.record({"quality_rows_checked": 7, "quality_rows_failed": 1}, ts=T0 + 1 + i)
    metrics.record({"quality_rows_checked": 2000, "quality_rows_failed": 0}, ts=T0 + 30)
    [ok] = evaluate(config, manifest, T0 + P)
    assert (ok.new_state, ok.value) == ("OK", 20 / 2140)
    assert "quality_failure_ratio (sum of quality_rows_failed / sum of quality_rows_checked)" in (
        ok.reason
    )
    metrics.record({"quality_rows_checked": 100, "quality_rows_failed": 30}, ts=T0 + P + 1)
    [fired] = evaluate(config, manifest, T0 + 2 * P)
    assert (fired.new_state, fired.value) == ("ALARM", 0.3)
