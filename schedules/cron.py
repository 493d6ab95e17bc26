"""Five-field cron expressions as Celery beat runs them: parsing, validation (including
expressions that never fire, such as ``0 0 31 2 *``) and the run times in a timezone.

The next run times come from django-celery-beat's ``TzAwareCrontab`` (Celery's ``crontab`` in
the schedule's timezone), the very object beat evaluates, so what the admin shows is what beat
does. Celery requires the day of month AND the day of week to match, unlike Vixie cron's OR.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from celery.schedules import ParseException, crontab_parser
from django_celery_beat.models import CrontabSchedule
from django_celery_beat.tzcrontab import TzAwareCrontab

FIELDS = (
    ("minute", 60, 0),
    ("hour", 24, 0),
    ("day of month", 31, 1),
    ("month", 12, 1),
    ("day of week", 7, 0),
)
HORIZON_DAYS = 28 * 366  # a Feb 29 that must also be a given weekday comes round every 28 years
UTC = ZoneInfo("UTC")


class CronError(ValueError):
    """An expression that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Cron:
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str

    def __str__(self) -> str:
        return " ".join((self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week))

    def runs_after(self, moment: datetime, tz: tzinfo) -> Iterator[datetime]:
        """Run times strictly after ``moment``, as aware datetimes in ``tz``, in Celery's order.
        A wall-clock time skipped by a DST change is not run; a repeated one runs once."""
        schedule = _schedule(self, tz)
        current = moment.astimezone(tz)  # the same tzinfo object: Celery then keeps wall-clock time
        while True:
            last, delta, _ = schedule.remaining_delta(current)
            current = last + delta
            # Beat fires a skipped time after the gap (a firing claim_slot then finds already
            # claimed) and a repeated one per occurrence: list each slot once, at its first one.
            run = current.replace(fold=0)
            if run > moment and _exists(run):
                yield run

    def previous_run(self, moment: datetime, tz: tzinfo) -> datetime | None:
        """The latest run time at or before ``moment`` (within 28 years). Celery only looks
        forward, so this walks back over the values Celery expanded the fields to."""
        schedule = _schedule(self, tz)
        hours, minutes = sorted(schedule.hour, reverse=True), sorted(schedule.minute, reverse=True)
        day = moment.astimezone(tz).date()
        for _ in range(HORIZON_DAYS):
            if (
                day.month in schedule.month_of_year
                and day.day in schedule.day_of_month
                and day.isoweekday() % 7 in schedule.day_of_week
            ):
                for hour in hours:
                    for minute in minutes:
                        candidate = datetime.combine(day, time(hour, minute), tzinfo=tz)
                        if candidate <= moment and _exists(candidate):
                            return candidate
            day -= timedelta(days=1)
        return None


@lru_cache(maxsize=256)
def _schedule(cron: Cron, tz: tzinfo) -> TzAwareCrontab:
    """The crontab beat evaluates for ``cron`` in ``tz`` (django-celery-beat's CrontabSchedule.schedule)."""
    return TzAwareCrontab(
        minute=cron.minute,
        hour=cron.hour,
        day_of_week=cron.day_of_week,
        day_of_month=cron.day_of_month,
        month_of_year=cron.month_of_year,
        tz=tz,
    )


def _exists(local: datetime) -> bool:
    """False for a wall-clock time inside a DST gap (it would round-trip to another time)."""
    tz = local.tzinfo
    assert tz is not None
    return local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None)


def parse_cron(expression: str) -> Cron:
    """Parse five fields 'minute hour day-of-month month day-of-week'; raise CronError."""
    if not isinstance(expression, str):
        raise CronError("expected a string of 5 fields 'minute hour day-of-month month day-of-week'")
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"expected 5 fields 'minute hour day-of-month month day-of-week', got {len(fields)}")
    for value, (label, size, offset) in zip(fields, FIELDS, strict=True):
        try:
            crontab_parser(size, offset).parse(value)
        except (ParseException, ValueError) as exc:
            raise CronError(f"invalid {label} field {value!r}: {exc}") from None
    cron = Cron(*fields)
    try:
        _schedule(cron, UTC)
    except ValueError:
        # Every field is valid, so this is Celery's check that some day of month exists in
        # some month. It is exact: every existing date, Feb 29 included, falls on each day of
        # the week within 28 years, so the day of week can never be what rules a date out.
        raise CronError(
            f"{expression!r} never runs: no date matches its day of month, month and day of week "
            "together (both day fields must match, as in Celery)"
        ) from None
    return cron


def crontab_row(cron: Cron, tz_name: str) -> CrontabSchedule:
    """The django-celery-beat crontab row of ``cron`` in ``tz_name``: an existing one (the
    oldest, if the admin made duplicates) or a new one."""
    fields = {
        "minute": cron.minute,
        "hour": cron.hour,
        "day_of_month": cron.day_of_month,
        "month_of_year": cron.month_of_year,
        "day_of_week": cron.day_of_week,
        "timezone": tz_name,
    }
    return CrontabSchedule.objects.filter(**fields).order_by("pk").first() or CrontabSchedule.objects.create(
        **fields
    )


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` cannot be used, or None."""
    try:
        parse_cron(expression)
    except CronError as exc:
        return str(exc)
    return None


def previous_slot(expression: str, tz_name: str, moment: datetime) -> datetime | None:
    """The latest run time at or before ``moment``: when an external target's ``expect`` last
    said a file was due (registered with the core as its cron clock)."""
    return parse_cron(expression).previous_run(moment, ZoneInfo(tz_name))


def next_runs(expression: str, tz_name: str, after: datetime, count: int = 3) -> list[datetime]:
    runs: list[datetime] = []
    if count <= 0:
        return runs
    for moment in parse_cron(expression).runs_after(after, ZoneInfo(tz_name)):
        runs.append(moment)
        if len(runs) == count:
            break
    return runs
