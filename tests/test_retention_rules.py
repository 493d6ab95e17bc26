"""The retention engine's keep_* rules on hand-checked timelines: keep_last, the calendar bucket
rules (hourly ... yearly, ISO weeks, the policy timezone, DST) and keep_within. Every expected id
was worked out from the rules' semantics, not by running the engine; conventions in
tests/retention_helpers.py.
"""

from __future__ import annotations

from datetime import datetime

from tests.retention_helpers import BERLIN, apply, deleted, kept, ok, run_, series, utc

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
