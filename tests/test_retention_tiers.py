"""The retention engine's tiers (period:window) and spacing rules (count.days) on hand-checked
timelines. Conventions in tests/retention_helpers.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.retention_helpers import BERLIN, apply, deleted, kept, ok, series, utc

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
