"""Five-field cron expressions with Celery's semantics: parsing, validation (including
expressions that never fire, such as ``0 0 31 2 *``) and the next run times in a timezone.

Celery's ``crontab`` (what django-celery-beat runs) requires the day of month AND the day of
week to match, unlike Vixie cron's OR; the times computed here follow Celery, so what the admin
shows is what beat does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from celery.schedules import ParseException, crontab_parser

FIELDS = (
    ("minute", 60, 0),
    ("hour", 24, 0),
    ("day of month", 31, 1),
    ("month", 12, 1),
    ("day of week", 7, 0),
)
HORIZON_DAYS = 28 * 366  # a Feb 29 that must also be a given weekday comes round every 28 years


class CronError(ValueError):
    """An expression that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Cron:
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as in cron

    def __str__(self) -> str:
        return " ".join((self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week))

    def matches_day(self, day: date) -> bool:
        return day.month in self.months and day.day in self.days and (day.isoweekday() % 7) in self.weekdays

    def runs_after(self, moment: datetime, tz: tzinfo) -> Iterator[datetime]:
        """Run times strictly after ``moment``, as aware datetimes in ``tz``, for up to 28 years.
        A wall-clock time skipped by a DST change is not run; a repeated one runs once."""
        local = moment.astimezone(tz)
        day = local.date()
        for _ in range(HORIZON_DAYS):
            if self.matches_day(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        candidate = datetime.combine(day, time(hour, minute), tzinfo=tz)
                        if _exists(candidate) and candidate > moment:
                            yield candidate
            day += timedelta(days=1)

    def previous_run(self, moment: datetime, tz: tzinfo) -> datetime | None:
        """The latest run time at or before ``moment`` (within 28 years)."""
        local = moment.astimezone(tz)
        day = local.date()
        for _ in range(HORIZON_DAYS):
            if self.matches_day(day):
                for hour in reversed(self.hours):
                    for minute in reversed(self.minutes):
                        candidate = datetime.combine(day, time(hour, minute), tzinfo=tz)
                        if _exists(candidate) and candidate <= moment:
                            return candidate
            day -= timedelta(days=1)
        return None


def _exists(local: datetime) -> bool:
    """False for a wall-clock time inside a DST gap (it would round-trip to another time)."""
    tz = local.tzinfo
    assert tz is not None
    return local.astimezone(ZoneInfo("UTC")).astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None)


def parse_cron(expression: str) -> Cron:
    """Parse five fields 'minute hour day-of-month month day-of-week'; raise CronError."""
    if not isinstance(expression, str):
        raise CronError("expected a string of 5 fields 'minute hour day-of-month month day-of-week'")
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"expected 5 fields 'minute hour day-of-month month day-of-week', got {len(fields)}")
    values: list[set[int]] = []
    for value, (label, size, offset) in zip(fields, FIELDS, strict=True):
        try:
            values.append(set(crontab_parser(size, offset).parse(value)))
        except (ParseException, ValueError) as exc:
            raise CronError(f"invalid {label} field {value!r}: {exc}") from None
    minutes, hours, days, months, weekdays = values
    cron = Cron(
        minute=fields[0],
        hour=fields[1],
        day_of_month=fields[2],
        month_of_year=fields[3],
        day_of_week=fields[4],
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
    )
    if not _ever_runs(cron):
        raise CronError(
            f"{expression!r} never runs: no date matches its day of month, month and day of week "
            "together (both day fields must match, as in Celery)"
        )
    return cron


def _ever_runs(cron: Cron) -> bool:
    day = date(2024, 1, 1)  # a leap year; 28 years cover every weekday of every Feb 29
    return any(cron.matches_day(day + timedelta(days=offset)) for offset in range(HORIZON_DAYS))


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` cannot be used, or None."""
    try:
        parse_cron(expression)
    except CronError as exc:
        return str(exc)
    return None


def next_runs(expression: str, tz_name: str, after: datetime, count: int = 3) -> list[datetime]:
    cron = parse_cron(expression)
    runs = []
    for moment in cron.runs_after(after, ZoneInfo(tz_name)):
        runs.append(moment)
        if len(runs) == count:
            break
    return runs
