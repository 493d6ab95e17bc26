"""Shared helpers of the retention engine's tests (tests/test_retention_*.py): hand-checked
timelines, pure Python, no database.

Conventions: ``utc("2026-01-05 12:00")`` is a UTC instant; backups are numbered oldest first
unless a test says otherwise, so ids and ages run in opposite directions; ``now`` defaults to a
moment years after every backup (windows are measured from the newest success, never from now).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from backups.retention.planner import BackupInfo, Plan, plan
from backups.retention.policy import Policy

BERLIN = ZoneInfo("Europe/Berlin")
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
