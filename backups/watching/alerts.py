"""What the watch of an external target alerts about, through the same events and channels as
schedules (``missed``, ``recovered``, ``anomaly``): a file expected by ``expect`` that has not come
within the grace, a storage that cannot be listed, and a new file far smaller than the one before
(BACKUPSITE_SHRINK_PERCENT, the schedules' shrink rule). Each outage alerts once, opened with a
conditional update, and once more when it ends."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from backups.humanize import human_bytes
from backups.models import Backup, BackupStatus, BackupStep, ExternalWatch, StepStatus, Target
from backups.notifications import ANOMALY, MISSED, RECOVERED, notify

from .adoption import ADOPTED_BY
from .expect import due_slot
from .settings import WatchSettings

logger = logging.getLogger(__name__)


def _notify(event: str, **kwargs: Any) -> None:
    """An alert that cannot go out is logged, never raised: the scan goes on."""
    try:
        notify(event, **kwargs)
    except Exception:
        logger.exception("could not send the %s notification", event)


def grace_of(watch: WatchSettings) -> timedelta:
    return watch.grace or timedelta(minutes=settings.BACKUPSITE_MISSED_GRACE_MINUTES)


def check_expected(row: ExternalWatch, target: Target, watch: WatchSettings, now: datetime) -> str:
    """Alert "missed" once when the file due at the latest expected time (its grace passed) has
    not come, and "recovered" once a file dated at or after that time is adopted. Returns what
    was sent ("missed", "recovered" or ""). Raises expect.NoClock without a cron clock."""
    arrived = Backup.objects.filter(target=target, initiated_by=ADOPTED_BY, status=BackupStatus.SUCCESS)
    if row.missed_since is not None and (
        not watch.expect or arrived.filter(started_at__gte=row.missed_since, started_at__lte=now).exists()
    ):
        return RECOVERED if _close(row, target, "missed_since", _came(row.missed_since, target)) else ""
    if not watch.expect:
        return ""
    slot = due_slot(watch.expect, target.timezone, grace_of(watch), now, since=row.created_at)
    if slot is None or arrived.filter(started_at__gte=slot, started_at__lte=now).exists():
        return ""
    if not ExternalWatch.objects.filter(pk=row.pk, missed_since__isnull=True).update(missed_since=slot):
        return ""  # this outage was alerted already
    row.missed_since = slot
    local = slot.astimezone(ZoneInfo(target.timezone))
    last = arrived.order_by("-started_at").values_list("started_at", flat=True).first()
    text = (
        f"External target {target.name} expected a new file at {local:%Y-%m-%d %H:%M %Z} ({watch.expect}), "
        f"and none dated since has appeared under {watch.prefix}/ within {grace_of(watch)}. Last file: "
        f"{f'{last:%Y-%m-%d %H:%M %Z}' if last else 'never'}. Check the tool that writes them."
    )
    logger.warning("missed backup: %s", text)
    _notify(
        MISSED,
        subject=f"Missed backup: {target.name} (no new file from its tool)",
        text=text,
        fields={"target": target.name, "due": local.isoformat(), "expect": watch.expect},
        target=target,
    )
    return MISSED


def _came(since: datetime, target: Target) -> str:
    local = since.astimezone(ZoneInfo(target.timezone))
    return f"a file expected at {local:%Y-%m-%d %H:%M %Z} or later has been adopted"


def note_listing_failed(row: ExternalWatch, target: Target, problem: str, now: datetime) -> bool:
    """Record why the scan could not list (or use) the storage; alert "missed" once per outage:
    while the storage cannot be listed, nobody knows whether backups arrive. True when alerted."""
    ExternalWatch.objects.filter(pk=row.pk).update(error=problem)
    row.error = problem
    if not ExternalWatch.objects.filter(pk=row.pk, failing_since__isnull=True).update(failing_since=now):
        return False
    row.failing_since = now
    text = f"The watch of external target {target.name} cannot see its files: {problem}"
    logger.error("watch of %s failed: %s", target.name, problem)
    _notify(
        MISSED,
        subject=f"Cannot watch backups: {target.name}",
        text=text,
        fields={"target": target.name, "problem": problem},
        target=target,
    )
    return True


def note_listing_works(row: ExternalWatch, target: Target) -> bool:
    """Clear a listing outage once a scan listed the storage again; True when it was alerted."""
    return _close(row, target, "failing_since", "its storage can be listed again")


def _close(row: ExternalWatch, target: Target, field: str, what: str) -> bool:
    since = getattr(row, field)
    if since is None or not ExternalWatch.objects.filter(pk=row.pk, **{f"{field}__isnull": False}).update(
        **{field: None}
    ):
        return False
    setattr(row, field, None)
    _notify(
        RECOVERED,
        subject=f"Backups resumed: {target.name}",
        text=f"The watch of external target {target.name} is well again: {what} "
        f"(the outage began {since:%Y-%m-%d %H:%M %Z}).",
        fields={"target": target.name},
        target=target,
    )
    return True


def check_shrinkage(backup: Backup) -> bool:
    """Flag an adopted file whose size is below BACKUPSITE_SHRINK_PERCENT of the target's
    previous adopted file (by time): an ``anomaly`` step, a note and an alert. The backup stays
    SUCCESS (its file is intact); a human decides whether its content is."""
    previous = (
        Backup.objects.filter(
            target_id=backup.target_id,
            initiated_by=ADOPTED_BY,
            status=BackupStatus.SUCCESS,
            raw_size__gt=0,
            started_at__lt=backup.started_at,
        )
        .exclude(pk=backup.pk)
        .order_by("-started_at", "-pk")
        .first()
    )
    if previous is None or not previous.raw_size or backup.raw_size is None:
        return False
    limit = settings.BACKUPSITE_SHRINK_PERCENT
    if backup.raw_size * 100 >= previous.raw_size * limit:
        return False
    percent = backup.raw_size * 100 / previous.raw_size
    message = (
        f"size {human_bytes(backup.raw_size)} is {percent:.0f}% of the previous file, backup {previous.pk} "
        f"({human_bytes(previous.raw_size)}); below the {limit}% threshold. Check the tool that wrote it."
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
        ANOMALY,
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
