"""The typed facts backups gets about a schedule: built here, from the schedule row, so backups
never reads this app's objects."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Count, Min, Q

from backups.services import ScheduleInfo, ScheduleOverview, ScheduleState

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
        encryption=schedule.encryption,
        escrow=tuple(schedule.escrow or ()),
    )


def key_users() -> list[tuple[str, str]]:
    """(key name, "schedule NAME") for every key a schedule names (registered with backups)."""
    pairs = []
    for name, encryption, escrow in BackupSchedule.objects.values_list("name", "encryption", "escrow"):
        for key in dict.fromkeys([encryption, *(escrow or [])]):
            if key:
                pairs.append((key, f"schedule {name}"))
    return pairs


def info_by_id(schedule_id: int) -> ScheduleInfo | None:
    """The lookup registered with backups (for runs it only knows by their row)."""
    schedule = BackupSchedule.objects.filter(pk=schedule_id).first()
    return info_for(schedule) if schedule is not None else None


def overviews(target_ids: Sequence[int]) -> dict[int, ScheduleOverview]:
    """The dashboard's view of each target's schedules, in one query (registered with backups)."""
    active = Q(is_active=True)
    rows = (
        BackupSchedule.objects.filter(target_id__in=target_ids)
        .values("target_id")
        .annotate(
            count=Count("id"),
            active=Count("id", filter=active),
            next_run_at=Min("next_run_at", filter=active),
            missed_since=Min("missed_since", filter=active),
        )
        .order_by()
    )
    return {
        row["target_id"]: ScheduleOverview(
            schedules=row["count"],
            active=row["active"],
            next_run_at=row["next_run_at"],
            missed_since=row["missed_since"],
        )
        for row in rows
    }


def states() -> list[ScheduleState]:
    """Every schedule's missed flag for the metrics, in one query (registered with backups):
    missed while an active schedule of an active target has an open missed episode."""
    rows = BackupSchedule.objects.order_by("name").values_list(
        "name", "target_id", "is_active", "target__is_active", "missed_since"
    )
    return [
        ScheduleState(name=name, target_id=target_id, missed=active and target_active and since is not None)
        for name, target_id, active, target_active, since in rows
    ]
