"""Restoring a backup into its source or another target of the same engine.

The stored bytes are checked against the catalog's SHA-256 *before* the destination is touched;
the restore pass checks them again as it streams. Every attempt is a RestoreLog row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from django.utils import timezone

from backups import services as backup_services
from backups.models import Backup, BackupCopy, BackupStatus, Target
from backups.services import (
    ChainLink,
    ConfigurationEngine,
    Connection,
    Engine,
    EngineError,
    RestoreOptions,
    RestoreResult,
    SecretError,
    ServiceError,
    check_copy_digest,
    connection_for,
    describe_error,
    feed_copy,
    get_engine,
    redact,
    restore_manifest,
    scratch_dir,
    stored_copies,
)

from .models import RestoreLog, RestoreStatus

logger = logging.getLogger(__name__)

FILES_LISTED = 1000  # restored file names kept on the log row; the total is in the notes


class RestoreRefused(ServiceError):
    """The restore was not started: wrong engine, unusable backup. Nothing was changed."""


def _check_usable(backup: Backup) -> None:
    if backup.deleted_at is not None:
        raise RestoreRefused(f"backup {backup.pk} was deleted by retention; its files are gone")
    if backup.status != BackupStatus.SUCCESS:
        raise RestoreRefused(
            f"backup {backup.pk} is {backup.status}; only successful backups can be restored"
        )
    if backup.backup_type == "incremental" and backup.base_id is None:
        raise RestoreRefused(
            f"backup {backup.pk} is an incremental backup whose base is not in the catalog; it holds only "
            "the changes since then. Reindex the storage holding the earlier backups of its chain "
            "(backup_reindex), then restore again."
        )
    try:
        chain = backup_services.chain_of(backup)
    except ServiceError as exc:
        raise RestoreRefused(str(exc)) from None
    for link in chain:
        if not stored_copies(link):
            raise RestoreRefused(
                f"backup {link.pk} has no stored copy"
                + (f" (backup {backup.pk} is built on it)" if link.pk != backup.pk else "")
            )


def check_restorable(backup: Backup, destination: Target) -> None:
    """Raise :class:`RestoreRefused` unless ``backup`` can be restored into ``destination``."""
    if backup.backup_type == "configuration":
        raise RestoreRefused(
            f"backup {backup.pk} is a configuration backup: restore it into a directory (--to-dir DIR)"
        )
    _check_usable(backup)
    if destination.engine != backup.target.engine:
        raise RestoreRefused(
            f"backup {backup.pk} is a {backup.target.engine} backup; target {destination.name} uses the "
            f"{destination.engine} engine. Restore into a target of the same engine."
        )
    try:
        get_engine(destination.engine).check_restore_destination(connection_for(destination))
    except (EngineError, SecretError) as exc:
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
    return _run(log, functools.partial(_restore, backup, destination, progress), destination.name)


def check_directory_restorable(backup: Backup, directory: Path) -> None:
    """Raise :class:`RestoreRefused` unless ``backup`` is a configuration backup that can be
    restored under ``directory``."""
    if backup.backup_type != "configuration":
        raise RestoreRefused(
            f"backup {backup.pk} is a {backup.backup_type} backup; only configuration backups are "
            "restored into a directory (use --to TARGET)"
        )
    if not directory.is_absolute():
        raise RestoreRefused(f"--to-dir: {directory} must be an absolute path")
    if directory.exists() and not directory.is_dir():
        raise RestoreRefused(f"--to-dir: {directory} exists and is not a directory")
    _check_usable(backup)


def restore_to_directory(
    backup: Backup,
    directory: Path,
    *,
    initiated_by: str = "",
    confirmed_by: str = "",
    progress: Callable[[int], None] | None = None,
) -> RestoreLog:
    """Restore a configuration backup's files under ``directory`` (absolute paths laid out
    beneath it: ``DIR/etc/mysql/my.cnf``); return the RestoreLog."""
    check_directory_restorable(backup, directory)
    log = RestoreLog.objects.create(
        backup=backup,
        restore_type=backup.backup_type,
        status=RestoreStatus.RUNNING,
        started_at=timezone.now(),
        initiated_by=initiated_by,
        confirmed_by=confirmed_by,
        notes=f"into directory {directory}",
    )
    logger.info("restore %s of backup %s into directory %s started", log.pk, backup.pk, directory)
    return _run(log, functools.partial(_restore_configuration, backup, directory, progress), str(directory))


def _run(log: RestoreLog, work: Callable[[], RestoreResult], into: str) -> RestoreLog:
    backup = log.backup
    try:
        result = work()
    except BaseException as exc:
        log.status = RestoreStatus.FAILED
        log.error_message = redact(describe_error(exc))
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
    _notify_finished(log, into)
    return log


def _notify_finished(log: RestoreLog, into: str) -> None:
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
        )
    except Exception:
        logger.exception("restore %s: notifications failed", log.pk)


def _intact_copy(backup: Backup, progress: Callable[[int], None] | None) -> BackupCopy:
    """The first stored copy whose bytes match the catalog; the destination is not touched yet."""
    problems = []
    for candidate in stored_copies(backup):
        try:
            check_copy_digest(backup, candidate, progress)
        except Exception as exc:
            problems.append(redact(describe_error(exc)))
            continue
        return candidate
    raise ServiceError(
        "no intact copy to restore from"
        + (f" (backup {backup.pk})" if backup.base_id or backup.incrementals.exists() else "")
        + "; the destination was not touched: "
        + "; ".join(problems)
    )


def _restore(backup: Backup, destination: Target, progress: Callable[[int], None] | None) -> RestoreResult:
    engine = get_engine(destination.engine)
    connection = connection_for(destination)
    if backup.base_id is not None or "incremental" in engine.supported_types:
        # Engines that make chains restore even one full link from its stored manifest, whose
        # file index lets them check the restored tree before swapping it in.
        return _restore_chain(backup, engine, connection, progress)
    copy = _intact_copy(backup, progress)
    options = RestoreOptions(scratch_dir=scratch_dir(), manifest=restore_manifest(backup))
    outcome: list[RestoreResult] = []

    def consume(stream: BinaryIO) -> str:
        outcome.append(engine.restore(connection, stream, options))
        return outcome[0].message

    feed_copy(backup, copy, consume, progress)
    return outcome[0]


def _restore_chain(
    backup: Backup, engine: Engine, connection: Connection, progress: Callable[[int], None] | None
) -> RestoreResult:
    """Apply the chain from its full backup to ``backup``: every link's bytes are checked first,
    then the engine stages them all and swaps the result in only when the last one applied."""
    chain = backup_services.chain_of(backup)
    links: list[ChainLink] = []
    for link in chain:
        copy = _intact_copy(link, progress)
        manifest = backup_services.load_manifest(link)
        links.append(ChainLink(manifest=manifest, feed=functools.partial(feed_copy, link, copy)))
    options = RestoreOptions(scratch_dir=scratch_dir(), manifest=links[-1].manifest)
    result = engine.restore_chain(connection, links, options)
    ids = ", ".join(str(link.pk) for link in chain)
    result.message += f" (chain of {len(links)} backups: {ids})"
    return result


def _restore_configuration(
    backup: Backup, directory: Path, progress: Callable[[int], None] | None
) -> RestoreResult:
    copy = _intact_copy(backup, progress)
    outcome: list[RestoreResult] = []

    def consume(stream: BinaryIO) -> str:
        outcome.append(ConfigurationEngine().restore_to_directory(directory, stream))
        return outcome[0].message

    feed_copy(backup, copy, consume, progress)
    return outcome[0]
