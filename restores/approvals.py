"""Four-eyes restores: a restore into a *protected* target is asked for by one person and carried
out only after a second person (a Restorer or an Administrator who is not the requester)
approves it, before the request expires.

States on the RestoreLog row: AWAITING (asked for; nothing queued) -> RUNNING (approved: queued
as any confirmed restore, then carried out by ``run_restore``) | REJECTED | EXPIRED. Each
transition is a conditional update of the AWAITING row, so two approvers (or an approval racing
the expiry) cannot both win.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from backups import services as backup_services
from backups.models import Backup, Target
from backups.services import AwaitingDecision

from .models import RestoreLog, RestoreStatus
from .refusals import RestoreRefused, check_restorable, confirmation_word

logger = logging.getLogger(__name__)

REASON_MAX = 2000


def needs_approval(destination: Target) -> bool:
    return bool(destination.protected)


def request_approval(
    backup: Backup, destination: Target, *, typed: str, by: str, reason: str, now: datetime | None = None
) -> RestoreLog:
    """Record a request to restore ``backup`` into the protected ``destination``: confirmed by
    typing :func:`confirmation_word`, with a reason. Nothing is queued; the target's channels are
    told someone must decide. Raises :class:`RestoreRefused`, recording nothing."""
    word, _what = confirmation_word(destination)
    if typed.strip() != word:
        raise RestoreRefused(f"type {word} exactly to confirm; nothing was requested")
    reason = reason.strip()
    if not reason:
        raise RestoreRefused(
            f"reason: {destination.name} is protected; say why it must be restored, for the approver"
        )
    if len(reason) > REASON_MAX:
        raise RestoreRefused(f"reason: at most {REASON_MAX} characters (it has {len(reason)})")
    check_restorable(backup, destination)
    now = now or timezone.now()
    log = RestoreLog.objects.create(
        backup=backup,
        destination=destination,
        restore_type=backup.backup_type,
        status=RestoreStatus.AWAITING,
        initiated_by=by,
        reason=reason,
        expires_at=now + timedelta(hours=settings.BACKUPSITE_RESTORE_APPROVAL_HOURS),
    )
    logger.info(
        "restore %s of backup %s into protected %s requested by %s", log.pk, backup.pk, destination.name, by
    )
    _notify_requested(log)
    return log


def approve(log_id: int, *, by: str, note: str = "", now: datetime | None = None) -> RestoreLog:
    """Approve request ``log_id`` as ``by``: it becomes a queued restore (the caller queues
    ``run_restore``). Refused (:class:`RestoreRefused`, nothing changed) for the requester
    themself, a request already decided, or one past its expiry (then marked EXPIRED)."""
    log = _awaiting(log_id, by, now)
    assert log.destination is not None  # requests always name their destination
    check_restorable(log.backup, log.destination)
    decided = _decide(log, RestoreStatus.RUNNING, by, note, now)
    decided.confirmed_by = by
    decided.save(update_fields=["confirmed_by"])
    logger.info("restore %s approved by %s", log.pk, by)
    return decided


def reject(log_id: int, *, by: str, note: str = "", now: datetime | None = None) -> RestoreLog:
    """Reject request ``log_id`` as ``by`` (the requester may withdraw their own)."""
    log = _awaiting(log_id, by, now, requester_may=True)
    decided = _decide(log, RestoreStatus.REJECTED, by, note, now)
    logger.info("restore %s rejected by %s", log.pk, by)
    return decided


def expire_requests(now: datetime | None = None) -> int:
    """Mark every request past its expiry EXPIRED; returns how many."""
    now = now or timezone.now()
    expired = 0
    for log in RestoreLog.objects.filter(status=RestoreStatus.AWAITING, expires_at__lte=now):
        # One at a time, each a conditional update: a decision racing the expiry wins or loses whole.
        if RestoreLog.objects.filter(pk=log.pk, status=RestoreStatus.AWAITING).update(
            status=RestoreStatus.EXPIRED, completed_at=now
        ):
            expired += 1
            backup_services.record_audit(
                "restore.expire",
                obj=log,
                outcome="failure",
                auth_method="system",
                username="system",
                details={
                    "requested_by": log.initiated_by,
                    "expired_at": f"{log.expires_at:%Y-%m-%d %H:%M %Z}",
                },
            )
    return expired


def awaiting(now: datetime | None = None) -> list[RestoreLog]:
    """The requests still awaiting a decision, oldest first. A read: requests past their expiry
    are left out here and marked EXPIRED by the watch (``expire_requests``), never by a page."""
    now = now or timezone.now()
    rows = (
        RestoreLog.objects.filter(status=RestoreStatus.AWAITING)
        .exclude(expires_at__lte=now)
        .select_related("backup__target", "destination")
    )
    return list(rows.order_by("created_at", "id"))


def awaiting_decisions() -> list[AwaitingDecision]:
    """The requests awaiting a decision, for the dashboard (which asks who may decide)."""
    return [
        AwaitingDecision(
            pk=log.pk,
            label=f"restore of backup {log.backup_id} into {log.destination.name if log.destination else '?'}, "
            f"asked by {log.initiated_by}: {log.reason[:120]}",
            target_id=log.destination_id or 0,
            expires_at=log.expires_at,
            url=reverse("restores:decide", args=[log.pk]),
        )
        for log in awaiting()
    ]


def _awaiting(log_id: int, by: str, now: datetime | None, requester_may: bool = False) -> RestoreLog:
    now = now or timezone.now()
    log = RestoreLog.objects.select_related("backup__target", "destination").filter(pk=log_id).first()
    if log is None:
        raise RestoreRefused(f"there is no restore request {log_id}")
    if log.status == RestoreStatus.AWAITING and log.expires_at is not None and log.expires_at <= now:
        expire_requests(now)
        raise RestoreRefused(
            f"restore request {log_id} expired at {log.expires_at:%Y-%m-%d %H:%M %Z} unapproved; ask again"
        )
    if log.status != RestoreStatus.AWAITING:
        raise RestoreRefused(
            f"restore request {log_id} is {log.get_status_display().lower()}, not awaiting a decision"
        )
    if not requester_may and _same_person(log.initiated_by, by):
        raise RestoreRefused(
            f"you asked for restore {log_id}; another Restorer or an Administrator must approve it"
        )
    return log


def is_requester(log: RestoreLog, by: str) -> bool:
    return _same_person(log.initiated_by, by)


def _same_person(requester: str, decider: str) -> bool:
    """``web:alice`` and ``cli:alice`` are one person: compare the names after the channel."""
    return requester.partition(":")[2].casefold() == decider.partition(":")[2].casefold()


def _decide(log: RestoreLog, status: str, by: str, note: str, now: datetime | None) -> RestoreLog:
    now = now or timezone.now()
    fields = {
        "status": status,
        "decided_by": by,
        "decided_at": now,
        "decision_note": note.strip()[:REASON_MAX],
    }
    if status != RestoreStatus.RUNNING:
        fields["completed_at"] = now
    won = RestoreLog.objects.filter(pk=log.pk, status=RestoreStatus.AWAITING).update(**fields)
    if not won:
        raise RestoreRefused(f"restore request {log.pk} was decided by someone else just now")
    log.refresh_from_db()
    return log


def _notify_requested(log: RestoreLog) -> None:
    """``restore_requested`` through the destination's channels; a problem never loses the row."""
    backup, destination = log.backup, log.destination
    assert destination is not None
    url = reverse("restores:decide", args=[log.pk])
    try:
        backup_services.notify(
            backup_services.RESTORE_REQUESTED,
            subject=f"Approval needed: restore backup {backup.pk} into protected {destination.name}",
            text=f"{log.initiated_by} asks to restore backup {backup.pk} of {backup.target.name} into "
            f"{destination.name}: {log.reason}. Approve or reject it at {url} before "
            f"{log.expires_at:%Y-%m-%d %H:%M %Z}.",
            fields={
                "request": str(log.pk),
                "backup": f"{backup.pk} ({backup.backup_name})",
                "destination": destination.name,
                "requested by": log.initiated_by,
                "reason": log.reason[:1000],
                "decide at": url,
            },
            backup=backup,
            target=destination,
        )
    except Exception:
        logger.exception("restore request %s: notifications failed", log.pk)
