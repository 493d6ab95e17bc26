"""The retention engine's handling of statuses, empty policies, ties, input order and ``now``.
Conventions in tests/retention_helpers.py.
"""

from __future__ import annotations

import random
from datetime import timedelta

from backups.retention.planner import Plan
from tests.retention_helpers import apply, deleted, kept, ok, run_, series, utc

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
