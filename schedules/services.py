"""Schedules drive Celery beat: each BackupSchedule owns exactly one django-celery-beat
PeriodicTask (``backup-schedule:<pk>``), and a firing runs the schedule's backup at most once
per cron slot, however often beat or the broker deliver it."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import DateTimeField, Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from backups import services as backup_services
from backups.models import Backup, BackupStatus, Target

from . import drills, monitoring
from .cron import crontab_row, next_runs, parse_cron
from .models import BackupSchedule, VerifyMode
from .requests import info_for

logger = logging.getLogger(__name__)

TASK = "schedules.tasks.run_schedule"
PREFIX = "backup-schedule:"


def periodic_task_name(schedule_id: int) -> str:
    return f"{PREFIX}{schedule_id}"


def sync_periodic_task(schedule: BackupSchedule) -> PeriodicTask:
    """Create or update the schedule's PeriodicTask: its crontab in the schedule's timezone,
    kwargs holding only the schedule id, enabled while the schedule and its target are active.
    Also refreshes ``next_run_at``. Saving the PeriodicTask model tells beat it changed."""
    cron = parse_cron(schedule.cron_expression)
    crontab = crontab_row(cron, schedule.timezone)
    # The target's flag as stored now: a cached related object may be stale.
    target_active = Target.objects.filter(pk=schedule.target_id, is_active=True).exists()
    enabled = schedule.is_active and target_active
    task, _ = PeriodicTask.objects.update_or_create(
        name=periodic_task_name(schedule.pk),
        defaults={
            "task": TASK,
            "crontab": crontab,
            "interval": None,
            "kwargs": json.dumps({"schedule_id": schedule.pk}),
            # Beat sends the firing to the target's queue. Celery derives the exchange and
            # routing key from the queue's name; any left by an edit in the admin are cleared,
            # or they would send the firing elsewhere.
            "queue": backup_services.queue_for(schedule.target),
            "exchange": None,
            "routing_key": None,
            "enabled": enabled,
            "description": f"Backup of {schedule.target.name} ({schedule.name}, {schedule.cron_expression} "
            f"{schedule.timezone})",
        },
    )
    upcoming = next_runs(schedule.cron_expression, schedule.timezone, timezone.now(), 1) if enabled else []
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=upcoming[0] if upcoming else None)
    return task


def route_schedules_of(target: Target) -> int:
    """Point the PeriodicTasks of ``target``'s schedules at its queue (after the target was
    saved: its queue may have changed), in one update; beat is told when any changed. Returns
    how many changed."""
    names = [
        periodic_task_name(pk)
        for pk in BackupSchedule.objects.filter(target_id=target.pk).values_list("pk", flat=True)
    ]
    queue = backup_services.queue_for(target)
    changed = (
        PeriodicTask.objects.filter(name__in=names)
        .exclude(queue=queue, exchange__isnull=True, routing_key__isnull=True)
        .update(queue=queue, exchange=None, routing_key=None)
    )
    if changed:
        PeriodicTasks.update_changed()  # a bulk update sends no signal: tell beat ourselves
    return changed


def backup_queue(backup_id: int) -> str:
    """The queue of work on backup ``backup_id`` (its target's; the default one when the backup
    is gone, where the task finds nothing to do)."""
    backup = Backup.objects.select_related("target").filter(pk=backup_id).first()
    return backup_services.queue_for(backup.target) if backup else backup_services.DEFAULT_QUEUE


def remove_periodic_task(schedule_id: int) -> None:
    PeriodicTask.objects.filter(name=periodic_task_name(schedule_id)).delete()


def sync_all_periodic_tasks() -> dict[str, int]:
    """Reconcile beat with the schedules: sync every schedule's task and delete tasks whose
    schedule is gone (e.g. deleted from a shell); the targets' drill tasks too. Returns counts
    of the schedules' tasks."""
    schedules = list(BackupSchedule.objects.select_related("target"))
    for schedule in schedules:
        sync_periodic_task(schedule)
    wanted = {periodic_task_name(s.pk) for s in schedules}
    orphans = PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=wanted)
    removed, _ = orphans.delete()
    drills.sync_all_drill_tasks()
    return {"synced": len(schedules), "removed": removed}


def claim_slot(schedule: BackupSchedule, now: datetime) -> datetime | None:
    """Claim the cron slot ``now`` belongs to (the latest run time at or before it) with a
    conditional update; None when another delivery already claimed it. A stale delivery (a
    backlog, a redelivered message) so claims the current slot, never a past one: however many
    wait, one run. Run times between the slot claimed before and this one that no delivery
    claimed are recorded SKIPPED, one row each, and reported "missed" (monitoring.note_skipped);
    the schedule is marked ``behind`` until a firing claims its slot skipping none."""
    tz = ZoneInfo(schedule.timezone)
    cron = parse_cron(schedule.cron_expression)
    slot = cron.previous_run(now, tz)
    if slot is None:
        return None
    upcoming = next(cron.runs_after(now, tz), None)
    following = next(cron.runs_after(slot, tz), None)
    with transaction.atomic():
        claimed = (
            BackupSchedule.objects.filter(pk=schedule.pk)
            .filter(_free(slot, following))
            .update(
                last_run_at=now,
                next_run_at=upcoming,
                latest_slot=Greatest(
                    Coalesce(F("latest_slot"), Value(slot, DateTimeField())), Value(slot, DateTimeField())
                ),
            )
        )
    if not claimed:
        return None
    skipped = skipped_slots(schedule, slot)
    if skipped or schedule.behind:
        BackupSchedule.objects.filter(pk=schedule.pk).update(behind=bool(skipped))
        schedule.behind = bool(skipped)
    if skipped:
        monitoring.record_skipped(schedule, skipped, slot)
        monitoring.note_skipped(schedule, skipped, slot)
    return slot


def _free(slot: datetime, following: datetime | None) -> Q:
    """Whether ``slot`` may be claimed, as one condition of the conditional update (so two
    deliveries racing for it cannot both win): a slot after the latest ever claimed; or, when the
    clock went back (or ran ahead and came back), an earlier slot that no delivery claimed last
    and in which no backup of the schedule was made. A slot that ran never runs again, whatever
    the clock says; one that never ran still runs, so backups go on while a clock is wrong."""
    in_slot = Q(last_run_at__gte=slot) & (Q(last_run_at__lt=following) if following else Q())
    made = Backup.objects.filter(schedule_id=OuterRef("pk"), created_at__gte=slot)
    if following is not None:
        made = made.filter(created_at__lt=following)
    before_this_field = Q(latest_slot__isnull=True) & (Q(last_run_at__isnull=True) | Q(last_run_at__lt=slot))
    regressed = Q(latest_slot__gt=slot) & ~in_slot & ~Q(Exists(made))
    return before_this_field | Q(latest_slot__lt=slot) | regressed


def skipped_slots(
    schedule: BackupSchedule, slot: datetime, limit: int = monitoring.SKIPPED_COUNTED
) -> list[datetime]:
    """The run times before ``slot`` that no delivery claimed (at most ``limit``): those after the
    slot claimed before, or after the schedule or its target last changed (a new, edited or
    resumed schedule owes nothing for the time before). Their firings were lost by the broker
    or never came (beat or every worker down)."""
    moments = (schedule.latest_slot, schedule.last_run_at, schedule.updated_at, schedule.target.updated_at)
    since = max(moment for moment in moments if moment is not None)
    skipped: list[datetime] = []
    for run in parse_cron(schedule.cron_expression).runs_after(since, ZoneInfo(schedule.timezone)):
        if run >= slot or len(skipped) == limit:
            break
        skipped.append(run)
    return skipped


def run_schedule(schedule_id: int, now: datetime | None = None) -> Backup | None:
    """Run one firing of a schedule: claim its slot, back up the target, then apply retention to
    this schedule's backups. Returns the Backup (SUCCESS, FAILED or SKIPPED "already running"),
    or None when there is nothing to do (schedule gone or inactive, slot already claimed)."""
    now = now or timezone.now()
    schedule = BackupSchedule.objects.select_related("target").filter(pk=schedule_id).first()
    if schedule is None:
        logger.warning("schedule %s no longer exists; its task fired anyway", schedule_id)
        return None
    if not (schedule.is_active and schedule.target.is_active):
        logger.info("schedule %s (target %s) is inactive; nothing to do", schedule.name, schedule.target.name)
        return None
    slot = claim_slot(schedule, now)
    if slot is None:
        logger.info("schedule %s: this slot already ran; duplicate delivery ignored", schedule.name)
        return None
    storages = list(schedule.storages.all()) or None
    backup = backup_services.run_backup(
        schedule.target,
        backup_type=schedule.backup_type,
        storages=storages,
        compression=schedule.compression,
        schedule=info_for(schedule),
        retention_days=schedule.retention_days,
        initiated_by=f"schedule:{schedule.name}",
    )
    logger.info(
        "schedule %s slot %s: backup %s of target %s is %s",
        schedule.name, slot.isoformat(), backup.pk, schedule.target.name, backup.status,
    )  # fmt: skip
    if backup.status == BackupStatus.SUCCESS:
        monitoring.check_shrinkage(backup)
        monitoring.note_recovery(schedule, backup)
        if schedule.verify == VerifyMode.AFTER_BACKUP:
            verify_scheduled(backup.pk)
        plan = backup_services.cleanup_target(schedule.target, schedule_ids={schedule.pk})
        for problem in [*plan.errors, *([plan.refused] if plan.refused else [])]:
            logger.warning("schedule %s: retention after backup %s: %s", schedule.name, backup.pk, problem)
    return backup


def watch(now: datetime | None = None) -> dict[str, int]:
    """The periodic watch: reap RUNNING backups whose worker died (process gone or heartbeat
    silent), so they are FAILED "worker lost" and their files removed, and the other apps' lost
    work (restores) and drills; send the alerts whose sender stopped before sending them; then alert on
    schedules whose due run has not succeeded (and on their recovery)."""
    lost = backup_services.reap_stale_runs(now)
    restores = backup_services.reap_lost_work(now)
    lost_drills = backup_services.reap_lost_drills()  # and their scratch copies dropped
    outbox = backup_services.send_unsent(now)
    return {
        "lost": len(lost),
        "lost_restores": restores,
        "lost_drills": lost_drills,
        "alerts_resent": outbox.resent + outbox.alerted,
        **monitoring.check_missed(now),
    }


def due_verifications(now: datetime | None = None) -> list[int]:
    """Backups to verify now for schedules with ``verify = "daily"``: each schedule's newest live
    SUCCESS backup, when it is unverified and the schedule started no verification in the last
    day. Claimed with a conditional update, so a slow verification is not queued twice."""
    now = now or timezone.now()
    day_ago = now - timedelta(days=1)
    due = []
    schedules = BackupSchedule.objects.filter(verify=VerifyMode.DAILY, is_active=True, target__is_active=True)
    for schedule in schedules:
        newest = (
            Backup.objects.filter(schedule=schedule, status=BackupStatus.SUCCESS, deleted_at__isnull=True)
            .order_by("-started_at", "-pk")
            .first()
        )
        if newest is None or newest.verified:
            continue
        claimed = (
            BackupSchedule.objects.filter(pk=schedule.pk)
            .filter(Q(last_verify_at__isnull=True) | Q(last_verify_at__lt=day_ago))
            .update(last_verify_at=now)
        )
        if claimed:
            due.append(newest.pk)
    return due


def verify_scheduled(backup_id: int) -> bool | None:
    """Deep-verify a scheduled backup (the target's sandbox when it has one, else the engine's
    trial restore). The outcome is recorded on the backup (verified, or CORRUPT) and its steps;
    returns whether it passed, None when it could not run (e.g. deleted meanwhile)."""
    backup = Backup.objects.select_related("target").filter(pk=backup_id).first()
    if backup is None:
        return None
    try:
        outcome = backup_services.verify_backup(backup, deep=True)
    except backup_services.ServiceError as exc:
        logger.warning("verification of backup %s skipped: %s", backup_id, exc)
        return None
    return outcome.ok
