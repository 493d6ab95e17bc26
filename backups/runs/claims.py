"""Who runs a backup: a run is claimed (PENDING -> RUNNING) with a conditional update, so one
target never has two backups running; runs whose worker died are recognised on this host by
the process being gone, on any host by a heartbeat gone silent, marked FAILED "worker lost" and
their partial uploads swept."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from backups import secrets
from backups.models import Backup, BackupStatus, BackupStep, CopyStatus, StepStatus, Target
from backups.notifications import notify_backup
from backups.processes import process_gone, this_worker
from backups.resources import storage_for
from backups.storages import StorageError

logger = logging.getLogger(__name__)


def claim(backup: Backup) -> bool:
    """PENDING -> RUNNING, or SKIPPED when the target already has a running backup (after
    reaping a run of it whose worker is gone)."""
    claimed = _try_claim(backup) or (bool(reap_lost_runs(backup.target)) and _try_claim(backup))
    if not claimed:
        skipped = {
            "status": BackupStatus.SKIPPED,
            "completed_at": timezone.now(),
            "notes": "skipped: another backup of this target is already running",
        }
        Backup.objects.filter(pk=backup.pk).update(**skipped)
        _set(backup, skipped)
    return claimed


def _try_claim(backup: Backup) -> bool:
    """The conditional update; on success the row's new values are set on ``backup`` too (no
    re-read: the run's row is ours from here, and a re-read would also drop its cached target)."""
    now = timezone.now()
    running = {
        "status": BackupStatus.RUNNING,
        "started_at": now,
        "heartbeat_at": now,
        "worker": this_worker(),
    }
    try:
        with transaction.atomic():
            claimed = bool(Backup.objects.filter(pk=backup.pk, status=BackupStatus.PENDING).update(**running))
    except IntegrityError:
        return False
    if claimed:
        _set(backup, running)
    return claimed


def _set(backup: Backup, fields: dict[str, object]) -> None:
    for name, value in fields.items():
        setattr(backup, name, value)


def _silent_since(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS)


def reap_lost_runs(target: Target, now: datetime | None = None) -> list[Backup]:
    """Reap ``target``'s RUNNING backups whose process is gone or whose heartbeat is stale."""
    return _reap(Backup.objects.filter(target=target), now or timezone.now())


def reap_stale_runs(now: datetime | None = None) -> list[Backup]:
    """Reap lost runs of every target (the periodic watch), and end the steps left RUNNING on
    finished backups by a process that died (a killed cleanup's ``cleanup`` step)."""
    now = now or timezone.now()
    lost = _reap(Backup.objects.all(), now) + _end_unclaimed(now)
    orphans = BackupStep.objects.filter(status=StepStatus.RUNNING, started_at__lt=_silent_since(now)).exclude(
        backup__status=BackupStatus.RUNNING
    )
    ended = orphans.update(
        status=StepStatus.FAILED,
        message="interrupted: the process doing it stopped before it finished (the next run of it redoes it)",
        completed_at=now,
    )
    if ended:
        logger.warning("ended %s step(s) left running by a lost process", ended)
    return lost


def _reap(backups: QuerySet[Backup], now: datetime) -> list[Backup]:
    running = backups.filter(status=BackupStatus.RUNNING).select_related("target")
    stale = Q(beat__lt=_silent_since(now))
    silent = set(
        running.annotate(beat=Coalesce("heartbeat_at", "started_at", "created_at"))
        .filter(stale)
        .values_list("pk", flat=True)
    )
    lost = []
    for backup in running:
        if backup.pk in silent:
            last = backup.heartbeat_at or backup.started_at or backup.created_at
            reason = f"worker lost: no heartbeat from {backup.worker or 'its worker'} since {last:%Y-%m-%d %H:%M:%S %Z}"
        elif backup.worker and process_gone(backup.worker):
            reason = f"worker lost: process {backup.worker} ended without finishing the backup"
        else:
            continue
        if _lose(backup, reason, now):
            lost.append(backup)
    return lost


def _end_unclaimed(now: datetime) -> list[Backup]:
    """End FAILED the queued runs (``queue_backup``) no worker took within
    BACKUPSITE_QUEUED_STALE_HOURS: nobody is coming for them, and the person who asked must
    hear it (the failure alert goes out through the outbox, ``alert_pending``)."""
    hours = settings.BACKUPSITE_QUEUED_STALE_HOURS
    ended = []
    for backup in Backup.objects.filter(
        status=BackupStatus.PENDING, created_at__lt=now - timedelta(hours=hours)
    ).select_related("target"):
        reason = (
            f"never started: no worker took it within {hours} h of {backup.created_at:%Y-%m-%d %H:%M %Z}; "
            f"check that a worker consumes the queue of target {backup.target.name}"
        )
        fields = {"error_message": reason, **backup.closing_fields(BackupStatus.FAILED, now)}
        if Backup.objects.filter(pk=backup.pk, status=BackupStatus.PENDING).update(**fields):
            _set(backup, fields)
            logger.warning("backup %s of target %s: %s", backup.pk, backup.target.name, reason)
            ended.append(backup)
    return ended


def _lose(backup: Backup, reason: str, now: datetime) -> bool:
    """Mark ``backup`` FAILED with ``reason`` unless it finished meanwhile; sweep its partials."""
    if not Backup.objects.filter(pk=backup.pk, status=BackupStatus.RUNNING).update(
        error_message=reason, **backup.closing_fields(BackupStatus.FAILED, now)
    ):
        return False
    backup.refresh_from_db()
    logger.warning("backup %s of target %s: %s", backup.pk, backup.target.name, reason)
    BackupStep.objects.filter(backup=backup, status=StepStatus.RUNNING).update(
        status=StepStatus.FAILED, message=reason, completed_at=now
    )
    for copy in backup.copies.select_related("storage"):
        try:
            with storage_for(copy.storage) as storage:
                if copy.path:  # no path yet: nothing was written under a known name
                    storage.sweep_partials(copy.path)
                if copy.path and copy.status != CopyStatus.DELETED:
                    # Committed before the worker died (while confirming, or writing its
                    # manifest): a failed run leaves nothing that looks like a backup. The data
                    # first, then the manifest, as cleanup does.
                    storage.delete(copy.path)
                    storage.delete(copy.manifest_path)
        except (StorageError, secrets.SecretError) as exc:
            logger.warning("could not remove the files of lost backup %s: %s", backup.pk, exc)
        if copy.status != CopyStatus.DELETED:
            copy.status = CopyStatus.FAILED
            copy.save(update_fields=["status"])
    notify_backup(backup)
    return True
