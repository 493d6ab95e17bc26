"""The typed facts backups gets about a schedule: built here, from the schedule row, so backups
never reads this app's objects."""

from __future__ import annotations

from backups.services import ScheduleInfo

from .models import BackupSchedule


def info_for(schedule: BackupSchedule) -> ScheduleInfo:
    channels = schedule.notify_channels or []
    return ScheduleInfo(
        pk=schedule.pk,
        name=schedule.name,
        storage_path=schedule.storage_path,
        retention=dict(schedule.retention or {}),
        retention_days=schedule.retention_days,
        notify_channels=(channels,) if isinstance(channels, str) else tuple(channels),
        notification_email=schedule.notification_email or "",
    )


def info_by_id(schedule_id: int) -> ScheduleInfo | None:
    """The lookup registered with backups (for runs it only knows by their row)."""
    schedule = BackupSchedule.objects.filter(pk=schedule_id).first()
    return info_for(schedule) if schedule is not None else None
