"""Celery tasks: ids in, one service call, nothing else."""

from __future__ import annotations

import logging

from django.utils import timezone

from backupsite.celery import app

from . import services
from .models import Backup, BackupStatus, Target

logger = logging.getLogger(__name__)


# Bound to the project's app explicitly (not shared_task): a web process that queues a task
# must use our broker settings, and the app is no longer imported at every start-up.
@app.task(acks_late=True)
def run_target_backup(
    target_id: int, backup_type: str = "full", initiated_by: str = "task", backup_id: int | None = None
) -> int | None:
    """Back up one target, in the row ``backup_id`` queued for it (``services.queue_backup``) if
    given; returns the Backup id (its row records the outcome), or None when the person who asked
    may no longer run it (audited; a queued row is ended SKIPPED saying so)."""
    target = Target.objects.get(pk=target_id)
    queued = Backup.objects.get(pk=backup_id, target=target) if backup_id is not None else None
    if not services.initiator_may(initiated_by, "run", target):
        _refused("backup.run", target, initiated_by)
        if queued is not None:
            skipped = queued.closing_fields(BackupStatus.SKIPPED, timezone.now())
            Backup.objects.filter(pk=queued.pk, status=BackupStatus.PENDING).update(
                notes=f"not run: {initiated_by} may no longer run backups of {target.name}", **skipped
            )
        return None
    try:
        return services.run_backup(
            target, backup_type=backup_type, initiated_by=initiated_by, queued=queued
        ).pk
    except services.ServiceError as exc:
        # Refused before a row was written (an external target: another tool backs it up); a
        # queued request has no one to tell but the log, and retrying would not change the answer.
        logger.warning("backup of %s asked by %s refused: %s", target.name, initiated_by, exc)
        return None


def _refused(action: str, obj: Target | Backup, initiated_by: str) -> None:
    logger.warning("%s of %s asked by %s refused: the permission was withdrawn", action, obj, initiated_by)
    services.record_audit(
        action,
        obj=obj,
        outcome="refused",
        auth_method="system",
        username=initiated_by,
        details={
            "initiated_by": initiated_by,
            "reason": "the permission was withdrawn before a worker took it",
        },
    )


@app.task(acks_late=True)
def verify_backup_task(backup_id: int, deep: bool = False, initiated_by: str = "task") -> bool:
    """Verify one backup (its verify step and verified state record the outcome); returns
    whether every copy read back intact."""
    backup = Backup.objects.select_related("target").get(pk=backup_id)
    if not services.initiator_may(initiated_by, "verify", backup.target):
        _refused("backup.verify", backup, initiated_by)
        return False
    logger.info("verify of backup %s (%s, deep=%s) asked by %s", backup.pk, backup.target, deep, initiated_by)
    try:
        return services.verify_backup(backup, deep=deep).ok
    except services.ServiceError as exc:
        # Refused before any step was recorded (deleted, never succeeded, no copy): a queued
        # request has no one to tell but the log, and retrying would not change the answer.
        logger.warning("verify of backup %s asked by %s refused: %s", backup.pk, initiated_by, exc)
        return False


@app.task(ignore_result=True)
def sweep_leftovers() -> None:
    """Every 6 hours (beat, on the watch queue): remove upload leftovers older than a day from
    every storage. Without it, what a worker killed mid-upload left (an open multipart upload,
    a temporary file) stays until someone runs ``backup_cleanup``; no row records a sweep, so
    what it removed and what failed go to the log."""
    removed, errors = services.sweep_storages()
    for line in removed:
        logger.info("sweep of upload leftovers: %s", line)
    for error in errors:
        logger.error("sweep of upload leftovers: %s", error)


@app.task(acks_late=True)
def drill_target(target_id: int) -> int | None:
    """A scheduled restore drill of one target (beat's ``target-drill:<pk>``); returns the Drill
    id (its row records the outcome), or None when nothing was drilled: the target is gone,
    inactive or has no drill any more (a firing queued before the change), or the drill was
    refused before it started (no backup to drill, the sandbox busy), each logged."""
    target = Target.objects.filter(pk=target_id).first()
    if target is None or not target.is_active or not target.drill:
        logger.warning(
            "scheduled drill of target %s skipped: the target is gone, inactive or has no drill", target_id
        )
        return None
    try:
        return services.run_drill(target, trigger="schedule", initiated_by="schedule").pk
    except services.ServiceError as exc:
        logger.error("scheduled drill of target %s not run: %s", target.name, exc)
        return None


@app.task(ignore_result=True)
def watch_external_targets() -> None:
    """Every few minutes (beat, on the watch queue): queue one scan per active external target,
    each on its target's queue, since a scan reads every new file whole (its SHA-256)."""
    for target_id, queue in services.external_targets():
        scan_external_target.apply_async((target_id,), queue=queue)


@app.task(acks_late=True, ignore_result=True)
def scan_external_target(target_id: int) -> None:
    """Scan one external target: adopt new files, alert on late or shrunken ones, apply its
    retention. The outcome is on its watch row (ExternalWatch); a scan already running for the
    target makes this one a no-op, so a backlog of firings does the work once."""
    target = Target.objects.filter(pk=target_id).first()
    if target is None:
        logger.warning("scan of external target %s skipped: the target is gone", target_id)
        return
    report = services.scan_external_target(target)
    if report.problem:
        logger.error("scan of external target %s: %s", target.name, report.problem)
    elif report.adopted:
        logger.info("scan of external target %s adopted backups %s", target.name, report.adopted)
