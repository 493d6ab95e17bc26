"""Restoring a backup into its source or another target of the same engine.

The stored bytes are checked against the catalog's SHA-256 *before* the destination is touched;
the restore pass checks them again as it streams. Every attempt is a RestoreLog row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from django.urls import reverse
from django.utils import timezone

from backups import services as backup_services
from backups.models import Backup, Target
from backups.services import (
    Heartbeat,
    RestoreResult,
    RunningWork,
    ServiceError,
    describe_error,
    log_context,
    redact,
)

from . import announcing, applying, reaping
from .models import RestoreLog, RestoreStatus
from .preview import RestorePreview, preview_restore
from .progress import PhaseCallback, ProgressCallback, RestoreProgress
from .refusals import (
    RestoreRefused,
    check_directory_restorable,
    check_restorable,
    confirmation_word,
    restore_problems,
)

__all__ = [
    "RestorePreview",
    "RestoreRefused",
    "check_directory_restorable",
    "check_restorable",
    "confirmation_word",
    "preview_restore",
    "reap_lost_restores",
    "request_restore",
    "restore_backup",
    "restore_destinations",
    "restore_problems",
    "restore_to_directory",
    "run_restore",
    "running_restores",
    "start_restore",
    "withdrawn_permission",
]

logger = logging.getLogger(__name__)

FILES_LISTED = 1000  # restored file names kept on the log row; the total is in the notes


def restore_destinations(backup: Backup) -> list[Target]:
    """The targets ``backup`` may be restored into: its own first, then the others of its engine
    (none for a configuration backup, which is restored into a directory)."""
    if backup.backup_type == "configuration":
        return []
    others = Target.objects.filter(engine=backup.target.engine).exclude(pk=backup.target_id).order_by("name")
    return [backup.target, *others]


def _total_bytes(backup: Backup) -> int | None:
    """Bytes a restore reads: every backup of its chain, once checked and once restored."""
    try:
        sizes = [link.file_size for link in backup_services.chain_of(backup)]
    except ServiceError:
        return None
    return None if None in sizes else 2 * sum(size or 0 for size in sizes)


def request_restore(backup: Backup, destination: Target, *, typed: str, by: str) -> RestoreLog:
    """A restore confirmed on a page: ``typed`` must be :func:`confirmation_word` exactly, else
    :class:`RestoreRefused` and nothing changes. Returns the queued RestoreLog row; the caller
    queues :func:`run_restore` for it."""
    word, _what = confirmation_word(destination)
    if typed.strip() != word:
        raise RestoreRefused(f"type {word} exactly to confirm; nothing was restored")
    return start_restore(backup, destination, initiated_by=by, confirmed_by=by)


def start_restore(
    backup: Backup, destination: Target, *, initiated_by: str = "", confirmed_by: str = ""
) -> RestoreLog:
    """Check, then record a restore of ``backup`` into ``destination`` as queued (RUNNING, not
    started yet); :func:`run_restore` carries it out. Raises :class:`RestoreRefused`."""
    check_restorable(backup, destination)
    return RestoreLog.objects.create(
        backup=backup,
        destination=destination,
        restore_type=backup.backup_type,
        status=RestoreStatus.RUNNING,
        initiated_by=initiated_by,
        confirmed_by=confirmed_by,
        total_bytes=_total_bytes(backup),
    )


def run_restore(
    log_id: int, progress: ProgressCallback | None = None, phase: PhaseCallback | None = None
) -> RestoreLog | None:
    """Carry out the queued restore ``log_id`` into its destination and finish its row (SUCCESS
    or FAILED). The backup and the destination are checked again first: either may have changed
    since the restore was confirmed. Returns None, doing nothing, when the row is not queued
    (another worker took it: the task may be delivered twice)."""
    log = _claim(log_id)
    if log is None:
        logger.warning("restore %s is not queued (already taken or finished); nothing to do", log_id)
        return None
    return _carry_out(log, progress, phase, check_again=True)


def restore_backup(
    backup: Backup,
    destination: Target,
    *,
    initiated_by: str = "",
    confirmed_by: str = "",
    progress: ProgressCallback | None = None,
    phase: PhaseCallback | None = None,
) -> RestoreLog:
    """Restore ``backup`` into ``destination`` now; return the RestoreLog (SUCCESS or FAILED).
    Raises :class:`RestoreRefused`, recording nothing, when it cannot start. ``progress`` gets
    the bytes of each pass, ``phase`` where the engine says it is (both from this thread)."""
    queued = start_restore(backup, destination, initiated_by=initiated_by, confirmed_by=confirmed_by)
    log = _claim(queued.pk)
    assert log is not None  # queued just above, by this process
    return _carry_out(log, progress, phase, check_again=False)


def withdrawn_permission(log_id: int) -> str | None:
    """Before a worker carries out queued restore ``log_id``: when the person who asked for it
    (or approved it) may no longer restore into its destination, end it FAILED, audited, and
    return its status; else None."""
    log = (
        RestoreLog.objects.select_related("backup__target", "destination")
        .filter(pk=log_id, status=RestoreStatus.RUNNING, started_at__isnull=True)
        .first()
    )
    if log is None or log.destination is None:
        return None
    people = {log.initiated_by, log.confirmed_by} - {""}
    denied = sorted(
        who
        for who in people
        for target in (log.backup.target, log.destination)
        if not backup_services.initiator_may(who, "restore", target)
    )
    if not denied:
        return None
    message = f"refused before it started: {denied[0]} may no longer restore into {log.destination.name}"
    ended = RestoreLog.objects.filter(
        pk=log.pk, status=RestoreStatus.RUNNING, started_at__isnull=True
    ).update(status=RestoreStatus.FAILED, error_message=message, completed_at=timezone.now())
    if ended:
        backup_services.record_audit(
            "restore.start", obj=log, outcome="refused", auth_method="system", username=denied[0],
            details={"reason": message},
        )  # fmt: skip
        logger.warning("restore %s %s", log.pk, message)
    return RestoreStatus.FAILED


def _claim(log_id: int) -> RestoreLog | None:
    """The queued row ``log_id``, now started by this process; None when it is not queued any
    more. Then the restores into its destination whose worker died are ended (FAILED)."""
    claimed = RestoreLog.objects.filter(
        pk=log_id, status=RestoreStatus.RUNNING, started_at__isnull=True, destination__isnull=False
    ).update(**reaping.claim_fields())
    if not claimed:
        return None
    log = RestoreLog.objects.select_related("backup__target", "destination").get(pk=log_id)
    reap_lost_restores(destination=log.destination)
    return log


def reap_lost_restores(now: datetime | None = None, destination: Target | None = None) -> int:
    """End FAILED every RUNNING restore (into ``destination``, or any) whose worker died (see
    :mod:`.reaping`), each audited and announced as ``restore_finished``; returns how many. The
    watch calls it every minute (registered with backups)."""
    lost = reaping.end_lost(now or timezone.now(), destination)
    for log in lost:
        announcing.announce(log, announcing.into_of(log))
    return len(lost)


def _carry_out(
    log: RestoreLog, progress: ProgressCallback | None, phase: PhaseCallback | None, *, check_again: bool
) -> RestoreLog:
    backup, destination = log.backup, log.destination
    assert destination is not None  # claimed with a destination
    logger.info("restore %s of backup %s into %s started", log.pk, backup.pk, destination.name)

    def work(tracker: RestoreProgress) -> RestoreResult:
        if check_again:
            check_restorable(backup, destination)
        return applying.restore_into(backup, destination, tracker)

    return _run(log, work, destination.name, progress, phase)


def running_restores() -> list[RunningWork]:
    """Restores under way or queued, for the dashboard."""
    running = RestoreLog.objects.filter(status=RestoreStatus.RUNNING).select_related("destination")
    return [
        RunningWork(
            kind="restore",
            pk=log.pk,
            label=f"restore of backup {log.backup_id} into "
            + (log.destination.name if log.destination else log.notes.removeprefix("into "))
            + (" (queued)" if log.is_queued else "")
            + (f" ({log.phase})" if log.phase else ""),
            target_id=log.destination_id,
            started_at=log.started_at,
            done_bytes=log.progress,
            total_bytes=log.total_bytes,
            url=reverse("admin:restores_restorelog_change", args=[log.pk]),
        )
        for log in running.order_by("created_at", "id")
    ]


def restore_to_directory(
    backup: Backup,
    directory: Path,
    *,
    initiated_by: str = "",
    confirmed_by: str = "",
    progress: ProgressCallback | None = None,
) -> RestoreLog:
    """Restore a configuration backup's files under ``directory`` (absolute paths laid out
    beneath it: ``DIR/etc/mysql/my.cnf``); return the RestoreLog."""
    check_directory_restorable(backup, directory)
    log = RestoreLog.objects.create(
        backup=backup,
        restore_type=backup.backup_type,
        status=RestoreStatus.RUNNING,
        initiated_by=initiated_by,
        confirmed_by=confirmed_by,
        notes=f"into directory {directory}",
        **reaping.claim_fields(),
        total_bytes=_total_bytes(backup),
    )
    logger.info("restore %s of backup %s into directory %s started", log.pk, backup.pk, directory)
    return _run(
        log, functools.partial(applying.restore_configuration, backup, directory), str(directory), progress
    )


def _run(
    log: RestoreLog,
    work: Callable[[RestoreProgress], RestoreResult],
    into: str,
    progress: ProgressCallback | None,
    phase: PhaseCallback | None = None,
) -> RestoreLog:
    backup = log.backup
    tracker = RestoreProgress(log.pk, progress, phase)
    with log_context(restore_id=log.pk, backup_id=backup.pk):  # on every line of the restore
        try:
            with Heartbeat(
                RestoreLog.objects.filter(pk=log.pk, status=RestoreStatus.RUNNING), f"restore {log.pk}"
            ):
                result = work(tracker)
        except BaseException as exc:
            log.status = RestoreStatus.FAILED
            log.error_message = str(exc) if isinstance(exc, RestoreRefused) else redact(describe_error(exc))
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
            log.progress = tracker.done
            log.phase = tracker.phase_text
            log.announce_pending = True  # until its audit event and alert rows exist
            log.save()
    announcing.announce(log, into)
    return log
