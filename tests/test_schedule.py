"""Schedules: five-field cron (Vixie rules) and every-N-seconds, against hand-computed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from riverbed.orchestrate.schedule import CronSchedule, EverySchedule, schedule_for


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (expression, after, expected next run); weekdays checked against a calendar by hand
CASES = [
    ("* * * * *", "2024-01-01T00:00:00", "2024-01-01T00:01"),  # strictly after
    ("* * * * *", "2024-01-01T00:00:59.999", "2024-01-01T00:01"),
    ("*/15 * * * *", "2024-01-01T10:07", "2024-01-01T10:15"),
    ("*/15 * * * *", "2024-01-01T10:45", "2024-01-01T11:00"),
    ("0 * * * *", "2024-12-31T23:30", "2025-01-01T00:00"),  # year rollover
    ("30 9 * * *", "2024-01-31T09:30", "2024-02-01T09:30"),  # month rollover
    ("15 14 1 * *", "2024-12-01T14:15", "2025-01-01T14:15"),
    ("0 0 31 * *", "2024-04-01T00:00", "2024-05-31T00:00"),  # April has no 31st
    ("0 0 29 2 *", "2024-02-28T12:00", "2024-02-29T00:00"),
    ("0 0 29 2 *", "2024-03-01T00:00", "2028-02-29T00:00"),  # leap day: next leap year
    ("0 0 29 2 *", "2096-03-01T00:00", "2104-02-29T00:00"),  # 2100 is not a leap year
    ("10-50/20 * * * *", "2024-01-01T10:30", "2024-01-01T10:50"),  # 10, 30, 50
    ("10-50/20 * * * *", "2024-01-01T10:50", "2024-01-01T11:10"),
    ("0 9-17/4 * * *", "2024-01-01T17:00", "2024-01-02T09:00"),  # 9, 13, 17
    ("5,35 1,13 * * *", "2024-01-01T13:05", "2024-01-01T13:35"),
    ("5,35 1,13 * * *", "2024-01-01T13:35", "2024-01-02T01:05"),
    # day-of-month and day-of-week both restricted: either matches (2024-01-01 is a Monday)
    ("0 12 1 * mon", "2024-01-01T12:00", "2024-01-08T12:00"),  # next Monday
    ("0 12 1 * mon", "2024-01-26T00:00", "2024-01-29T12:00"),  # Friday -> Monday 29th
    ("0 12 1 * mon", "2024-01-30T00:00", "2024-02-01T12:00"),  # the 1st, a Thursday
    ("0 0 29 2 mon", "2025-02-25T00:00", "2026-02-02T00:00"),  # no Feb 29 in 2025
    # a field starting with '*' is unrestricted: '*/2' and 'mon' combine by AND
    ("0 0 */2 * mon", "2024-01-01T00:00", "2024-01-15T00:00"),  # odd day AND Monday
    # Sunday is 0, 7 and sun (2024-01-07 is a Sunday)
    ("0 0 * * 0", "2024-01-01T00:00", "2024-01-07T00:00"),
    ("0 0 * * 7", "2024-01-01T00:00", "2024-01-07T00:00"),
    ("0 0 * * SUN", "2024-01-01T00:00", "2024-01-07T00:00"),
    ("0 0 * * fri-sun", "2024-01-01T00:00", "2024-01-05T00:00"),  # Friday
    ("0 0 * * fri-sun", "2024-01-06T00:00", "2024-01-07T00:00"),  # Saturday -> Sunday
    ("0 0 * * 5-7", "2024-01-06T00:00", "2024-01-07T00:00"),
    ("0 0 * * 1-5/2", "2024-01-01T00:00", "2024-01-03T00:00"),  # Mon, Wed, Fri
    # names, any case; July 1st 2024 is a Monday
    ("0 9 * jan,JUL Mon-Fri", "2024-01-31T10:00", "2024-07-01T09:00"),
    ("0 0 1 Jan *", "2024-06-01T00:00", "2025-01-01T00:00"),
    ("0 0 1 mar-may/2 *", "2024-03-01T00:00", "2024-05-01T00:00"),
]


@pytest.mark.parametrize(("expr", "after", "expected"), CASES)
def test_next_after(expr: str, after: str, expected: str) -> None:
    result = CronSchedule(expr).next_after(utc(after))
    assert result == utc(expected)
    assert result.tzinfo is UTC


def test_consecutive_runs() -> None:
    schedule = CronSchedule("*/20 9-10 * * *")
    t = utc("2024-01-01T00:00")
    runs = []
    for _ in range(7):
        t = schedule.next_after(t)
        runs.append(t.strftime("%d %H:%M"))
    assert runs == [
        "01 09:00",
        "01 09:20",
        "01 09:40",
        "01 10:00",
        "01 10:20",
        "01 10:40",
        "02 09:00",
    ]


def test_other_time_zones_are_converted_to_utc() -> None:
    # 01:30 at UTC+2 is 23:30 UTC the day before
    t = datetime(2024, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert CronSchedule("0 0 * * *").next_after(t) == utc("2024-01-01T00:00")


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSchedule("* * * * *").next_after(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        EverySchedule(60).next_after(datetime(2024, 1, 1))


INVALID = [
    ("* * * *", "cron expression '* * * *' has 4 fields; it needs five: minute hour"),
    ("* * * * * *", "has 6 fields"),
    ("60 * * * *", "cron field 'minute': 60 is outside 0-59"),
    ("* 25 * * *", "cron field 'hour': 25 is outside 0-23"),
    ("* * 0 * *", "cron field 'day-of-month': 0 is outside 1-31"),
    ("* * 32 * *", "cron field 'day-of-month': 32 is outside 1-31"),
    ("* * * 13 *", "cron field 'month': 13 is outside 1-12"),
    ("* * * * 8", "cron field 'day-of-week': 8 is outside 0-7"),
    ("* * * foo *", "cron field 'month': 'foo' is not a number 1-12 or a name jan-dec"),
    ("* * * * monday", "cron field 'day-of-week': 'monday' is not a number 0-7 or a name sun-sat"),
    ("* * * jan-feb-mar *", "'feb-mar' in 'jan-feb-mar' is not a number 1-12"),
    ("* * * * mon-", "cron field 'day-of-week': '' in 'mon-' is not a number 0-7"),
    ("-5 * * * *", "cron field 'minute': '' in '-5' is not a number 0-59"),
    ("*/0 * * * *", "cron field 'minute': step 0 in '*/0' must be at least 1"),
    ("*/x * * * *", "cron field 'minute': step 'x' in '*/x' is not a number"),
    ("* */ * * *", "cron field 'hour': step '' in '*/' is not a number"),
    ("5/10 * * * *", "cron field 'minute': a step needs a range or *: write '5-59/10', not '5/10'"),
    (
        "* 22-2 * * *",
        "cron field 'hour': range '22-2' runs backwards; cron ranges do not wrap around (write 22-23,0-2)",
    ),
    ("1,,2 * * * *", "cron field 'minute': empty item in '1,,2'"),
    (
        "0 0 30 2 *",
        "cron expression '0 0 30 2 *' never runs: day-of-month '30' does not occur in month '2'",
    ),
    ("0 0 31 apr,jun *", "never runs"),
]


@pytest.mark.parametrize(("expr", "message"), INVALID)
def test_invalid_expressions_name_the_field_and_the_part(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        CronSchedule(expr)
    assert message in str(error.value)


def test_impossible_day_is_fine_when_the_weekday_can_match() -> None:
    # both day fields restricted: Mondays of February still run
    assert CronSchedule("0 0 30 2 mon").next_after(utc("2024-01-01T00:00")) == utc(
        "2024-02-05T00:00"
    )


def test_every_seconds() -> None:
    schedule = EverySchedule(90)
    t = datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert schedule.next_after(t) == utc("2024-01-01T00:01:30")
    assert schedule.next_after(t).tzinfo is UTC
    assert EverySchedule(0.25).next_after(utc("2024-01-01T00:00")) == utc("2024-01-01T00:00:00.250")


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_every_needs_a_positive_interval(seconds: float) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        EverySchedule(seconds)


def test_schedule_for() -> None:
    assert schedule_for(None, None) is None
    assert schedule_for(30, None) == EverySchedule(30)
    assert schedule_for(None, "0 * * * *") == CronSchedule("0 * * * *")
    with pytest.raises(ValueError, match="every_seconds and cron are both set; keep one"):
        schedule_for(30, "0 * * * *")
    with pytest.raises(ValueError, match="cron field 'hour': 24 is outside 0-23"):
        schedule_for(None, "0 24 * * *")
