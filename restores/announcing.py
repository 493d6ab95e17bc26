"""Saying that a restore ended: the ``restore.result`` audit event, then the ``restore_finished``
alert. A restore that ends sets ``announce_pending`` in the same save; :func:`announce` clears
it once both are recorded, so a process that died in between (SIGKILL) leaves the flag, and the
watch (:func:`announce_unannounced`, a registered reaper) announces it late, once."""

from __future__ import annotations

import logging
from datetime import datetime

from django.utils import timezone

from backups import services as backup_services
from backups.models import AuditEvent, Notification

from .models import RestoreLog, RestoreStatus

logger = logging.getLogger(__name__)

RESULT = "restore.result"


def into_of(log: RestoreLog) -> str:
    """What the restore went into, as the announcements name it."""
    return log.destination.name if log.destination else log.notes.removeprefix("into directory ")


def announce(log: RestoreLog, into: str, late: str = "") -> None:
    """A finished restore into ``into``: the audit event, then ``restore_finished``. ``late``:
    why it comes late (the watch; either record already made is not made again)."""
    if not (late and _audited(log)):
        backup_services.record_audit(
            RESULT,
            obj=log,
            outcome="success" if log.status == RestoreStatus.SUCCESS else "failure",
            auth_method="system",
            username=log.confirmed_by or log.initiated_by or "system",
            details={
                "backup": log.backup_id,
                "into": into,
                "status": log.status,
                "error": log.error_message[:500],
            },
        )
    if not (late and _alerted(log)):
        _notify_finished(log, into, late)
    RestoreLog.objects.filter(pk=log.pk).update(announce_pending=False)
    log.announce_pending = False


def announce_unannounced(now: datetime | None = None) -> int:
    """Announce the ended restores whose process stopped before announcing them; how many."""
    now = now or timezone.now()
    announced = 0
    ended = RestoreLog.objects.filter(announce_pending=True).exclude(status=RestoreStatus.RUNNING)
    for log in ended.select_related("backup__target", "destination").order_by("completed_at", "id"):
        when = log.completed_at or now
        if not backup_services.sender_stopped(log.worker, when, now):
            continue  # its process may be announcing it now
        logger.warning(
            "restore %s ended and was never announced (its process stopped): announcing it now", log.pk
        )
        announce(
            log,
            into_of(log),
            late=f"ended {when:%Y-%m-%d %H:%M:%S %Z}; the process that ran it stopped first",
        )
        announced += 1
    return announced


def _audited(log: RestoreLog) -> bool:
    return AuditEvent.objects.filter(
        action=RESULT, object_type="restores.restorelog", object_id=str(log.pk)
    ).exists()


def _alerted(log: RestoreLog) -> bool:
    since = log.completed_at or log.created_at
    return Notification.objects.filter(
        event=backup_services.RESTORE_FINISHED, backup_id=log.backup_id, created_at__gte=since
    ).exists()


def _notify_finished(log: RestoreLog, into: str, late: str = "") -> None:
    """``restore_finished``, success or failure; a notification problem never changes the log."""
    backup, destination = log.backup, log.destination
    outcome = "succeeded" if log.status == RestoreStatus.SUCCESS else "failed"
    fields = {
        "backup": f"{backup.pk} ({backup.backup_name})",
        "destination": into,
        "status": log.status,
        "tables": str(len(log.tables_restored)) if log.tables_restored else "",
        "error": log.error_message[:1000],
        "initiated by": log.initiated_by,
        "confirmed by": log.confirmed_by,
    }
    try:
        backup_services.notify(
            backup_services.RESTORE_FINISHED,
            subject=f"Restore {outcome}: backup {backup.pk} of {backup.target.name} into {into}",
            text=f"Restore {log.pk} of backup {backup.pk} into {into} {outcome}: "
            + (log.error_message or log.notes or "done"),
            fields={name: value for name, value in fields.items() if value},
            backup=backup,
            target=destination,
            late=late,
        )
    except Exception:
        logger.exception("restore %s: notifications failed", log.pk)
