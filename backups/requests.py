"""What other apps hand backups when they ask for work: small frozen values owned by backups,
never another app's objects (backups does not import the apps that build them).

The schedules app builds a :class:`ScheduleInfo` for every run it starts, and registers a
lookup so that code starting from a stored Backup row (alerts about a lost run, retention per
schedule) can get the same facts by id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScheduleInfo:
    """The facts of the schedule a run belongs to that backups acts on."""

    pk: int
    name: str
    storage_path: str = ""  # sub-path inside each storage
    retention: Mapping[str, Any] = field(default_factory=dict)  # rules; empty: the target's apply
    retention_days: int | None = None
    notify_channels: tuple[str, ...] = ()  # notifier names; empty: the default notifiers
    notification_email: str = ""  # extra addresses, comma-separated


ScheduleLookup = Callable[[int], "ScheduleInfo | None"]
_lookups: list[ScheduleLookup] = []


def register_schedule_lookup(lookup: ScheduleLookup) -> None:
    """Called by the app that owns schedules (once, from its ``ready``)."""
    if lookup not in _lookups:
        _lookups.append(lookup)


def schedule_info(schedule_id: int | None) -> ScheduleInfo | None:
    """The facts of schedule ``schedule_id``; None for a manual run or a deleted schedule."""
    if schedule_id is None:
        return None
    for lookup in _lookups:
        info = lookup(schedule_id)
        if info is not None:
            return info
    return None
