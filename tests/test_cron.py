"""Cron run times come from the crontab beat evaluates; checked here against a minute-by-minute
scan of real time, across DST changes, and against the slot a firing belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab_parser
from celery.utils.time import remaining
from django_celery_beat.models import CrontabSchedule

from schedules.cron import next_runs, parse_cron

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def scan(expression: str, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The run times by brute force: every real minute after ``after`` whose wall-clock time in
    ``tz`` matches all five fields, a repeated wall-clock time only on its first occurrence."""
    fields = expression.split()
    sets = [
        crontab_parser(size, offset).parse(field)
        for field, (size, offset) in zip(fields, [(60, 0), (24, 0), (31, 1), (12, 1), (7, 0)], strict=True)
    ]
    minute = after.astimezone(UTC).replace(second=0, microsecond=0)
    runs: list[datetime] = []
    while len(runs) < count:
        minute += timedelta(minutes=1)
        local = minute.astimezone(tz)
        values = (local.minute, local.hour, local.day, local.month, local.isoweekday() % 7)
        if local.fold == 0 and all(v in s for v, s in zip(values, sets, strict=True)):
            runs.append(local)
    return runs


CASES = [
    ("*/15 * * * *", "Europe/Berlin", "2026-03-29 00:20"),  # the spring gap
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25 00:20"),  # the repeated hour
    ("30 2 * * *", "Europe/Berlin", "2026-10-24 12:00"),
    ("0,30 1-3 * * *", "America/New_York", "2026-03-08 05:00"),
    ("0,30 1-3 * * *", "America/New_York", "2026-11-01 04:00"),
    ("*/10 1-3 * * *", "Australia/Lord_Howe", "2026-04-04 13:00"),  # a half-hour DST shift
    ("*/10 1-3 * * *", "Australia/Lord_Howe", "2026-10-03 14:00"),
    ("0 0 * * *", "America/Havana", "2026-03-07 03:00"),  # midnight does not exist that day
    ("7 */5 1,15 * mon-fri", "Asia/Kolkata", "2026-01-01 00:00"),
    ("59 23 * * 0", "UTC", "2026-12-26 12:00"),
]


@pytest.mark.parametrize(("expression", "tz_name", "after"), CASES)
def test_it_lists_the_matching_minutes_of_real_time_as_next_runs(expression, tz_name, after):
    tz = ZoneInfo(tz_name)
    expected = scan(expression, tz, utc(after), 8)
    runs = next_runs(expression, tz_name, utc(after), 8)
    assert [run.astimezone(UTC) for run in runs] == [run.astimezone(UTC) for run in expected]
    assert [run.replace(tzinfo=None) for run in runs] == [run.replace(tzinfo=None) for run in expected]


@pytest.mark.parametrize(("expression", "tz_name", "after"), CASES)
def test_it_makes_previous_run_agree_with_the_next_runs(expression, tz_name, after):
    tz = ZoneInfo(tz_name)
    cron = parse_cron(expression)
    runs = next_runs(expression, tz_name, utc(after), 6)
    for earlier, later in pairwise(runs):
        assert cron.previous_run(later, tz) == later
        assert cron.previous_run(later - timedelta(microseconds=1), tz) == earlier
        assert next(cron.runs_after(earlier, tz)) == later


GAPS = [
    ("30 2 * * *", "Europe/Berlin", "2026-03-28 01:30"),
    ("0 0 * * *", "America/Havana", "2026-03-07 05:00"),
]


@pytest.mark.parametrize(("expression", "tz_name", "after"), CASES + GAPS)
def test_it_lists_as_times_the_firings_of_beat_that_run_a_backup(expression, tz_name, after):
    """django-celery-beat's own crontab, chained from each firing as beat does, fires at the
    listed times, plus once after a DST gap that swallowed a run time: that firing's slot is
    the one before, already claimed, so it backs up nothing (see schedules.services.claim_slot)."""
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    schedule = CrontabSchedule(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
        day_of_week=day_of_week, timezone=tz_name,
    ).schedule  # fmt: skip
    cron, tz = parse_cron(expression), ZoneInfo(tz_name)
    previous, backups = utc(after), []
    for _ in range(8):
        # What beat waits from its last firing, counted in real time.
        fire = previous + remaining(*schedule.remaining_delta(previous)[:2], now=previous)
        slot = cron.previous_run(fire, tz)
        assert slot is not None
        if slot > previous:  # claim_slot's condition
            backups.append(fire)
        previous = fire
    listed = [run.astimezone(UTC) for run in next_runs(expression, tz_name, utc(after), 8)]
    assert len(backups) >= 7
    assert listed[: len(backups)] == backups


def test_it_puts_a_firing_after_the_spring_gap_in_the_claimed_slot_before_it():
    """Beat fires a 02:30 that does not exist at 03:30 summer time; that firing's slot is the
    day before's, already claimed, so the day has no run, as next_runs shows."""
    cron = parse_cron("30 2 * * *")
    assert cron.previous_run(datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN), BERLIN) == datetime(
        2026, 3, 28, 2, 30, tzinfo=BERLIN
    )


def test_it_lists_runs_of_rare_expressions_decades_apart():
    runs = next_runs("0 0 29 2 1", "Europe/Berlin", utc("2026-01-01 00:00"), 3)
    assert [run.date().isoformat() for run in runs] == ["2044-02-29", "2072-02-29", "2112-02-29"]
    assert next_runs("0 0 29 2 1", "Europe/Berlin", utc("2026-01-01 00:00"), 0) == []
