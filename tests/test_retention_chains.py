"""The retention engine keeps what kept incremental backups are built on. Conventions in
tests/retention_helpers.py.
"""

from __future__ import annotations

from datetime import datetime

from backups.retention.planner import BackupInfo
from tests.retention_helpers import apply, deleted, kept, ok, utc

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
