"""Restoring a backup into its source or another target of the same engine.

The stored bytes are checked against the catalog's SHA-256 *before* the destination is touched;
the restore pass checks them again as it streams. Every attempt is a RestoreLog row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import BinaryIO

from django.utils import timezone

from backups import notifications, secrets
from backups.engines import EngineError, get_engine
from backups.engines.base import RestoreOptions, RestoreResult
from backups.models import Backup, BackupStatus, Target
from backups.services import (
    ServiceError,
    check_copy_digest,
    connection_for,
    feed_copy,
    restore_manifest,
    scratch_dir,
    stored_copies,
)
from backups.steps import describe_error

from .models import RestoreLog, RestoreStatus

logger = logging.getLogger(__name__)

FILES_LISTED = 1000  # restored file names kept on the log row; the total is in the notes


class RestoreRefused(ServiceError):
    """The restore was not started: wrong engine, unusable backup. Nothing was changed."""


def check_restorable(backup: Backup, destination: Target) -> None:
    """Raise :class:`RestoreRefused` unless ``backup`` can be restored into ``destination``."""
    if backup.deleted_at is not None:
        raise RestoreRefused(f"backup {backup.pk} was deleted by retention; its files are gone")
    if backup.status != BackupStatus.SUCCESS:
        raise RestoreRefused(
            f"backup {backup.pk} is {backup.status}; only successful backups can be restored"
        )
    if destination.engine != backup.target.engine:
        raise RestoreRefused(
            f"backup {backup.pk} is a {backup.target.engine} backup; target {destination.name} uses the "
            f"{destination.engine} engine. Restore into a target of the same engine."
        )
    if not stored_copies(backup):
        raise RestoreRefused(f"backup {backup.pk} has no stored copy")
    try:
        get_engine(destination.engine).check_restore_destination(connection_for(destination))
    except (EngineError, secrets.SecretError) as exc:
        raise RestoreRefused(f"target {destination.name}: {exc}") from None


def restore_backup(
    backup: Backup,
    destination: Target,
    *,
    initiated_by: str = "",
    confirmed_by: str = "",
    progress: Callable[[int], None] | None = None,
) -> RestoreLog:
    """Restore ``backup`` into ``destination``; return the RestoreLog (SUCCESS or FAILED)."""
    check_restorable(backup, destination)
    log = RestoreLog.objects.create(
        backup=backup,
        destination=destination,
        restore_type=backup.backup_type,
        status=RestoreStatus.RUNNING,
        started_at=timezone.now(),
        initiated_by=initiated_by,
        confirmed_by=confirmed_by,
    )
    logger.info("restore %s of backup %s into %s started", log.pk, backup.pk, destination.name)
    try:
        result = _restore(backup, destination, progress)
    except BaseException as exc:
        log.status = RestoreStatus.FAILED
        log.error_message = secrets.redact(describe_error(exc))
        logger.warning("restore %s of backup %s failed: %s", log.pk, backup.pk, log.error_message)
        if not isinstance(exc, Exception):
            raise  # Ctrl-C or SIGTERM: recorded (below), then the process stops
    else:
        log.status = RestoreStatus.SUCCESS
        log.tables_restored = result.tables
        log.files_restored = result.files[:FILES_LISTED]
        log.notes = result.message
        if len(result.files) > FILES_LISTED:
            log.notes += f" (first {FILES_LISTED} of {len(result.files)} files listed)"
    finally:
        log.completed_at = timezone.now()
        log.save()
    _notify_finished(log)
    return log


def _notify_finished(log: RestoreLog) -> None:
    """``restore_finished``, success or failure; a notification problem never changes the log."""
    backup, destination = log.backup, log.destination
    into = destination.name if destination else "?"
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
        notifications.notify(
            notifications.RESTORE_FINISHED,
            subject=f"Restore {outcome}: backup {backup.pk} of {backup.target.name} into {into}",
            text=f"Restore {log.pk} of backup {backup.pk} into {into} {outcome}: "
            + (log.error_message or log.notes or "done"),
            fields={name: value for name, value in fields.items() if value},
            backup=backup,
            target=destination,
        )
    except Exception:
        logger.exception("restore %s: notifications failed", log.pk)


def _restore(backup: Backup, destination: Target, progress: Callable[[int], None] | None) -> RestoreResult:
    engine = get_engine(destination.engine)
    connection = connection_for(destination)
    copy, problems = None, []
    for candidate in stored_copies(backup):
        try:
            check_copy_digest(backup, candidate, progress)
        except Exception as exc:
            problems.append(secrets.redact(describe_error(exc)))
            continue
        copy = candidate
        break
    if copy is None:
        raise ServiceError(
            "no intact copy to restore from; the destination was not touched: " + "; ".join(problems)
        )
    options = RestoreOptions(scratch_dir=scratch_dir(), manifest=restore_manifest(backup))
    outcome: list[RestoreResult] = []

    def consume(stream: BinaryIO) -> str:
        outcome.append(engine.restore(connection, stream, options))
        return outcome[0].message

    feed_copy(backup, copy, consume, progress)
    return outcome[0]
