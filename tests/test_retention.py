"""The retention engine on hand-checked timelines: every expected id below was worked out from the
rules' semantics, not by running the engine. Pure Python: no database.

Conventions: ``utc("2026-01-05 12:00")`` is a UTC instant; backups are numbered oldest first
unless a test says otherwise, so ids and ages run in opposite directions; ``now`` defaults to a
moment years after every backup (windows are measured from the newest success, never from now).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backups.retention.durations import Duration, DurationError, Period, parse_duration, parse_period
from backups.retention.planner import BackupInfo, Plan, plan
from backups.retention.policy import Policy, PolicyError, SpacingRule, Tier

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
FAR_FUTURE = datetime(2031, 6, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ok(id_: int, when: datetime, *, verified: bool = False) -> BackupInfo:
    return BackupInfo(id_, when, "success", verified)


def run_(id_: int, when: datetime, status: str) -> BackupInfo:
    return BackupInfo(id_, when, status)


def series(*moments: str) -> list[BackupInfo]:
    """Successful backups at these UTC moments, ids 1, 2, ... in the order given."""
    return [ok(number, utc(text)) for number, text in enumerate(moments, start=1)]


def apply(
    mapping: Mapping[str, Any],
    backups: Iterable[BackupInfo],
    *,
    timezone: str = "UTC",
    now: datetime = FAR_FUTURE,
) -> Plan:
    return plan(list(backups), Policy.from_mapping(mapping, timezone=timezone), now)


def kept(result: Plan) -> list[int]:
    return [k.backup.id for k in result.keep]


def deleted(result: Plan) -> list[int]:
    return [d.backup.id for d in result.delete]


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2d", Duration(days=2)),
        ("12h", Duration(hours=12)),
        ("90min", Duration(minutes=90)),
        ("1w", Duration(weeks=1)),
        ("6mo", Duration(months=6)),
        ("1y", Duration(years=1)),
        ("1y5mo7d2h", Duration(years=1, months=5, days=7, hours=2)),
        ("1y2w", Duration(years=1, weeks=2)),
        ("2h30min", Duration(hours=2, minutes=30)),
        ("2h1y", Duration(years=1, hours=2)),
        (" 1Y 6MO ", Duration(years=1, months=6)),
        ("1d0h", Duration(days=1)),
    ],
)
def test_it_parses_durations_of_one_or_several_units(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


def test_it_writes_a_duration_back_in_unit_order() -> None:
    assert str(parse_duration("2h1y")) == "1y2h"
    assert str(parse_duration("15min")) == "15min"
    assert str(parse_duration("1y5mo7d2h")) == "1y5mo7d2h"
    assert parse_duration("1y5mo7d2h").units == ["y", "mo", "d", "h"]


@pytest.mark.parametrize("text", ["5m", "1d5m", "30M", "1y6m"])
def test_it_rejects_a_bare_m_as_ambiguous(text: str) -> None:
    with pytest.raises(DurationError, match="ambiguous"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["5s", "2days", "3hours", "1x", "1d2sec"])
def test_it_rejects_unknown_units(text: str) -> None:
    with pytest.raises(DurationError, match="unknown unit"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1d2d", "1h30min1h", "2y1y"])
def test_it_rejects_a_repeated_unit(text: str) -> None:
    with pytest.raises(DurationError, match="twice"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0d", "0h0min", "0y"])
def test_it_rejects_a_zero_duration(text: str) -> None:
    with pytest.raises(DurationError, match="longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "   ", "d", "12", "1.5d", "-1d", "d1", "1d2", "1d-2h"])
def test_it_rejects_text_that_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 5, 2.5, ["2d"]])
def test_it_rejects_a_duration_that_is_not_a_string(value: Any) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


# -- periods ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15min", Duration(minutes=15)),
        ("1439min", Duration(minutes=1439)),
        ("1h", Duration(hours=1)),
        ("23h", Duration(hours=23)),
        ("1d", Duration(days=1)),
        ("1w", Duration(weeks=1)),
        ("1mo", Duration(months=1)),
        ("1y", Duration(years=1)),
    ],
)
def test_it_parses_a_period_of_one_unit(text: str, expected: Duration) -> None:
    assert parse_period(text) == Period(expected)


@pytest.mark.parametrize("text", ["24h", "48h", "1440min"])
def test_it_rejects_a_sub_day_unit_for_a_period_of_a_day_or_more(text: str) -> None:
    with pytest.raises(DurationError, match="d, w, mo or y"):
        parse_period(text)


def test_it_rejects_a_period_of_several_units() -> None:
    with pytest.raises(DurationError, match="one unit"):
        parse_period("1d2h")


def test_it_rejects_an_ambiguous_period() -> None:
    with pytest.raises(DurationError, match="ambiguous"):
        parse_period("15m")


# -- calendar arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "moment", "expected"),
    [
        ("1mo", "2024-03-31 12:00", "2024-02-29 12:00"),  # leap year: clamped to Feb 29
        ("1mo", "2025-03-31 12:00", "2025-02-28 12:00"),
        ("1mo", "2024-05-31 12:00", "2024-04-30 12:00"),
        ("13mo", "2024-03-31 12:00", "2023-02-28 12:00"),
        ("1mo1d", "2024-03-31 12:00", "2024-02-28 12:00"),  # months first, then days
        ("1y", "2025-02-28 12:00", "2024-02-28 12:00"),
        ("1y", "2024-02-29 12:00", "2023-02-28 12:00"),
        ("1y", "2025-03-01 12:00", "2024-03-01 12:00"),
        ("4y", "2024-02-29 12:00", "2020-02-29 12:00"),
        ("1w", "2026-01-08 09:00", "2026-01-01 09:00"),
        ("1y5mo7d2h", "2026-08-10 12:00", "2025-03-03 10:00"),
        ("90min", "2026-01-01 00:30", "2025-12-31 23:00"),
    ],
)
def test_it_subtracts_calendar_units_with_month_end_clamping(
    duration: str, moment: str, expected: str
) -> None:
    assert parse_duration(duration).before(utc(moment), UTC).astimezone(UTC) == utc(expected)


@pytest.mark.parametrize(
    ("duration", "moment", "expected"),
    [
        # spring 2026-03-29: a calendar day is 23 hours, 24h is 24 hours
        ("1d", "2026-03-29 10:00", "2026-03-28 11:00"),  # 12:00 CEST -> 12:00 CET
        ("24h", "2026-03-29 10:00", "2026-03-28 10:00"),
        ("1w", "2026-04-01 10:00", "2026-03-25 11:00"),  # 12:00 CEST -> 12:00 CET
        ("2h", "2026-03-29 01:30", "2026-03-28 23:30"),  # 03:30 CEST, two elapsed hours earlier
        # autumn 2026-10-25: a calendar day is 25 hours
        ("1d", "2026-10-25 11:00", "2026-10-24 10:00"),  # 12:00 CET -> 12:00 CEST
        ("24h", "2026-10-25 11:00", "2026-10-24 11:00"),
        ("1h", "2026-10-25 01:30", "2026-10-25 00:30"),  # second 02:30 (CET) -> first 02:30 (CEST)
        ("30min", "2026-10-25 01:10", "2026-10-25 00:40"),
    ],
)
def test_it_counts_days_on_the_wall_clock_and_hours_as_elapsed_time_across_dst(
    duration: str, moment: str, expected: str
) -> None:
    assert parse_duration(duration).before(utc(moment), BERLIN).astimezone(UTC) == utc(expected)


# -- keep_last and the bucket rules ----------------------------------------------------------------


def test_it_keeps_the_last_n_backups() -> None:
    backups = series(*(f"2026-01-0{day} 12:00" for day in range(1, 6)))
    result = apply({"keep_last": 3}, backups)
    assert kept(result) == [5, 4, 3]
    assert deleted(result) == [2, 1]
    assert result.reasons() == {
        5: ("last 1", "newest success", "min_keep 1"),
        4: ("last 2",),
        3: ("last 3",),
    }
    assert {d.reason for d in result.delete} == {"no rule keeps it"}


def test_it_keeps_every_backup_with_keep_last_minus_one() -> None:
    backups = series(*(f"2026-01-0{day} 12:00" for day in range(1, 6)))
    result = apply({"keep_last": -1}, backups)
    assert kept(result) == [5, 4, 3, 2, 1]
    assert result.reasons()[1] == ("last 5",)


DAILY_TIMELINE = series(
    "2026-01-01 08:00",  # 1  day 1
    "2026-01-01 20:00",  # 2  day 1
    "2026-01-02 09:00",  # 3  day 2
    "2026-01-03 07:00",  # 4  day 3
    "2026-01-03 22:00",  # 5  day 3
)


def test_it_keeps_the_newest_backup_of_each_of_the_n_newest_days() -> None:
    result = apply({"keep_daily": 2}, DAILY_TIMELINE)
    assert kept(result) == [5, 3]
    assert deleted(result) == [4, 2, 1]


def test_it_stops_at_n_days_when_the_oldest_day_uses_the_last_count() -> None:
    result = apply({"keep_daily": 3}, DAILY_TIMELINE)
    assert kept(result) == [5, 3, 2]
    assert deleted(result) == [4, 1]


def test_it_keeps_the_oldest_backup_while_a_count_is_left() -> None:
    result = apply({"keep_daily": 5}, DAILY_TIMELINE)
    assert kept(result) == [5, 3, 2, 1]
    assert deleted(result) == [4]
    assert result.reasons()[2] == ("daily 3",)
    assert result.reasons()[1] == ("oldest (daily count left)",)


def test_it_keeps_every_day_and_the_oldest_with_keep_daily_minus_one() -> None:
    result = apply({"keep_daily": -1}, DAILY_TIMELINE)
    assert kept(result) == [5, 3, 2, 1]
    assert deleted(result) == [4]
    assert result.reasons()[1] == ("oldest (daily count left)",)


def test_it_keeps_the_newest_backup_of_each_hour() -> None:
    backups = series(
        "2026-01-10 10:05",  # 1
        "2026-01-10 10:50",  # 2
        "2026-01-10 11:10",  # 3
        "2026-01-10 11:40",  # 4
        "2026-01-10 13:00",  # 5
    )
    result = apply({"keep_hourly": 3}, backups)
    assert kept(result) == [5, 4, 2]
    assert deleted(result) == [3, 1]
    assert result.reasons()[2] == ("hourly 3",)


def test_it_keeps_the_newest_backup_of_each_iso_week() -> None:
    backups = series(
        "2026-01-04 12:00",  # 1  Sunday, 2026-W01
        "2026-01-05 12:00",  # 2  Monday, 2026-W02
        "2026-01-11 12:00",  # 3  Sunday, 2026-W02
        "2026-01-12 12:00",  # 4  Monday, 2026-W03
    )
    result = apply({"keep_weekly": 2}, backups)
    assert kept(result) == [4, 3]
    assert deleted(result) == [2, 1]


WEEK_53_OF_2020 = series(
    "2020-12-28 12:00",  # 1  Monday, 2020-W53
    "2020-12-31 12:00",  # 2  Thursday, 2020-W53
    "2021-01-01 12:00",  # 3  Friday, still 2020-W53
    "2021-01-04 12:00",  # 4  Monday, 2021-W01
)


def test_it_puts_new_years_eve_and_new_years_day_in_the_same_iso_week_53() -> None:
    result = apply({"keep_weekly": 2}, WEEK_53_OF_2020)
    assert kept(result) == [4, 3]
    assert deleted(result) == [2, 1]


def test_it_puts_new_years_eve_and_new_years_day_in_different_years() -> None:
    result = apply({"keep_yearly": 2}, WEEK_53_OF_2020)
    assert kept(result) == [4, 2]
    assert deleted(result) == [3, 1]


def test_it_combines_weekly_and_yearly_reasons_across_week_53() -> None:
    result = apply({"keep_weekly": 2, "keep_yearly": 2}, WEEK_53_OF_2020)
    assert result.reasons() == {
        4: ("weekly 1", "yearly 1", "newest success", "min_keep 1"),
        3: ("weekly 2",),
        2: ("yearly 2",),
    }
    assert deleted(result) == [1]


def test_it_counts_iso_week_53_of_2026_in_the_policy_timezone() -> None:
    backups = series(
        "2026-12-28 12:00",  # 1  Monday 2026-W53
        "2027-01-01 12:00",  # 2  Friday 2026-W53
        "2027-01-03 23:30",  # 3  Sunday 2026-W53 in UTC; Monday 00:30, 2027-W01, in Berlin
    )
    in_berlin = apply({"keep_weekly": 2}, backups, timezone="Europe/Berlin")
    assert kept(in_berlin) == [3, 2]
    assert deleted(in_berlin) == [1]
    in_utc = apply({"keep_weekly": 2}, backups)  # one week: 3 is weekly 1, 1 the oldest with count left
    assert kept(in_utc) == [3, 1]
    assert in_utc.reasons()[1] == ("oldest (weekly count left)",)


def test_it_counts_months_in_the_policy_timezone() -> None:
    backups = series(
        "2026-01-15 12:00",  # 1  January
        "2026-01-31 23:00",  # 2  January in UTC, February 1st 00:00 in Berlin
        "2026-02-10 12:00",  # 3  February
        "2026-03-01 00:00",  # 4  March
    )
    assert kept(apply({"keep_monthly": 3}, backups)) == [4, 3, 2]
    assert kept(apply({"keep_monthly": 3}, backups, timezone="Europe/Berlin")) == [4, 3, 1]


def test_it_keeps_the_newest_of_each_year_and_the_oldest_with_keep_yearly_minus_one() -> None:
    backups = series(
        "2023-06-01 12:00",  # 1
        "2023-12-01 12:00",  # 2
        "2024-02-29 12:00",  # 3  a leap day
        "2025-01-01 12:00",  # 4
        "2025-07-01 12:00",  # 5
    )
    result = apply({"keep_yearly": -1}, backups)
    assert kept(result) == [5, 3, 2, 1]
    assert deleted(result) == [4]
    assert result.reasons()[3] == ("yearly 2",)
    assert result.reasons()[1] == ("oldest (yearly count left)",)


def test_it_gives_one_backup_every_reason_that_keeps_it() -> None:
    backups = series(
        "2025-12-31 12:00",  # 1  Wednesday, 2026-W01
        "2026-01-05 12:00",  # 2  Monday, 2026-W02
        "2026-01-07 10:00",  # 3  Wednesday, 2026-W02
        "2026-01-07 18:00",  # 4  Wednesday, 2026-W02
    )
    result = apply({"keep_daily": 2, "keep_weekly": 2}, backups)
    assert result.reasons() == {
        4: ("daily 1", "weekly 1", "newest success", "min_keep 1"),
        2: ("daily 2",),
        1: ("weekly 2",),
    }
    assert deleted(result) == [3]


def test_it_gives_last_and_daily_reasons_in_rule_order() -> None:
    result = apply({"keep_daily": 2, "keep_last": 2}, DAILY_TIMELINE)
    assert result.reasons() == {
        5: ("last 1", "daily 1", "newest success", "min_keep 1"),
        4: ("last 2",),
        3: ("daily 2",),
    }


# -- keep_within ----------------------------------------------------------------------------------


def test_it_keeps_every_backup_strictly_within_the_duration_of_the_newest_success() -> None:
    backups = [
        ok(1, utc("2026-01-01 12:00")),
        ok(2, utc("2026-01-02 12:00")),  # exactly 2 days older: not within
        ok(3, utc("2026-01-02 12:01")),
        ok(4, utc("2026-01-04 12:00")),  # the newest success
        run_(5, utc("2026-01-05 12:00"), "failed"),
    ]
    result = apply({"keep_within": "2d"}, backups, now=utc("2026-02-01 00:00"))
    assert kept(result) == [5, 4, 3]
    assert deleted(result) == [2, 1]
    assert result.reasons()[3] == ("within 2d",)
    assert result.anchor == utc("2026-01-04 12:00")


def test_it_measures_keep_within_a_month_from_march_31_to_february_29() -> None:
    backups = series(
        "2024-02-29 12:00",  # 1  exactly one month before: not within
        "2024-02-29 12:01",  # 2
        "2024-03-31 12:00",  # 3
    )
    result = apply({"keep_within": "1mo"}, backups)
    assert kept(result) == [3, 2]
    assert deleted(result) == [1]


def test_it_measures_keep_within_a_year_from_a_leap_day() -> None:
    backups = series(
        "2023-02-28 11:59",  # 1
        "2023-02-28 12:01",  # 2
        "2024-02-29 12:00",  # 3  one year before is 2023-02-28 12:00
    )
    result = apply({"keep_within": "1y"}, backups)
    assert kept(result) == [3, 2]
    assert deleted(result) == [1]


def test_it_measures_a_calendar_day_of_23_hours_across_the_spring_dst_change() -> None:
    backups = series(
        "2026-03-28 10:30",  # 1  11:30 CET, 23.5 elapsed hours before the newest
        "2026-03-28 11:30",  # 2  12:30 CET
        "2026-03-29 10:00",  # 3  12:00 CEST: one day before is 12:00 CET = 11:00 UTC
    )
    assert kept(apply({"keep_within": "1d"}, backups, timezone="Europe/Berlin")) == [3, 2]
    assert kept(apply({"keep_within": "24h"}, backups, timezone="Europe/Berlin")) == [3, 2, 1]


def test_it_measures_a_calendar_day_of_25_hours_across_the_autumn_dst_change() -> None:
    backups = series(
        "2026-10-24 09:30",  # 1  11:30 CEST, 25.5 elapsed hours before the newest
        "2026-10-24 10:30",  # 2  12:30 CEST, 24.5 elapsed hours before the newest
        "2026-10-25 11:00",  # 3  12:00 CET: one day before is 12:00 CEST = 10:00 UTC
    )
    assert kept(apply({"keep_within": "1d"}, backups, timezone="Europe/Berlin")) == [3, 2]
    assert kept(apply({"keep_within": "24h"}, backups, timezone="Europe/Berlin")) == [3]


def test_it_measures_hours_as_elapsed_time_across_the_spring_gap() -> None:
    backups = series(
        "2026-03-28 23:20",  # 1  00:20 CET, 2h10 elapsed before the newest
        "2026-03-28 23:40",  # 2  00:40 CET, 1h50 elapsed before the newest
        "2026-03-29 01:30",  # 3  03:30 CEST
    )
    assert kept(apply({"keep_within": "2h"}, backups, timezone="Europe/Berlin")) == [3, 2]


# -- tiers --------------------------------------------------------------------------------------


def test_it_keeps_the_newest_backup_of_each_hour_within_the_tier_window() -> None:
    backups = series(
        "2026-01-10 05:00",  # 1  outside the window
        "2026-01-10 06:00",  # 2  exactly 6 hours older: outside
        "2026-01-10 06:30",  # 3
        "2026-01-10 09:30",  # 4
        "2026-01-10 10:59",  # 5
        "2026-01-10 11:10",  # 6  an older one of hour 11
        "2026-01-10 11:50",  # 7
        "2026-01-10 12:00",  # 8  the newest
    )
    result = apply({"tiers": ["1h:6h"]}, backups)
    assert kept(result) == [8, 7, 5, 4, 3]
    assert deleted(result) == [6, 2, 1]
    assert result.reasons()[7] == ("tier 1h:6h",)


def test_it_keeps_the_newest_backup_of_each_quarter_hour_within_the_tier_window() -> None:
    backups = series(
        "2026-01-10 10:59",  # 1  outside
        "2026-01-10 11:00",  # 2  exactly an hour older: outside
        "2026-01-10 11:01",  # 3  slice 11:00
        "2026-01-10 11:44",  # 4  slice 11:30
        "2026-01-10 11:46",  # 5  slice 11:45, older
        "2026-01-10 11:59",  # 6  slice 11:45
        "2026-01-10 12:00",  # 7  slice 12:00
    )
    result = apply({"tiers": ["15min:1h"]}, backups)
    assert kept(result) == [7, 6, 4, 3]
    assert deleted(result) == [5, 2, 1]


def test_it_aligns_sub_day_tier_periods_to_the_utc_epoch_not_to_local_hours() -> None:
    backups = series(
        "2026-01-10 04:50",  # 1  10:20 IST, UTC hour 4
        "2026-01-10 05:10",  # 2  10:40 IST, UTC hour 5
        "2026-01-10 05:40",  # 3  11:10 IST, UTC hour 5
    )
    result = apply({"tiers": ["1h:1d"]}, backups, timezone="Asia/Kolkata")
    assert kept(result) == [3, 1]
    assert deleted(result) == [2]


def test_it_aligns_a_seven_hour_tier_period_to_the_epoch() -> None:
    # 2026-01-01 00:00 UTC is 70128 * 7 hours after the epoch: slices start at 00:00, 07:00,
    # 14:00, 21:00 on January 1st, then 04:00, 11:00, 18:00 on January 2nd.
    backups = series(
        "2026-01-02 03:30",  # 1  slice 21:00 (January 1st) - 04:00
        "2026-01-02 04:30",  # 2  slice 04:00 - 11:00, older
        "2026-01-02 10:30",  # 3  slice 04:00 - 11:00
        "2026-01-02 11:30",  # 4  slice 11:00 - 18:00
    )
    result = apply({"tiers": ["7h:3d"]}, backups)
    assert kept(result) == [4, 3, 1]
    assert deleted(result) == [2]


def test_it_uses_calendar_days_in_the_policy_timezone_for_a_day_tier() -> None:
    backups = series(
        "2026-01-05 22:30",  # 1  January 5th in UTC and in Berlin (23:30)
        "2026-01-05 23:30",  # 2  January 5th in UTC, January 6th (00:30) in Berlin
        "2026-01-06 10:00",  # 3  January 6th
    )
    in_berlin = apply({"tiers": ["1d:7d"]}, backups, timezone="Europe/Berlin")
    assert kept(in_berlin) == [3, 1]
    in_utc = apply({"tiers": ["1d:7d"]}, backups)
    assert kept(in_utc) == [3, 2]


def test_it_uses_iso_weeks_for_a_week_tier() -> None:
    backups = series(
        "2020-12-30 12:00",  # 1  2020-W53
        "2021-01-01 12:00",  # 2  2020-W53
        "2021-01-03 12:00",  # 3  Sunday, 2020-W53
        "2021-01-04 12:00",  # 4  Monday, 2021-W01
        "2021-01-05 12:00",  # 5  2021-W01
    )
    result = apply({"tiers": ["1w:1y"]}, backups)
    assert kept(result) == [5, 3]
    assert deleted(result) == [4, 2, 1]


def test_it_combines_the_tiers_of_the_issue_on_a_half_hourly_timeline() -> None:
    # Every 30 minutes for four days back from 2026-01-10 00:00 UTC: k half-hours old, id 192 - k.
    anchor = utc("2026-01-10 00:00")
    backups = [ok(192 - k, anchor - timedelta(minutes=30 * k)) for k in range(192)]
    result = apply({"tiers": ["15min:24h", "1h:72h", "1d:14d"]}, backups)
    # 15min:24h: each of the 48 younger than 24 hours is alone in its quarter hour.
    # 1h:72h: the newest of an hour is its HH:30 backup (k odd), the anchor alone in its hour.
    # 1d:14d: the newest of each day is 23:30: k = 1, 49, 97, 145 (and the anchor, k = 0).
    expected = {k for k in range(192) if k < 48 or (k % 2 == 1 and k < 144) or k == 145}
    assert len(expected) == 97
    assert kept(result) == [192 - k for k in sorted(expected)]
    assert deleted(result) == [192 - k for k in range(192) if k not in expected]
    reasons = result.reasons()
    assert reasons[192 - 1] == ("tier 15min:24h", "tier 1h:72h", "tier 1d:14d")
    assert reasons[192 - 49] == ("tier 1h:72h", "tier 1d:14d")
    assert reasons[192 - 145] == ("tier 1d:14d",)


# -- spacing rules ------------------------------------------------------------------------------


SPACED = series(
    "2025-12-26 12:00",  # 1  exactly 15 days before the newest
    "2026-01-07 00:00",  # 2
    "2026-01-08 12:00",  # 3  24 hours before 5
    "2026-01-08 13:00",  # 4  23 hours before 5: too close
    "2026-01-09 12:00",  # 5  24 hours before the newest
    "2026-01-10 06:00",  # 6  too close to the newest
    "2026-01-10 12:00",  # 7  the newest
)


def test_it_keeps_backups_at_least_a_day_apart_for_rule_3_1() -> None:
    result = apply({"rules": ["3.1"]}, SPACED)
    assert kept(result) == [7, 5, 3]
    assert deleted(result) == [6, 4, 2, 1]
    assert result.reasons() == {
        7: ("rule 3.1: 1 of 3", "newest success", "min_keep 1"),
        5: ("rule 3.1: 2 of 3",),
        3: ("rule 3.1: 3 of 3",),
    }


def test_it_keeps_backups_at_least_fifteen_days_apart_for_rule_2_15() -> None:
    result = apply({"rules": ["3.1", "2.15"]}, SPACED)
    assert kept(result) == [7, 5, 3, 1]
    assert result.reasons()[1] == ("rule 2.15: 2 of 2",)
    assert result.reasons()[7][:2] == ("rule 3.1: 1 of 3", "rule 2.15: 1 of 2")


def test_it_measures_spacing_in_elapsed_hours_across_dst() -> None:
    # Berlin wall-clock timestamps, as the preview command makes them from naive lines.
    backups = [
        ok(1, datetime(2026, 3, 28, 11, 0, tzinfo=BERLIN)),  # 10:00 UTC: 24 hours before 3
        ok(2, datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)),  # 11:00 UTC: only 23 hours before 3
        ok(3, datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN)),  # 10:00 UTC
    ]
    result = apply({"rules": ["2.1"]}, backups, timezone="Europe/Berlin")
    assert kept(result) == [3, 1]
    assert deleted(result) == [2]


# -- DST and the bucket rules -------------------------------------------------------------------


def test_it_splits_days_at_local_midnight_around_the_spring_dst_change() -> None:
    backups = series(
        "2026-03-28 22:30",  # 1  23:30 CET, March 28th
        "2026-03-28 23:30",  # 2  00:30 CET, March 29th
        "2026-03-29 21:30",  # 3  23:30 CEST, March 29th
        "2026-03-29 22:30",  # 4  00:30 CEST, March 30th
    )
    assert kept(apply({"keep_daily": 3}, backups, timezone="Europe/Berlin")) == [4, 3, 1]
    # In UTC the days are March 28th (1, 2) and 29th (3, 4): 1 is kept as the oldest.
    assert kept(apply({"keep_daily": 3}, backups)) == [4, 2, 1]


def test_it_splits_days_at_local_midnight_around_the_autumn_dst_change() -> None:
    backups = series(
        "2026-10-24 21:30",  # 1  23:30 CEST, October 24th
        "2026-10-24 22:30",  # 2  00:30 CEST, October 25th
        "2026-10-25 22:30",  # 3  23:30 CET, October 25th
        "2026-10-25 23:30",  # 4  00:30 CET, October 26th
    )
    result = apply({"keep_daily": -1}, backups, timezone="Europe/Berlin")
    assert kept(result) == [4, 3, 1]
    assert deleted(result) == [2]


def test_it_keeps_the_two_repeated_hours_of_an_autumn_night_apart() -> None:
    backups = series(
        "2026-10-25 00:10",  # 1  02:10 CEST (the first 02:00 hour)
        "2026-10-25 00:50",  # 2  02:50 CEST
        "2026-10-25 01:10",  # 3  02:10 CET (the second 02:00 hour)
        "2026-10-25 01:40",  # 4  02:40 CET
        "2026-10-25 02:20",  # 5  03:20 CET
    )
    result = apply({"keep_hourly": 3}, backups, timezone="Europe/Berlin")
    assert kept(result) == [5, 4, 2]
    assert deleted(result) == [3, 1]


def test_it_counts_the_missing_spring_hour_as_no_hour() -> None:
    backups = series(
        "2026-03-29 00:30",  # 1  01:30 CET
        "2026-03-29 00:59",  # 2  01:59 CET
        "2026-03-29 01:00",  # 3  03:00 CEST: the next local hour is 03
        "2026-03-29 01:30",  # 4  03:30 CEST
    )
    result = apply({"keep_hourly": 2}, backups, timezone="Europe/Berlin")
    assert kept(result) == [4, 2]


def test_it_orders_wall_clock_timestamps_of_the_repeated_hour_by_instant() -> None:
    first = datetime(2026, 10, 25, 2, 45, tzinfo=BERLIN)  # 00:45 UTC
    second = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1)  # 01:30 UTC: the later one
    result = apply({"keep_last": 1}, [ok(2, first), ok(1, second)], timezone="Europe/Berlin")
    assert kept(result) == [1]
    assert deleted(result) == [2]


# -- caps -------------------------------------------------------------------------------------


def test_it_deletes_backups_older_than_retention_days_before_the_newest_success() -> None:
    backups = [
        run_(7, utc("2025-12-01 12:00"), "running"),
        ok(1, utc("2026-01-01 12:00")),
        ok(2, utc("2026-01-10 11:00")),  # 10 days and an hour older than the newest success
        ok(3, utc("2026-01-10 13:00")),  # 9 days and 23 hours
        run_(4, utc("2026-01-15 12:00"), "failed"),
        ok(5, utc("2026-01-20 12:00")),  # the newest success
        run_(6, utc("2026-01-21 12:00"), "failed"),
    ]
    result = apply({"retention_days": 10}, backups, now=utc("2026-06-01 00:00"))
    assert kept(result) == [6, 5, 3, 7]
    assert deleted(result) == [4, 2, 1]
    assert result.reasons() == {
        6: ("failed after the newest success: kept as evidence",),
        5: ("within retention_days 10", "newest success", "min_keep 1"),
        3: ("within retention_days 10",),
        7: ("running: never deleted",),
    }
    reasons = {d.backup.id: d.reason for d in result.delete}
    assert reasons[2] == "expired: retention_days 10 reached, counted from the newest success"
    assert reasons[4] == "failed run older than the newest success: counts for nothing"


def test_it_lets_retention_days_remove_what_a_rule_keeps() -> None:
    backups = [ok(day, utc(f"2026-01-{day:02} 12:00")) for day in range(1, 10)]
    backups.append(ok(10, utc("2026-01-10 18:00")))  # 5 days before it is January 5th 18:00
    result = apply({"keep_daily": 30, "retention_days": 5}, backups)
    assert kept(result) == [10, 9, 8, 7, 6]
    assert deleted(result) == [5, 4, 3, 2, 1]


def test_it_keeps_at_most_max_backups_dropping_the_oldest_first() -> None:
    backups = series(*(f"2026-01-0{day} 12:00" for day in range(1, 6)))
    result = apply({"keep_last": -1, "max_backups": 3}, backups)
    assert kept(result) == [5, 4, 3]
    assert deleted(result) == [2, 1]
    assert {d.reason for d in result.delete} == {"beyond max_backups 3"}


def test_it_counts_the_protected_newest_verified_backup_within_max_backups() -> None:
    backups = [ok(day, utc(f"2026-01-0{day} 12:00"), verified=day == 1) for day in range(1, 6)]
    result = apply({"max_backups": 3}, backups)
    assert kept(result) == [5, 4, 1]
    assert deleted(result) == [3, 2]
    assert "newest verified" in result.reasons()[1]
    assert kept(apply({"max_backups": 2}, backups)) == [5, 1]


def test_it_keeps_every_success_within_the_caps_when_there_is_no_keep_rule() -> None:
    backups = [
        ok(1, utc("2026-01-01 12:00")),
        ok(2, utc("2026-01-02 12:00")),
        run_(3, utc("2026-01-02 18:00"), "corrupt"),
        ok(4, utc("2026-01-03 12:00")),
        run_(5, utc("2026-01-03 18:00"), "skipped"),
        ok(6, utc("2026-01-04 13:00")),
    ]
    result = apply({"max_backups": 3}, backups)
    assert kept(result) == [6, 4, 2]
    assert deleted(result) == [5, 3, 1]
    assert result.reasons()[4] == ("within max_backups 3",)
    both = apply({"max_backups": 3, "retention_days": 2}, backups)  # expired: up to January 2nd 13:00
    assert kept(both) == [6, 4]
    assert deleted(both) == [5, 3, 2, 1]
    assert both.reasons()[4] == ("within retention_days 2 and max_backups 3",)


def test_it_never_lets_a_cap_delete_the_min_keep_newest_successes() -> None:
    backups = [ok(day, utc(f"2026-01-0{day} 12:00")) for day in range(1, 5)]
    backups.append(ok(5, utc("2026-01-05 18:00")))  # a day before it, every other one has expired
    result = apply({"retention_days": 1, "min_keep": 3}, backups)
    assert kept(result) == [5, 4, 3]
    assert deleted(result) == [2, 1]
    assert result.reasons()[5] == ("within retention_days 1", "newest success", "min_keep 3")
    assert "min_keep 3" in result.reasons()[3]
    assert kept(apply({"retention_days": 1}, backups)) == [5]
    assert kept(apply({"max_backups": 2, "min_keep": 4}, backups)) == [5, 4, 3, 2]


def test_it_keeps_the_min_keep_newest_successes_even_when_no_rule_does() -> None:
    # The module's contract: the min_keep newest successes are never deleted.
    backups = series(*(f"2026-01-0{day} 12:00" for day in range(1, 6)))
    result = apply({"keep_last": 1, "min_keep": 3}, backups)
    assert kept(result) == [5, 4, 3]
    assert result.reasons()[4] == ("min_keep 3",)


def test_it_never_deletes_the_newest_verified_success() -> None:
    backups = [ok(1, utc("2026-01-01 12:00")), ok(2, utc("2026-01-02 12:00"), verified=True)]
    backups.append(ok(3, utc("2026-01-03 12:00")))
    result = apply({"keep_last": 1}, backups)
    assert kept(result) == [3, 2]
    assert deleted(result) == [1]
    assert result.reasons()[2] == ("newest verified",)


def test_it_keeps_an_old_verified_success_past_retention_days() -> None:
    backups = [ok(day, utc(f"2026-01-0{day} 12:00"), verified=day == 1) for day in range(1, 5)]
    backups.append(ok(5, utc("2026-01-05 18:00")))
    result = apply({"retention_days": 2}, backups)
    assert kept(result) == [5, 4, 1]
    assert deleted(result) == [3, 2]
    assert "newest verified" in result.reasons()[1]


def test_it_keeps_everything_within_a_window_longer_than_the_calendar() -> None:
    backups = series("2001-01-01 12:00", "2026-01-01 12:00")
    assert kept(apply({"keep_within": "20000y"}, backups)) == [2, 1]
    assert kept(apply({"tiers": ["1d:9999999d"]}, backups)) == [2, 1]
    assert kept(apply({"keep_last": 1, "retention_days": 10**6}, backups)) == [2]
    assert kept(apply({"retention_days": 10**9}, backups)) == [2, 1]


# -- statuses, empty policies, ties and now ------------------------------------------------------------


def test_it_counts_only_successful_backups_toward_a_rule() -> None:
    backups = [
        ok(1, utc("2026-01-01 12:00")),
        run_(2, utc("2026-01-02 12:00"), "corrupt"),
        ok(3, utc("2026-01-03 12:00")),
        run_(4, utc("2026-01-04 12:00"), "failed"),
        run_(5, utc("2026-01-04 13:00"), "skipped"),
        ok(6, utc("2026-01-05 12:00")),
        run_(7, utc("2026-01-06 12:00"), "pending"),
        run_(8, utc("2026-01-06 13:00"), "skipped"),
    ]
    result = apply({"keep_last": 2, "keep_daily": 2}, backups)
    assert kept(result) == [8, 7, 6, 3]
    assert deleted(result) == [5, 4, 2, 1]
    assert result.reasons()[7] == ("pending: never deleted",)
    assert result.reasons()[8] == ("skipped after the newest success: kept as evidence",)


def test_it_never_deletes_running_or_pending_backups() -> None:
    backups = [
        run_(1, utc("2020-01-01 12:00"), "running"),
        run_(2, utc("2020-01-02 12:00"), "pending"),
        ok(3, utc("2026-01-01 12:00")),
    ]
    result = apply({"keep_last": 1, "retention_days": 1, "max_backups": 1}, backups)
    assert kept(result) == [3, 2, 1]
    assert deleted(result) == []


def test_it_deletes_nothing_without_a_successful_backup() -> None:
    backups = [
        run_(1, utc("2020-01-01 12:00"), "failed"),
        run_(2, utc("2020-01-02 12:00"), "corrupt"),
        run_(3, utc("2026-01-01 12:00"), "skipped"),
    ]
    result = apply({"keep_last": 1, "retention_days": 1}, backups)
    assert kept(result) == [3, 2, 1]
    assert deleted(result) == []
    assert result.anchor is None
    assert result.reasons()[1] == ("no successful backup yet: nothing is deleted",)
    assert apply({"keep_last": 1}, []) == Plan((), (), None)


def test_it_deletes_nothing_with_an_empty_policy() -> None:
    backups = [
        run_(1, utc("2020-01-01 12:00"), "failed"),
        ok(2, utc("2020-01-02 12:00")),
        ok(3, utc("2026-01-01 12:00")),
    ]
    result = apply({}, backups)
    assert kept(result) == [3, 2, 1]
    assert deleted(result) == []
    assert set(result.reasons().values()) == {("the policy has no rule: nothing is deleted",)}


def test_it_orders_equal_timestamps_by_id() -> None:
    moment = utc("2026-01-05 12:00")
    backups = [ok(3, moment), ok(7, moment), ok(5, moment), ok(1, utc("2026-01-04 12:00"))]
    result = apply({"keep_last": 1}, backups)
    assert kept(result) == [7]
    assert deleted(result) == [5, 3, 1]
    daily = apply({"keep_daily": 2}, backups)
    assert kept(daily) == [7, 1]


def test_it_orders_a_failed_run_after_a_success_at_the_same_time_by_id() -> None:
    moment = utc("2026-01-05 12:00")
    backups = [run_(4, moment, "failed"), ok(5, moment), run_(6, moment, "failed")]
    result = apply({"keep_last": 1}, backups)
    assert kept(result) == [6, 5]
    assert deleted(result) == [4]


def test_it_gives_the_same_plan_whatever_the_input_order() -> None:
    moment = utc("2026-01-05 12:00")
    backups = [ok(n, moment - timedelta(hours=7 * (n // 3)), verified=n == 4) for n in range(1, 30)]
    backups += [run_(40, moment, "failed"), run_(41, moment, "running")]
    policy = {"keep_daily": 3, "keep_hourly": 2, "rules": ["2.1"], "max_backups": 5}
    expected = apply(policy, backups)
    shuffled = list(backups)
    random.Random(4).shuffle(shuffled)
    assert apply(policy, shuffled) == expected
    assert apply(policy, reversed(backups)) == expected


def test_it_measures_windows_from_the_newest_success_not_after_now() -> None:
    backups = series(
        "2026-01-01 12:00",  # 1
        "2026-01-04 12:00",  # 2
        "2026-01-05 12:00",  # 3  the newest success not after now
        "2026-01-10 12:00",  # 4  dated after now
    )
    result = apply({"keep_within": "2d"}, backups, now=utc("2026-01-06 00:00"))
    assert result.anchor == utc("2026-01-05 12:00")
    assert kept(result) == [4, 3, 2]
    assert deleted(result) == [1]
    assert result.reasons()[4] == ("within 2d", "newest success (dated after now)", "min_keep 1")
    assert result.reasons()[3] == ("within 2d", "newest success")
    # Once now passes every timestamp the newest one is the anchor, and stays it.
    later = apply({"keep_within": "2d"}, backups, now=utc("2026-01-10 12:00"))
    assert kept(later) == [4]
    assert apply({"keep_within": "2d"}, backups, now=utc("2040-01-01 00:00")) == later


# -- incremental chains ---------------------------------------------------------------------------


def inc(id_: int, when: datetime, base: int, status: str = "success") -> BackupInfo:
    """An incremental built on backup ``base``."""
    return BackupInfo(id_, when, status, base_id=base)


def test_it_keeps_the_bases_of_a_kept_incremental_that_keep_last_would_delete() -> None:
    backups = [
        ok(1, utc("2026-01-01 12:00")),  # an older full backup nothing depends on
        ok(2, utc("2026-01-02 12:00")),  # the full backup of the chain
        inc(3, utc("2026-01-03 12:00"), base=2),
        inc(4, utc("2026-01-04 12:00"), base=3),
    ]
    result = apply({"keep_last": 1}, backups)
    assert kept(result) == [4, 3, 2]
    assert deleted(result) == [1]
    assert result.reasons() == {
        4: ("last 1", "newest success", "min_keep 1"),
        3: ("base of incremental 4",),
        2: ("base of incremental 3",),
    }
    assert result.delete[0].reason == "no rule keeps it"


def test_it_keeps_an_expired_full_backup_that_a_kept_chain_needs() -> None:
    backups = [
        ok(1, utc("2026-01-01 12:00")),
        inc(2, utc("2026-01-02 12:00"), base=1),
        inc(3, utc("2026-01-03 12:00"), base=2),
        inc(4, utc("2026-01-04 12:00"), base=3),
    ]
    result = apply({"retention_days": 2}, backups)  # 2 and 1 are 2 and 3 days old: expired
    assert kept(result) == [4, 3, 2, 1]
    assert deleted(result) == []
    assert result.reasons() == {
        4: ("within retention_days 2", "newest success", "min_keep 1"),
        3: ("within retention_days 2", "base of incremental 4"),
        2: ("base of incremental 3",),
        1: ("base of incremental 2",),
    }


def test_it_lets_a_chain_keep_more_than_max_backups() -> None:
    backups = [ok(1, utc("2026-01-01 12:00"))]
    backups += [inc(n, utc(f"2026-01-0{n} 12:00"), base=n - 1) for n in range(2, 5)]
    result = apply({"max_backups": 2}, backups)
    assert kept(result) == [4, 3, 2, 1]
    assert result.reasons()[2] == ("base of incremental 3",)


def test_it_deletes_a_chain_whose_tip_is_not_kept() -> None:
    backups = [
        ok(1, utc("2026-01-01 12:00")),
        inc(2, utc("2026-01-02 12:00"), base=1),
        inc(3, utc("2026-01-03 12:00"), base=2),  # the old chain's tip: no rule keeps it
        ok(4, utc("2026-01-04 12:00")),  # a new full backup
        inc(5, utc("2026-01-05 12:00"), base=4),
    ]
    result = apply({"keep_last": 2}, backups)
    assert kept(result) == [5, 4]
    assert deleted(result) == [3, 2, 1]
    assert result.reasons()[4] == ("last 2", "base of incremental 5")  # every reason, as for rules


def test_it_lets_running_incrementals_pin_their_base_but_not_failed_ones() -> None:
    chain = [ok(1, utc("2026-01-01 12:00")), ok(2, utc("2026-01-02 12:00"))]
    running = apply({"keep_last": 1}, [*chain, inc(3, utc("2026-01-03 12:00"), base=1, status="running")])
    assert kept(running) == [3, 2, 1]
    assert running.reasons()[1] == ("base of incremental 3",)
    failed = apply({"keep_last": 1}, [*chain, inc(3, utc("2026-01-03 12:00"), base=1, status="failed")])
    assert kept(failed) == [3, 2]  # kept as evidence: it has nothing to restore, so pins nothing
    assert deleted(failed) == [1]


def test_it_ignores_a_base_missing_from_the_input_and_survives_loops() -> None:
    backups = [ok(1, utc("2026-01-01 12:00")), inc(2, utc("2026-01-02 12:00"), base=99)]
    result = apply({"keep_last": 1}, backups)
    assert kept(result) == [2]
    assert deleted(result) == [1]
    assert result.reasons()[2] == ("last 1", "newest success", "min_keep 1")
    looped = [inc(1, utc("2026-01-01 12:00"), base=2), inc(2, utc("2026-01-02 12:00"), base=1)]
    looped.append(inc(3, utc("2026-01-03 12:00"), base=3))
    result = apply({"keep_last": 1}, looped)
    assert kept(result) == [3]  # built on itself: nothing more to keep
    result = apply({"keep_last": 2}, looped)
    assert kept(result) == [3, 2, 1]
    assert result.reasons()[2] == ("last 2", "base of incremental 1")
    assert result.reasons()[1] == ("base of incremental 2",)


# -- policy validation --------------------------------------------------------------------------


def test_it_reads_a_full_policy() -> None:
    mapping = {
        "keep_last": 3,
        "keep_hourly": -1,
        "keep_daily": 7,
        "keep_within": "2d",
        "tiers": ["15min:24h", "1h:72h"],
        "rules": ["3.1", "2.15"],
        "retention_days": 30,
        "max_backups": 10,
        "min_keep": 2,
        "max_delete_fraction": 1,
    }
    assert Policy.from_mapping(mapping, timezone="Europe/Berlin") == Policy(
        keep_last=3,
        keep_hourly=-1,
        keep_daily=7,
        keep_within=Duration(days=2),
        tiers=(
            Tier(Period(Duration(minutes=15)), Duration(hours=24)),
            Tier(Period(Duration(hours=1)), Duration(hours=72)),
        ),
        rules=(SpacingRule(3, 1), SpacingRule(2, 15)),
        retention_days=30,
        max_backups=10,
        min_keep=2,
        max_delete_fraction=1.0,
        timezone="Europe/Berlin",
    )


def test_it_reads_a_single_rule_or_tier_given_as_a_string() -> None:
    policy = Policy.from_mapping({"rules": "3.10", "tiers": "1d:14d"})
    assert policy.rules == (SpacingRule(3, 10),)
    assert policy.tiers == (Tier(Period(Duration(days=1)), Duration(days=14)),)
    assert str(policy.rules[0]) == "3.10"
    assert str(policy.tiers[0]) == "1d:14d"


def test_it_has_defaults_for_an_empty_policy() -> None:
    policy = Policy.from_mapping({})
    assert policy == Policy()
    assert policy.min_keep == 1
    assert policy.max_delete_fraction == 0.5
    assert not policy.has_rules


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"keep_daily": 0}, "keep_daily"),
        ({"keep_daily": -2}, "keep_daily"),
        ({"keep_daily": True}, "keep_daily"),
        ({"keep_daily": "7"}, "keep_daily"),
        ({"keep_daily": 7.0}, "keep_daily"),
        ({"keep_last": None}, "keep_last"),
        ({"keep_yearly": 0}, "keep_yearly"),
        ({"retention_days": -1}, "retention_days"),
        ({"retention_days": 0}, "retention_days"),
        ({"max_backups": -1}, "max_backups"),
        ({"min_keep": 0}, "min_keep"),
        ({"keep_within": "2m"}, "keep_within"),
        ({"keep_within": 2}, "keep_within"),
        ({"keep_within": "0d"}, "keep_within"),
        ({"tiers": ["15min"]}, "tiers"),
        ({"tiers": ["24h:7d"]}, "tiers"),
        ({"tiers": ["15m:24h"]}, "tiers"),
        ({"tiers": ["15min:24h:7d"]}, "tiers"),
        ({"tiers": [15]}, "tiers"),
        ({"tiers": {"15min": "24h"}}, "tiers"),
        ({"rules": [3.1]}, "rules"),
        ({"rules": 3.1}, "rules"),
        ({"rules": ["3"]}, "rules"),
        ({"rules": ["0.1"]}, "rules"),
        ({"rules": ["3.x"]}, "rules"),
        ({"rules": ["-3.1"]}, "rules"),
        ({"rules": ["3.1.2"]}, "rules"),
        ({"rules": ["\u00b2.1"]}, "rules"),  # a superscript two: a digit, but not a decimal one
        ({"keep_dayly": 7}, "keep_dayly"),
        ({"timezone": "UTC"}, "timezone"),  # the timezone is the target's, not a rule
        ({"max_delete_fraction": 0}, "max_delete_fraction"),
        ({"max_delete_fraction": 1.5}, "max_delete_fraction"),
        ({"max_delete_fraction": -0.1}, "max_delete_fraction"),
        ({"max_delete_fraction": True}, "max_delete_fraction"),
        ({"max_delete_fraction": "0.5"}, "max_delete_fraction"),
    ],
)
def test_it_names_the_field_of_an_invalid_policy(mapping: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(mapping)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_it_tells_to_quote_a_spacing_rule_given_as_a_number() -> None:
    with pytest.raises(PolicyError, match="quoted"):
        Policy.from_mapping({"rules": [3.1]})


def test_it_says_a_bare_m_is_ambiguous_in_a_policy() -> None:
    with pytest.raises(PolicyError, match="ambiguous"):
        Policy.from_mapping({"keep_within": "30m"})


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "Europe", "", "/etc/localtime", "../UTC"])
def test_it_names_the_timezone_field_for_an_unknown_timezone(timezone: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping({"keep_daily": 7}, timezone=timezone)
    assert caught.value.field == "timezone"


def test_it_names_the_policy_itself_when_it_is_not_a_mapping() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(["keep_daily", 7])  # type: ignore[arg-type]
    assert caught.value.field == "retention"


@pytest.mark.parametrize("fraction", [0.01, 0.5, 1, 1.0])
def test_it_accepts_a_max_delete_fraction_above_zero_and_at_most_one(fraction: float) -> None:
    assert Policy.from_mapping({"max_delete_fraction": fraction}).max_delete_fraction == fraction
