"""Alarms with CloudWatch semantics over the metrics in the state store.

An alarm looks at the last ``evaluation_periods`` periods of ``period_seconds`` ending at
``now``; period i covers [now - (i+1)*p, now - i*p), so a sample stamped exactly ``now`` belongs
to the next evaluation. Per period, the statistic over every sample of the metric (all label
sets together) is one datapoint; a period without samples is missing. A datapoint breaches when
``value <comparison> threshold``, and the alarm is in ALARM when at least M of them breach
(M = datapoints_to_alarm, default evaluation_periods). Missing datapoints are treated as
configured:

    missing        not counted; all missing -> INSUFFICIENT_DATA
    ignore         not counted; all missing -> the state does not change
    breaching      counted as breaching
    not_breaching  counted as not breaching

A ratio metric (RATIOS) is metric math, as CloudWatch's ``m1 / m2`` over two Sum statistics:
its datapoint in a period is the sum of the numerator's samples over the sum of the
denominator's, missing when the denominator has none; the alarm's ``statistic`` does not apply.
``quality_failure_ratio`` is one: rows failed over rows checked by the quality rules in the
period, so one bad row in a 7-row batch counts as one row of the period, not as 14%.

The decision is the pure :func:`decide`, so every treatment is testable without a database.
:func:`evaluate_alarms` wraps it: it reads the current state and writes the new one and any
transition (the state store's alarms: riverbed.state.store.AlarmState) in ONE transaction (two processes evaluating at once cannot both record the same
transition), and only after the commit tells the notifiers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from riverbed.config.alarms import AlarmConfig
from riverbed.config.metric_names import RATIOS
from riverbed.config.models import RiverbedConfig
from riverbed.observe.notify import Dispatcher
from riverbed.state import StateStore
from riverbed.state.records import AlarmStateName as State
from riverbed.state.records import AlarmStatus, AlarmTransition

INITIAL_STATE: State = "INSUFFICIENT_DATA"  # of an alarm never evaluated

_COMPARE = {
    ">": lambda value, threshold: value > threshold,
    ">=": lambda value, threshold: value >= threshold,
    "<": lambda value, threshold: value < threshold,
    "<=": lambda value, threshold: value <= threshold,
}


@dataclass(frozen=True)
class Decision:
    """What one evaluation concluded. ``value`` is the newest datapoint, None if all missing."""

    state: State
    reason: str
    value: float | None


def statistic(name: str, values: Sequence[float]) -> float | None:
    """``name`` (average, sum, minimum, maximum, sample_count) of ``values``; None when empty."""
    if not values:
        return None
    if name == "average":
        return sum(values) / len(values)
    if name == "sum":
        return float(sum(values))
    if name == "minimum":
        return min(values)
    if name == "maximum":
        return max(values)
    if name == "sample_count":
        return float(len(values))
    raise ValueError(f"unknown statistic {name!r}")  # AlarmConfig admits only the five above


def datapoints(
    alarm: AlarmConfig, samples: Sequence[tuple[float, float]], now: float
) -> list[float | None]:
    """The alarm's datapoints from (ts, value) samples, oldest period first, None = missing."""
    return [statistic(alarm.statistic, bucket) for bucket in _periods(alarm, samples, now)]


def ratio_datapoints(
    alarm: AlarmConfig,
    numerator: Sequence[tuple[float, float]],
    denominator: Sequence[tuple[float, float]],
    now: float,
) -> list[float | None]:
    """A ratio metric's datapoints: per period, sum(numerator) / sum(denominator); None
    (missing) for a period whose denominator has no samples or sums to 0."""
    tops = _periods(alarm, numerator, now)
    bottoms = _periods(alarm, denominator, now)
    return [sum(top) / sum(bottom) if sum(bottom) else None for top, bottom in zip(tops, bottoms)]


def _periods(
    alarm: AlarmConfig, samples: Sequence[tuple[float, float]], now: float
) -> list[list[float]]:
    """The values of ``samples`` in each of the alarm's periods, oldest first."""
    periods = alarm.evaluation_periods
    p = alarm.period_seconds
    buckets: list[list[float]] = [[] for _ in range(periods)]
    for ts, value in samples:
        age = now - ts
        if 0 < age <= periods * p:
            # period i holds ages in (i*p, (i+1)*p]; clamped so float rounding at a boundary
            # cannot push a sample out of the window
            ago = min(max(math.ceil(age / p) - 1, 0), periods - 1)
            buckets[periods - 1 - ago].append(value)
    return buckets


def decide(alarm: AlarmConfig, points: Sequence[float | None], current: State) -> Decision:
    """The alarm's new state given its datapoints (oldest first, None = missing)."""
    needed = alarm.datapoints_to_alarm or alarm.evaluation_periods
    treatment = alarm.treat_missing_data
    present = [v for v in points if v is not None]
    newest = present[-1] if present else None
    shown = ", ".join("missing" if v is None else f"{v:g}" for v in points)
    ratio = RATIOS.get(alarm.metric)
    of = (
        f"{alarm.statistic} of {alarm.metric}"
        if ratio is None
        else (f"{alarm.metric} (sum of {ratio[0]} / sum of {ratio[1]})")
    )
    what = f"{of} over {len(points)} period(s) of {alarm.period_seconds} s"
    if not present and treatment in ("missing", "ignore"):
        if treatment == "ignore":
            return Decision(
                current, f"no data in the {what}; state kept (treat_missing_data: ignore)", None
            )
        return Decision("INSUFFICIENT_DATA", f"no data in the {what}", None)

    breaching = sum(1 for v in present if _COMPARE[alarm.comparison](v, alarm.threshold))
    missing = len(points) - len(present)
    if treatment == "breaching":
        breaching += missing
    state: State = "ALARM" if breaching >= needed else "OK"
    if treatment in ("breaching", "not_breaching"):
        counted = len(points)
        note = f"; missing counted as {treatment.replace('_', ' ')}" if missing else ""
    else:
        counted = len(present)
        note = "; missing not counted" if missing else ""
    reason = (
        f"{breaching} of {counted} datapoint(s) {alarm.comparison} {alarm.threshold:g} "
        f"({what}: [{shown}], oldest first{note}); {needed} needed for ALARM"
    )
    return Decision(state, reason, newest)


def evaluate_alarms(
    config: RiverbedConfig, manifest: StateStore, now: float, dispatcher: Dispatcher | None
) -> list[AlarmTransition]:
    """Evaluate every configured alarm at ``now``; persist states and transitions, and send
    one event per transition to the alarm's notifiers. Returns the transitions."""
    metrics = manifest.metrics
    windows: dict[str, list[float | None]] = {}
    for name, alarm in config.alarms.items():
        since = now - alarm.evaluation_periods * alarm.period_seconds
        ratio = RATIOS.get(alarm.metric)
        if ratio is None:
            windows[name] = datapoints(alarm, metrics.series(alarm.metric, since, now), now)
        else:
            top, bottom = (metrics.series(m, since, now) for m in ratio)
            windows[name] = ratio_datapoints(alarm, top, bottom, now)

    transitions: list[AlarmTransition] = []
    with manifest.transaction():
        current = {s.alarm: s.state for s in manifest.alarms.states()}
        for name, points in windows.items():
            old = current.get(name, INITIAL_STATE)
            decision = decide(config.alarms[name], points, old)
            manifest.alarms.save(
                AlarmStatus(
                    alarm=name,
                    state=decision.state,
                    since=now,
                    reason=decision.reason,
                    value=decision.value,
                )
            )
            if decision.state != old:
                transition = AlarmTransition(
                    alarm=name,
                    old_state=old,
                    new_state=decision.state,
                    reason=decision.reason,
                    value=decision.value,
                    ts=now,
                )
                manifest.alarms.add_transition(transition)
                transitions.append(transition)
    # after the commit: never announce a transition that was rolled back
    if dispatcher is not None:
        for transition in transitions:
            alarm = config.alarms[transition.alarm]
            if alarm.notify:
                dispatcher.send(alarm.notify, alarm_event(alarm, transition))
    return transitions


def alarm_event(alarm: AlarmConfig, transition: AlarmTransition) -> dict[str, Any]:
    """The notification for ``transition``."""
    return {
        "kind": "alarm",
        "alarm": transition.alarm,
        "state": transition.new_state,
        "previous": transition.old_state,
        "reason": transition.reason,
        "metric": alarm.metric,
        "value": transition.value,
        "threshold": alarm.threshold,
        "at": _iso(transition.ts),
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
