"""When ``riverbed run`` starts its next run: every N seconds, or on a cron expression
(parsed by riverbed.config.cron: the config checks an expression with the same parser when it
loads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from riverbed.config.cron import CronSchedule, as_utc


class Schedule(Protocol):
    """When the next run starts."""

    def next_after(self, t: datetime) -> datetime:
        """The first start time strictly after ``t`` (tz-aware; the result is in UTC)."""
        ...


@dataclass(frozen=True)
class EverySchedule:
    """A run every ``seconds`` seconds, counted from the reference time given."""

    seconds: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"every: {self.seconds} seconds; it must be a positive number")

    def __str__(self) -> str:
        return f"every {self.seconds:g}s"

    def next_after(self, t: datetime) -> datetime:
        """``t`` plus the interval, in UTC."""
        return as_utc(t) + timedelta(seconds=self.seconds)


def schedule_for(every_seconds: float | None, cron: str | None) -> Schedule | None:
    """The schedule ``riverbed run`` follows: every N seconds, a cron expression, or None
    (one run, then exit). Setting both is an error: which one would win is not obvious."""
    if every_seconds is not None and cron is not None:
        raise ValueError(
            "orchestration: every_seconds and cron are both set; keep one of them "
            f"(every_seconds: {every_seconds:g}, cron: '{cron}')"
        )
    if cron is not None:
        return CronSchedule(cron)
    if every_seconds is not None:
        return EverySchedule(every_seconds)
    return None
