"""Cron expressions: the five fields of Vixie cron (minute hour day-of-month month
day-of-week), evaluated in UTC. The config checks an expression with this parser when it loads,
and `riverbed run` schedules with it (riverbed.orchestrate.schedule), so every command refuses
what run would. Two of Vixie cron's rules surprise people, and we keep both so an expression
means here what it means in a crontab:

* when day-of-month AND day-of-week are both restricted, a day matches if EITHER matches
  (``0 0 1 * mon``: the 1st of every month and every Monday);
* a field counts as unrestricted when it starts with ``*``, so ``*/2`` in day-of-month still
  combines with day-of-week by AND.

A step needs a range (``*/15``, ``10-50/20``); ranges do not wrap (``22-2`` is an error).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# the Gregorian calendar repeats every 400 years: a day that matches at all matches in that
# span (Feb 29 on a given weekday can be decades away)
_SEARCH_YEARS = 400


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] means low + i
    names_hint: str = ""

    def error(self, detail: str) -> ValueError:
        return ValueError(f"cron field '{self.name}': {detail}")

    def parse(self, text: str) -> frozenset[int]:
        """The values ``text`` (one field of an expression) selects."""
        values: set[int] = set()
        for item in text.split(","):
            if not item:
                raise self.error(f"empty item in '{text}'")
            values.update(self._item(item))
        return frozenset(values)

    def _item(self, item: str) -> range:
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not re.fullmatch(r"[0-9]+", step_text):
                raise self.error(f"step '{step_text}' in '{item}' is not a number")
            step = int(step_text)
            if step < 1:
                raise self.error(f"step {step} in '{item}' must be at least 1")
        if base == "*":
            return range(self.low, self.high + 1, step)
        if "-" in base:
            first_text, _, last_text = base.partition("-")
            first, last = self._value(first_text, item), self._value(last_text, item)
            if self.name == "day-of-week" and last_text.lower() == "sun":
                last = 7  # 'fri-sun' means Friday to Sunday, not a backwards range
            if first > last:
                raise self.error(
                    f"range '{base}' runs backwards; cron ranges do not wrap around "
                    f"(write {first_text}-{self.high},{self.low}-{last_text})"
                )
            return range(first, last + 1, step)
        value = self._value(base, item)
        if slash:
            raise self.error(
                f"a step needs a range or *: write '{base}-{self.high}/{step}', not '{item}'"
            )
        return range(value, value + 1)

    def _value(self, text: str, item: str) -> int:
        if re.fullmatch(r"[0-9]+", text):
            value = int(text)
            if not self.low <= value <= self.high:
                raise self.error(f"{value} is outside {self.low}-{self.high}")
            return value
        if text.lower() in self.names:
            return self.low + self.names.index(text.lower())
        allowed = f"a number {self.low}-{self.high}"
        if self.names_hint:
            allowed += f" or a name {self.names_hint}"
        shown = f"'{text}'" if text == item else f"'{text}' in '{item}'"
        raise self.error(f"{shown} is not {allowed}")


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, "jan-dec"),
    # 7 is Sunday too (as in Vixie cron), so '5-7' and 'fri-sun' reach the end of the week
    _Field("day-of-week", 0, 7, (*_DAYS, "sun"), "sun-sat"),
)


@dataclass(frozen=True)
class CronSchedule:
    """A five-field cron expression, evaluated in UTC; ``ValueError`` if it is invalid."""

    expr: str
    minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    hours: tuple[int, ...] = field(init=False, repr=False, compare=False)
    days: frozenset[int] = field(init=False, repr=False, compare=False)
    months: frozenset[int] = field(init=False, repr=False, compare=False)
    weekdays: frozenset[int] = field(init=False, repr=False, compare=False)  # 0 = Sunday
    # Vixie cron: both day fields restricted (neither starts with '*') -> either may match
    either_day: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self.expr.split()
        if len(parts) != len(_FIELDS):
            raise ValueError(
                f"cron expression '{self.expr}' has {len(parts)} fields; it needs five: "
                "minute hour day-of-month month day-of-week"
            )
        minutes, hours, days, months, weekdays = (
            spec.parse(part) for spec, part in zip(_FIELDS, parts)
        )
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once, here
        set_(self, "minutes", tuple(sorted(minutes)))
        set_(self, "hours", tuple(sorted(hours)))
        set_(self, "days", days)
        set_(self, "months", months)
        set_(self, "weekdays", frozenset(d % 7 for d in weekdays))
        set_(self, "either_day", not parts[2].startswith("*") and not parts[4].startswith("*"))
        if not self.either_day and not any(
            day <= calendar.monthrange(2000, month)[1] for month in months for day in days
        ):
            # (2000 is a leap year: Feb 29 counts as possible)
            raise ValueError(
                f"cron expression '{self.expr}' never runs: day-of-month '{parts[2]}' "
                f"does not occur in month '{parts[3]}'"
            )

    def __str__(self) -> str:
        return f"cron '{self.expr}'"

    def next_after(self, t: datetime) -> datetime:
        """The first minute strictly after ``t`` that the expression selects, in UTC."""
        start = as_utc(t).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.date()
        earliest = start.time()  # only on the first day; every later day starts at 00:00
        limit = date(min(day.year + _SEARCH_YEARS, date.max.year), 12, 31)
        while day <= limit:
            if day.month not in self.months:
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                earliest = time(0, 0)
                continue
            if self._day_matches(day):
                at = self._first_time(earliest)
                if at is not None:
                    return datetime.combine(day, at, UTC)
            day += timedelta(days=1)
            earliest = time(0, 0)
        raise ValueError(f"cron expression '{self.expr}' has no run time after {t.isoformat()}")

    def _day_matches(self, day: date) -> bool:
        in_month = day.day in self.days
        in_week = day.isoweekday() % 7 in self.weekdays
        return (in_month or in_week) if self.either_day else (in_month and in_week)

    def _first_time(self, earliest: time) -> time | None:
        for hour in self.hours:
            if hour < earliest.hour:
                continue
            for minute in self.minutes:
                if hour > earliest.hour or minute >= earliest.minute:
                    return time(hour, minute)
        return None


def as_utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a schedule needs a timezone-aware time, got naive {t.isoformat()}")
    return t.astimezone(UTC)
