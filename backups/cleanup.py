"""The simple retention of this release (retention_days, max_backups) and the sweep of upload
leftovers from every storage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from . import secrets
from .models import Backup, BackupStatus, CopyStatus, Storage, Target
from .resources import (
    storage_for,
)
from .steps import describe_error, record_step
from .storages import STALE_AFTER, StorageError

logger = logging.getLogger(__name__)


# -- simple retention ---------------------------------------------------------------------------


def sweep_storages(older_than: timedelta = STALE_AFTER) -> tuple[list[str], list[str]]:
    """Remove writer leftovers (temporary names, unfinished multipart uploads, uncommitted
    blocks) older than ``older_than`` from every storage: what a worker killed mid-upload on
    another host left. Returns (what was removed, errors)."""
    removed: list[str] = []
    errors: list[str] = []
    for row in Storage.objects.order_by("name"):
        try:
            with storage_for(row) as storage:
                count = storage.sweep_stale(older_than)
        except (StorageError, secrets.SecretError) as exc:
            errors.append(f"storage {row.name}: {secrets.redact(describe_error(exc))}")
            continue
        if count:
            removed.append(f"storage {row.name}: removed {count} leftover upload(s) older than {older_than}")
            logger.info("swept %s leftover upload(s) from storage %s", count, row.name)
    return removed, errors


@dataclass
class CleanupPlan:
    target: Target
    keep: list[tuple[Backup, str]] = field(default_factory=list)
    delete: list[tuple[Backup, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def plan_cleanup(target: Target, now: datetime | None = None) -> CleanupPlan:
    """A first, simple policy: ``retention_days`` (each backup's expires_at) and ``max_backups``
    from the target's retention settings. The newest SUCCESS backup is always kept."""
    now = now or timezone.now()
    max_backups = target.retention.get("max_backups")
    plan = CleanupPlan(target=target)
    candidates = Backup.objects.filter(target=target, status=BackupStatus.SUCCESS, deleted_at__isnull=True)
    for index, backup in enumerate(candidates.order_by("-started_at", "-id")):
        if index == 0:
            plan.keep.append((backup, "newest successful backup"))
        elif max_backups is not None and index >= max_backups:
            plan.delete.append((backup, f"beyond max_backups={max_backups}"))
        elif backup.expires_at is not None and backup.expires_at <= now:
            plan.delete.append((backup, f"expired on {backup.expires_at:%Y-%m-%d %H:%M}"))
        else:
            plan.keep.append((backup, "within policy"))
    return plan


def cleanup_target(target: Target, *, dry_run: bool = False, now: datetime | None = None) -> CleanupPlan:
    """Apply :func:`plan_cleanup`: delete every copy and manifest, mark rows deleted (kept for
    audit). A storage error leaves that backup's row intact and is reported in ``errors``."""
    plan = plan_cleanup(target, now)
    if dry_run:
        return plan
    for backup, reason in plan.delete:
        try:
            with record_step(backup, "cleanup", reason):
                for copy in backup.copies.exclude(status=CopyStatus.DELETED).select_related("storage"):
                    with storage_for(copy.storage) as storage:
                        if copy.path:
                            storage.delete(copy.path)
                            storage.delete(copy.manifest_path)
                    copy.status, copy.deleted_at = CopyStatus.DELETED, timezone.now()
                    copy.save(update_fields=["status", "deleted_at"])
        except Exception as exc:
            plan.errors.append(f"backup {backup.pk}: {secrets.redact(describe_error(exc))}")
            continue
        backup.deleted_at = timezone.now()
        backup.save(update_fields=["deleted_at"])
    return plan
