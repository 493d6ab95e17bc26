"""Skip-if-unchanged: a run whose source has not changed since an intact backup with the same
shape is recorded SKIPPED instead of storing the same bytes again."""

from __future__ import annotations

import hashlib
import json
import logging

from django.utils import timezone

from backups.engines import Connection, Engine, EngineError
from backups.models import Backup, BackupStatus, CopyStatus, Storage, Target

logger = logging.getLogger(__name__)


def fingerprint(
    engine: Engine, connection: Connection, target: Target, rows: list[Storage], backup: Backup
) -> str:
    """The source's change token joined with everything that shapes the backup, so a changed
    table filter, option, compression, storage list or encryption key never matches an older
    backup (a rotated key makes a new backup; an unencrypted one never stands in for it)."""
    try:
        token = engine.fingerprint(connection)
    except EngineError as exc:
        logger.warning("backup %s: no fingerprint for target %s: %s", backup.pk, target.name, exc)
        return ""
    if not token:
        return ""
    shape = json.dumps(
        [
            backup.backup_type,
            backup.compression,
            target.options,
            target.include_tables,
            target.exclude_tables,
            sorted(row.name for row in rows),
            # only when encrypted, so unencrypted targets keep the fingerprints they had
            *([backup.encryption, backup.encryption_recipients] if backup.encryption != "none" else []),
        ],
        sort_keys=True,
        default=str,
    )
    return f"{token}|{hashlib.sha256(shape.encode()).hexdigest()[:16]}"


def unchanged_since(backup: Backup, target: Target) -> Backup | None:
    """The newest intact backup with the same fingerprint, if any."""
    if not backup.fingerprint:
        return None
    previous = (
        Backup.objects.filter(
            target=target,
            status=BackupStatus.SUCCESS,
            deleted_at__isnull=True,
            fingerprint=backup.fingerprint,
        )
        .exclude(pk=backup.pk)
        .order_by("-started_at", "-id")
        .first()
    )
    if previous is None or previous.copies.exclude(status=CopyStatus.STORED).exists():
        return None
    return previous


def skip_unchanged(backup: Backup, previous: Backup) -> None:
    backup.notes = (
        f"skipped: nothing changed since backup {previous.pk} of {previous.started_at:%Y-%m-%d %H:%M} "
        "(same fingerprint)"
    )
    backup.finish(BackupStatus.SKIPPED, timezone.now())
    backup.save()
    logger.info(
        "backup %s of target %s skipped: unchanged since %s", backup.pk, backup.target.name, previous.pk
    )
