"""What a reader may narrow a chart by, checked before any SQL is built, and the time windows
a chart compares.

Filters come from a page's form, a URL or an API body: plain strings. Each is validated here
into a typed value (a date, an id, a bounded string) and only ever reaches SQL as a sqlglot
literal in the syntax tree (riverbed.serve.semantic.measures.conditions), never as text. A
value that cannot be one is a FilterError naming the filter, the value and what it takes: the
web app answers it with 400, the command line with exit 2.

The fair comparison of a partial month (``fair_windows``): the current month is the month of
the as-of date, which is complete up to its day D; it is compared with days 1..D of the month
before (the whole previous month when it is shorter than D), never with all of it.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from riverbed.errors import UsageError

TEXT_FILTERS = ("category", "region")
ID_FILTERS = ("seller", "product", "customer")
DATE_FILTERS = ("date_from", "date_to")
NAMES = (*DATE_FILTERS, *TEXT_FILTERS, *ID_FILTERS)
MAX_TEXT = 200


class FilterError(UsageError):
    """A filter the reader gave cannot be used: unknown, or a value of the wrong kind."""


@dataclass(frozen=True)
class Filters:
    """A chart's filters, validated. Dates are business days, inclusive at both ends."""

    date_from: date | None = None
    date_to: date | None = None
    category: str | None = None
    region: str | None = None
    seller: int | None = None
    product: int | None = None
    customer: int | None = None

    @classmethod
    def parse(cls, given: Mapping[str, Any] | Filters | None) -> Filters:
        """The filters in ``given`` (a mapping of name to value; empty values are no filter),
        or FilterError."""
        if isinstance(given, Filters):
            return given
        values: dict[str, Any] = {}
        for name, value in (given or {}).items():
            if name not in NAMES:
                raise FilterError(f"unknown filter {name!r}; filters: {', '.join(NAMES)}")
            if value is None or value == "":
                continue
            if name in DATE_FILTERS:
                values[name] = _date(name, value)
            elif name in ID_FILTERS:
                values[name] = _id(name, value)
            else:
                values[name] = _text(name, value)
        parsed = cls(**values)
        if parsed.date_from and parsed.date_to and parsed.date_from > parsed.date_to:
            raise FilterError(
                f"filter date_from {parsed.date_from} is after date_to {parsed.date_to}"
            )
        return parsed

    def as_dict(self) -> dict[str, Any]:
        return {
            name: value.isoformat() if isinstance(value, date) else value
            for name in NAMES
            if (value := getattr(self, name)) is not None
        }


def _date(name: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FilterError(
            f"filter {name} = {str(value)[:40]!r}: not a date; use YYYY-MM-DD"
        ) from None


def _id(name: str, value: Any) -> int:
    if isinstance(value, bool):  # True is an int to Python, not an id to a reader
        raise FilterError(f"filter {name} = {value!r}: not an id; use a whole number")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise FilterError(f"filter {name} = {text[:40]!r}: not an id; use a whole number")
    return int(text)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise FilterError(f"filter {name} = {value!r}: must be text")
    if len(value) > MAX_TEXT or not value.isprintable():
        raise FilterError(
            f"filter {name}: at most {MAX_TEXT} printable characters (got {len(value)}"
            f"{'' if value.isprintable() else ', with control characters'})"
        )
    return value


@dataclass(frozen=True)
class Window:
    """Business days ``first`` .. ``last``, inclusive."""

    first: date
    last: date

    def as_dict(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


def today_utc() -> date:
    return datetime.now(UTC).date()


def fair_windows(as_of: date) -> tuple[Window, Window]:
    """(the as-of month's days 1..D, the previous month's days 1..D): D is ``as_of``'s day,
    cut to the previous month's length (31 March compares with 1-28 February, 1-31 March)."""
    current = Window(as_of.replace(day=1), as_of)
    previous_end = current.first - timedelta(days=1)
    last_day = min(as_of.day, calendar.monthrange(previous_end.year, previous_end.month)[1])
    return current, Window(previous_end.replace(day=1), previous_end.replace(day=last_day))


def date_key(day: date) -> int:
    """dim_date's key of ``day`` (YYYYMMDD)."""
    return day.year * 10000 + day.month * 100 + day.day
