"""The retention engine's caps (retention_days, max_backups) and the guarantees no cap breaks
(min_keep, the newest verified success). Conventions in tests/retention_helpers.py.
"""

from __future__ import annotations

from tests.retention_helpers import apply, deleted, kept, ok, run_, series, utc

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
    # The longest spans a policy accepts (100000 days, about 273 years) compute without overflow.
    assert kept(apply({"keep_within": "270y"}, backups)) == [2, 1]
    assert kept(apply({"tiers": ["1d:100000d"]}, backups)) == [2, 1]
    assert kept(apply({"keep_last": 1, "retention_days": 100000}, backups)) == [2]
    assert kept(apply({"retention_days": 100000}, backups)) == [2, 1]
