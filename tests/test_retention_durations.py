"""The retention engine's durations and periods: parsing, writing back, and calendar arithmetic
across month ends, leap days and DST. Conventions in tests/retention_helpers.py.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest

from backups.retention.durations import Duration, DurationError, Period, parse_duration, parse_period
from tests.retention_helpers import BERLIN, utc

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
