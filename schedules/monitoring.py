"""Watching for what did not happen: the dead man's switch (a schedule whose due run has not
succeeded within its grace period alerts once, and again when it recovers) and shrunken
backups (a scheduled SUCCESS far smaller than the one before it)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from backups import services as backup_services
from backups.cli import human_bytes
from backups.models import Backup, BackupStatus, BackupStep, Notification, StepStatus

from .cron import CronError, parse_cron
from .models import BackupSchedule
from .requests import info_for

logger = logging.getLogger(__name__)

SKIPPED_COUNTED = 1000  # skipped run times counted for one "missed" alert; more are "or more"
SETTLE = timedelta(seconds=30)  # a missed alert found this recently may still be on its way


def _notify(event: str, **kwargs: Any) -> None:
    """Alert through the notification service; an alert that cannot go out is logged, never
    raised: the watch must go on for every other schedule."""
    try:
        backup_services.notify(event, **kwargs)
    except Exception:
        logger.exception("could not send the %s notification", event)


def grace_for(schedule: BackupSchedule) -> timedelta:
    minutes = (
        schedule.grace_minutes
        if schedule.grace_minutes is not None
        else settings.BACKUPSITE_MISSED_GRACE_MINUTES
    )
    return timedelta(minutes=minutes)


def due_slot(schedule: BackupSchedule, now: datetime) -> datetime | None:
    """The latest run time whose grace period has passed at ``now``, if the schedule existed then."""
    try:
        cron = parse_cron(schedule.cron_expression)
    except CronError:
        return None
    slot = cron.previous_run(now - grace_for(schedule), ZoneInfo(schedule.timezone))
    if slot is None or slot < schedule.created_at:
        return None
    return slot


def check_missed(now: datetime | None = None) -> dict[str, int]:
    """For every active schedule of an active target: alert "missed" once when its latest due
    run has no SUCCESS backup (started at or after that run time) within the grace period, and
    "recovered" once when one succeeds again. Returns counts."""
    now = now or timezone.now()
    counts = {"missed": 0, "recovered": 0}
    schedules = BackupSchedule.objects.filter(is_active=True, target__is_active=True).select_related("target")
    for schedule in schedules:
        counts["missed"] += send_unsent_missed(schedule, now)
        slot = due_slot(schedule, now)
        if slot is None:
            continue
        # A success dated after now (stamped by a clock that ran ahead) is no run of this slot.
        succeeded = Backup.objects.filter(
            schedule=schedule, status=BackupStatus.SUCCESS, started_at__gte=slot, started_at__lte=now
        )
        if succeeded.exists():
            counts["recovered"] += note_recovery(schedule)
        elif _mark_missed(schedule, slot):
            counts["missed"] += 1
    return counts


def _open_episode(schedule: BackupSchedule, since: datetime) -> bool:
    """Mark ``schedule`` missed since ``since`` unless it already is: one "missed" alert per
    outage, whoever finds it first (the watch or a later firing's claim). True when it opened."""
    now = timezone.now()
    if not BackupSchedule.objects.filter(pk=schedule.pk, missed_since__isnull=True).update(
        missed_since=since, missed_alert_due=now
    ):
        return False  # already alerted for this outage
    schedule.missed_since, schedule.missed_alert_due = since, now
    return True


def _alert_missed(schedule: BackupSchedule, text: str, due: datetime, late: str = "") -> None:
    logger.warning("missed backup: %s", text)
    _notify(
        "missed",
        subject=f"Missed backup: {schedule.target.name} ({schedule.name})",
        text=text,
        fields={"schedule": schedule.name, "target": schedule.target.name, "due": due.isoformat()},
        schedule=info_for(schedule),
        target=schedule.target,
        late=late,
    )
    # Handed to its channels (delivery rows written; the outbox owns them from here).
    BackupSchedule.objects.filter(pk=schedule.pk).update(missed_alert_due=None)
    schedule.missed_alert_due = None


def send_unsent_missed(schedule: BackupSchedule, now: datetime) -> bool:
    """The missed alert of an outage whose finder stopped between opening it and writing the
    alert's delivery rows (a worker SIGKILLed in its claim): sent now, once. True when sent."""
    due_since = schedule.missed_alert_due
    if due_since is None or schedule.missed_since is None or due_since > now - SETTLE:
        return False  # none due, or its finder may still be sending it
    if Notification.objects.filter(schedule=schedule, event="missed", created_at__gte=due_since).exists():
        BackupSchedule.objects.filter(pk=schedule.pk).update(missed_alert_due=None)
        return False
    if not BackupSchedule.objects.filter(pk=schedule.pk, missed_alert_due=due_since).update(
        missed_alert_due=now
    ):
        return False  # another watch took it
    local = schedule.missed_since.astimezone(ZoneInfo(schedule.timezone))
    text = (
        f"Schedule {schedule.name} ({schedule.cron_expression} {schedule.timezone}) missed its run time "
        f"{local:%Y-%m-%d %H:%M %Z}: no backup of {schedule.target.name} succeeded for it."
    )
    late = f"found {due_since:%Y-%m-%d %H:%M:%S %Z}; the process that found it stopped before alerting"
    _alert_missed(schedule, text, local, late)
    return True


def _mark_missed(schedule: BackupSchedule, slot: datetime) -> bool:
    if not _open_episode(schedule, slot):
        return False
    last = (
        Backup.objects.filter(schedule=schedule, status=BackupStatus.SUCCESS)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    latest = (
        Backup.objects.filter(schedule=schedule)
        .exclude(status=BackupStatus.SUCCESS)
        .order_by("-created_at")
        .first()
    )
    local = slot.astimezone(ZoneInfo(schedule.timezone))
    text = (
        f"Schedule {schedule.name} ({schedule.cron_expression} {schedule.timezone}) should have backed up "
        f"{schedule.target.name} at {local:%Y-%m-%d %H:%M %Z}, and no backup has succeeded within "
        f"{grace_for(schedule)}. Last success: {f'{last:%Y-%m-%d %H:%M %Z}' if last else 'never'}."
    )
    if latest is not None:
        text += (
            f" Latest attempt: {latest.status}{f' ({latest.error_message})' if latest.error_message else ''}."
        )
    _alert_missed(schedule, text, local)
    return True


def note_skipped(schedule: BackupSchedule, skipped: list[datetime], slot: datetime) -> bool:
    """Alert "missed" for run times no firing claimed, found when a later firing claims ``slot``
    (the watch alone would take the later run's success for theirs). Once per outage, as the
    watch's alert; the run about to start clears it when it succeeds. True when it alerted."""
    if not _open_episode(schedule, skipped[0]):
        return False
    tz = ZoneInfo(schedule.timezone)
    first, now = skipped[0].astimezone(tz), slot.astimezone(tz)
    more = f" and {len(skipped) - 1} later run time(s)" if len(skipped) > 1 else ""
    if len(skipped) >= SKIPPED_COUNTED:
        more = f" and {len(skipped) - 1} or more later run times"
    text = (
        f"Schedule {schedule.name} ({schedule.cron_expression} {schedule.timezone}) did not back up "
        f"{schedule.target.name} at {first:%Y-%m-%d %H:%M %Z}{more}: no firing of it reached a "
        "worker in time. Either the workers are behind (firings wait in the queue longer than "
        "the schedule's interval: add workers or space the schedules out), or the firing was "
        "lost (a broker restarted without persistence, beat or every worker down), or the clock "
        f"jumped forward. It backs up now, for its run time {now:%Y-%m-%d %H:%M %Z}."
    )
    _alert_missed(schedule, text, first)
    return True


def record_skipped(schedule: BackupSchedule, skipped: list[datetime], slot: datetime) -> None:
    """One SKIPPED row per run time no firing ran, with its cause, so the catalog accounts for
    every run time (the last of SKIPPED_COUNTED rows also stands for any later ones)."""
    tz = ZoneInfo(schedule.timezone)
    now = timezone.now()
    target = schedule.target
    due = slot.astimezone(tz)
    rows = []
    for number, run in enumerate(skipped, 1):
        local = run.astimezone(tz)
        note = (
            f"skipped: run time {local:%Y-%m-%d %H:%M %Z} of schedule {schedule.name} never ran: no firing "
            "of it reached a worker in time (workers behind, a firing lost, or the clock jumped); the "
            f"run of {due:%Y-%m-%d %H:%M %Z} ran instead"
        )
        if number == SKIPPED_COUNTED:
            note += f"; so did every later run time before {due:%Y-%m-%d %H:%M %Z}, not listed one by one"
        rows.append(
            Backup(
                target=target,
                schedule=schedule,
                backup_type=schedule.backup_type,
                backup_name=f"{target.name}-{schedule.backup_type}-{run:%Y%m%dT%H%M%SZ}",
                status=BackupStatus.SKIPPED,
                compression=schedule.compression or target.compression,
                initiated_by=f"schedule:{schedule.name}",
                completed_at=now,
                notes=note,
            )
        )
    Backup.objects.bulk_create(rows, batch_size=200)


def note_recovery(schedule: BackupSchedule, backup: Backup | None = None) -> int:
    """Clear a missed alert once a backup of the schedule succeeded, unless the schedule is
    ``behind`` (its latest firing skipped run times: a late success is no recovery, and would
    make a backlog alert missed and recovered at every run); 1 when it was cleared."""
    missed_since = schedule.missed_since
    if (
        missed_since is None
        or schedule.behind
        or not BackupSchedule.objects.filter(pk=schedule.pk, missed_since__isnull=False, behind=False).update(
            missed_since=None, missed_alert_due=None
        )
    ):
        return 0
    schedule.missed_since = schedule.missed_alert_due = None
    _notify(
        "recovered",
        subject=f"Backups resumed: {schedule.target.name} ({schedule.name})",
        text=f"Schedule {schedule.name} backed up {schedule.target.name} successfully again; "
        f"it had missed its run due at {missed_since:%Y-%m-%d %H:%M %Z}.",
        fields={"schedule": schedule.name, "target": schedule.target.name},
        backup=backup,
        schedule=info_for(schedule),
        target=schedule.target,
    )
    return 1


def check_shrinkage(backup: Backup) -> bool:
    """Flag a scheduled SUCCESS whose raw size is below BACKUPSITE_SHRINK_PERCENT of the same
    schedule's previous SUCCESS: an ``anomaly`` step on the backup, a note, and an alert.
    The backup stays SUCCESS (its file is fine); a human decides whether the data is."""
    if backup.status != BackupStatus.SUCCESS or backup.schedule_id is None or not backup.raw_size:
        return False
    previous = (
        Backup.objects.filter(schedule_id=backup.schedule_id, status=BackupStatus.SUCCESS, raw_size__gt=0)
        .exclude(pk=backup.pk)
        .filter(started_at__lt=backup.started_at)
        .order_by("-started_at")
        .first()
    )
    if previous is None or previous.raw_size is None:
        return False
    limit = settings.BACKUPSITE_SHRINK_PERCENT
    if backup.raw_size * 100 >= previous.raw_size * limit:
        return False
    percent = backup.raw_size * 100 / previous.raw_size
    message = (
        f"raw size {human_bytes(backup.raw_size)} is {percent:.0f}% of the previous successful backup "
        f"{previous.pk} ({human_bytes(previous.raw_size)}); below the {limit}% threshold. Check that no "
        "table, schema or directory went missing."
    )
    now = timezone.now()
    BackupStep.objects.create(
        backup=backup,
        name="anomaly",
        status=StepStatus.FAILED,
        started_at=now,
        completed_at=now,
        message=message,
    )
    backup.notes = f"{backup.notes}\nanomaly: {message}".strip()
    backup.save(update_fields=["notes"])
    logger.warning("backup %s of target %s: anomaly: %s", backup.pk, backup.target.name, message)
    _notify(
        "anomaly",
        subject=f"Suspiciously small backup: {backup.target.name}",
        text=f"Backup {backup.pk} ({backup.backup_name}): {message}",
        fields={
            "backup": str(backup.pk),
            "raw_size": str(backup.raw_size),
            "previous": str(previous.raw_size),
        },
        backup=backup,
        target=backup.target,
    )
    return True
