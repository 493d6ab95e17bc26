"""Running a backup: claim the target, dump once, stream into every storage, confirm every copy,
retry the failed ones, write the manifests, and record every step. Never raises for a failed
backup: the outcome is on the Backup row."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import secrets
from backups.engines import Connection, DumpOptions, Engine, EngineError, get_engine
from backups.engines.base import refuse_problems
from backups.models import Backup, BackupStatus, CopyStatus, Storage, Target
from backups.notifications import notify_backup
from backups.resources import MANIFEST_SUFFIX, connection_for, engine_for, scratch_dir
from backups.runs import chains
from backups.runs import destinations as copies
from backups.runs.claims import reap_lost_runs, this_worker
from backups.runs.destinations import Destination, FanOut
from backups.runs.heartbeat import Heartbeat
from backups.runs.manifests import build_manifest
from backups.runs.steps import WorkerLost, describe_error, record_step
from backups.runs.uploads import (
    close_all,
    discard_all,
    open_destinations,
    raise_for_required,
    retry_failed_copies,
    upload_step,
)
from backups.storages import StorageError
from backups.streaming.codecs import EXTENSIONS
from backups.streaming.pipeline import ProgressCallback, StreamResult, stream_backup

logger = logging.getLogger(__name__)


# -- running a backup ----------------------------------------------------------------------------


def supports_type(target: Target, backup_type: str) -> bool:
    if backup_type == "configuration":
        return bool(target.config_paths)
    return backup_type in get_engine(target.engine).supported_types


def type_problem(target: Target, backup_type: str) -> str:
    """Why ``target`` cannot make ``backup_type`` backups, or "" when it can."""
    if supports_type(target, backup_type):
        return ""
    if backup_type == "configuration":
        return (
            f"target {target.name} lists no config_paths; add the configuration files to back up "
            f"(targets.{target.name}.config_paths)"
        )
    engine = get_engine(target.engine)
    if backup_type == "incremental":
        return (
            f"the {engine.key} engine does not make incremental backups (only the files engine does); "
            f"use one of: {', '.join(engine.supported_types)}"
        )
    return (
        f"the {engine.key} engine does not make {backup_type} backups "
        f"(supported: {', '.join(engine.supported_types)})"
    )


def run_backup(
    target: Target,
    *,
    backup_type: str = "full",
    storages: Sequence[Storage] | None = None,
    compression: str | None = None,
    schedule: Any = None,
    retention_days: int | None = None,
    initiated_by: str = "",
    progress: ProgressCallback | None = None,
) -> Backup:
    """Back up ``target`` once and return its Backup row (SUCCESS, FAILED or SKIPPED).

    Never raises for a failed backup: the failure is recorded on the row and its steps. A run
    is SUCCESS only when every copy is stored, re-read, and matches the streamed size and
    SHA-256, and its manifest is stored beside it.
    """
    compression = compression or target.compression
    if retention_days is None:
        retention_days = target.retention.get("retention_days")
    started = timezone.now()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    backup = Backup.objects.create(
        target=target,
        schedule=schedule,
        backup_type=backup_type,
        backup_name=f"{target.name}-{backup_type}-{stamp}",
        compression=compression,
        retention_days=retention_days,
        initiated_by=initiated_by,
    )
    if not _claim(backup):
        return backup
    logger.info("backup %s of target %s started", backup.pk, target.name)
    try:
        with Heartbeat(backup.pk):
            _execute(backup, target, storages, progress)
    except BaseException as exc:
        _fail(backup, exc)
        if not isinstance(exc, Exception):
            notify_backup(backup)  # interrupted (SIGTERM, Ctrl-C): still say so
            raise
    notify_backup(backup)  # after the outcome is saved; it never raises
    return backup


def _try_claim(backup: Backup) -> bool:
    try:
        with transaction.atomic():
            return bool(
                Backup.objects.filter(pk=backup.pk, status=BackupStatus.PENDING).update(
                    status=BackupStatus.RUNNING,
                    started_at=timezone.now(),
                    heartbeat_at=timezone.now(),
                    worker=this_worker(),
                )
            )
    except IntegrityError:
        return False


def _claim(backup: Backup) -> bool:
    """PENDING -> RUNNING, or SKIPPED when the target already has a running backup."""
    claimed = _try_claim(backup) or (bool(reap_lost_runs(backup.target)) and _try_claim(backup))
    if not claimed:
        Backup.objects.filter(pk=backup.pk).update(
            status=BackupStatus.SKIPPED,
            completed_at=timezone.now(),
            notes="skipped: another backup of this target is already running",
        )
        backup.refresh_from_db()
        return False
    backup.refresh_from_db()
    return True


def _execute(
    backup: Backup, target: Target, storages: Sequence[Storage] | None, progress: ProgressCallback | None
) -> None:
    with record_step(backup, "validate") as step:
        engine, connection, rows = _prepare(backup, target, storages)
        step.message = f"engine {engine.key}; storages: {', '.join(row.name for row in rows)}"
        backup.fingerprint = _fingerprint(engine, connection, target, rows, backup)
        previous = _unchanged_since(backup, target) if target.skip_unchanged else None
        if previous is None:
            destinations = open_destinations(backup, rows)
        else:
            step.message += f"; unchanged since backup {previous.pk}"
    if previous is not None:
        _skip_unchanged(backup, previous)
        return

    base_info = _link_to_previous(backup) if backup.backup_type == "incremental" else None
    backup.file_path = _object_path(backup, engine)
    backup.save(update_fields=["file_path", "fingerprint", "base", "backup_type", "backup_name"])
    options = DumpOptions(
        backup_type=backup.backup_type,
        compression=backup.compression,
        scratch_dir=scratch_dir(),
        previous=base_info,
    )
    fan = FanOut(destinations)
    try:
        result, info = _stream(backup, engine, connection, fan, options, progress)
        _confirm_and_describe(backup, engine, destinations, result, info)
    except BaseException:
        discard_all(destinations)
        raise
    finally:
        close_all(destinations)

    now = timezone.now()
    backup.status = BackupStatus.SUCCESS
    backup.completed_at = now
    backup.duration_seconds = (now - (backup.started_at or now)).total_seconds()
    if backup.retention_days:
        backup.expires_at = (backup.started_at or now) + timedelta(days=backup.retention_days)
    backup.save()
    logger.info("backup %s of target %s succeeded: %s bytes", backup.pk, target.name, backup.file_size)


def _link_to_previous(backup: Backup) -> dict[str, Any] | None:
    """Set ``backup.base`` to the link an incremental builds on and return that link's engine
    info (with its file index, from its manifest). With nothing to build on, the run becomes a
    full backup, and says so."""
    with record_step(backup, "chain") as step:
        base = chains.previous_link(backup)
        if base is None:
            backup.backup_type = "full"
            backup.backup_name = backup.backup_name.replace("-incremental-", "-full-", 1)
            backup.notes = "made a full backup: no earlier full or incremental backup to build on"
            step.message = backup.notes
            return None
        manifest = chains.load_manifest(base)
        info = manifest.get("engine_info")
        if not isinstance(info, dict):
            raise chains.ServiceError(f"the manifest of backup {base.pk} has no engine_info to build on")
        backup.base = base
        depth = len(chains.chain_of(base))
        step.message = f"built on backup {base.pk} ({base.backup_type}); link {depth + 1} of its chain"
        return info


def _prepare(
    backup: Backup, target: Target, storages: Sequence[Storage] | None
) -> tuple[Engine, Connection, list[Storage]]:
    problem = type_problem(target, backup.backup_type)
    if problem:
        raise EngineError(problem)
    engine = engine_for(target, backup.backup_type)
    missing = engine.missing_binaries()
    if missing:
        raise EngineError(f"required program(s) not installed: {', '.join(missing)}")
    try:
        connection = (
            Connection(name=target.name, engine=engine.key, paths=tuple(target.config_paths))
            if backup.backup_type == "configuration"
            else connection_for(target)
        )
    except secrets.SecretError as exc:
        raise secrets.SecretError(f"target {target.name}: {exc}") from None
    refuse_problems(engine.validate(connection))
    engine.probe(connection)
    rows = list(storages) if storages is not None else list(target.storages.all())
    if not rows:
        raise StorageError(f"target {target.name} has no storage; list one in targets.{target.name}.storages")
    return engine, connection, rows


def _fingerprint(
    engine: Engine, connection: Connection, target: Target, rows: list[Storage], backup: Backup
) -> str:
    """The source's change token joined with everything that shapes the backup, so a changed
    table filter, option, compression or storage list never matches an older backup."""
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
        ],
        sort_keys=True,
        default=str,
    )
    return f"{token}|{hashlib.sha256(shape.encode()).hexdigest()[:16]}"


def _unchanged_since(backup: Backup, target: Target) -> Backup | None:
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


def _skip_unchanged(backup: Backup, previous: Backup) -> None:
    now = timezone.now()
    backup.status = BackupStatus.SKIPPED
    backup.completed_at = now
    backup.duration_seconds = (now - (backup.started_at or now)).total_seconds()
    backup.notes = (
        f"skipped: nothing changed since backup {previous.pk} of {previous.started_at:%Y-%m-%d %H:%M} "
        "(same fingerprint)"
    )
    backup.save()
    logger.info(
        "backup %s of target %s skipped: unchanged since %s", backup.pk, backup.target.name, previous.pk
    )


def _object_path(backup: Backup, engine: Engine) -> str:
    extension = engine.file_extension + EXTENSIONS[backup.compression]
    sub = (
        backup.schedule.storage_path.strip("/") + "/"
        if backup.schedule and backup.schedule.storage_path
        else ""
    )
    return f"{sub}{backup.target.name}/{backup.backup_name}-{backup.pk}{extension}"


def _stream(
    backup: Backup,
    engine: Engine,
    connection: Connection,
    fan: FanOut,
    options: DumpOptions,
    progress: ProgressCallback | None,
) -> tuple[StreamResult, dict[str, Any]]:
    def on_progress(raw: int, stored: int) -> None:
        Backup.objects.filter(pk=backup.pk).update(progress=raw)
        if progress is not None:
            progress(raw, stored)

    fan.open(backup.file_path)
    with record_step(backup, "dump") as step:
        with engine.dump(connection, options) as dump:
            result = stream_backup(
                dump.stream,
                [fan],
                backup.compression,
                on_progress=on_progress,
                chunk_size=settings.BACKUPSITE_CHUNK_SIZE,
                progress_interval=settings.BACKUPSITE_PROGRESS_INTERVAL,
            )
        step.bytes = result.raw_size
        step.message = f"{result.raw_size} bytes from {engine.label}"
    with record_step(backup, "compress") as step:
        step.bytes = result.size
        ratio = result.size / result.raw_size if result.raw_size else 0
        step.message = f"{backup.compression}: {result.size} bytes ({ratio:.1%} of the dump)"
    fan.commit(lambda destination: upload_step(backup, destination))
    return result, dict(dump.info)


def _confirm_and_describe(
    backup: Backup,
    engine: Engine,
    destinations: list[Destination],
    result: StreamResult,
    info: dict[str, Any],
) -> None:
    with record_step(backup, "verify") as step:
        copies.confirm_all(
            [d for d in destinations if d.stored is not None], backup.file_path, result.size, result.sha256
        )
        good = [d for d in destinations if d.confirmed]
        if not good:
            raise StorageError(
                "no copy was stored and confirmed: " + "; ".join(d.failure for d in destinations)
            )
        step.bytes = result.size
        step.message = (
            f"{len(good)} cop{'y' if len(good) == 1 else 'ies'} re-read: size and sha256 match"
            + "".join(f"; failed: {d.failure}" for d in destinations if not d.confirmed)
        )
    retry_failed_copies(backup, destinations, good[0], result)
    backup.file_size = result.size
    backup.raw_size = result.raw_size
    backup.progress = result.raw_size
    backup.checksum = result.sha256
    backup.tables_included = list(info.get("tables", []))
    backup.engine_info = chains.catalog_info(info)
    backup.files_included = list(info.get("roots", {}).values()) or list(info.get("config_paths", []))
    with record_step(backup, "manifest") as step:
        manifest = json.dumps(build_manifest(backup, engine, info), indent=2, sort_keys=True).encode()
        for destination in destinations:
            if not destination.confirmed:
                continue
            try:
                destination.storage.put_bytes(backup.file_path + MANIFEST_SUFFIX, manifest)
                destination.manifest_stored = True
            except Exception as exc:
                destination.fail(exc)
        raise_for_required(destinations)
        step.message = f"{backup.file_path}{MANIFEST_SUFFIX}"
    optional = [d for d in destinations if not d.confirmed]
    for destination in destinations:
        destination.copy.status = CopyStatus.STORED if destination.confirmed else CopyStatus.FAILED
        destination.copy.error_message = destination.error
        destination.copy.save(update_fields=["status", "error_message"])
    if optional:
        backup.notes = "; ".join(
            [backup.notes] * bool(backup.notes) + [f"optional copy failed: {d.failure}" for d in optional]
        )


def _fail(backup: Backup, exc: BaseException) -> None:
    message = secrets.redact(describe_error(exc))
    if not isinstance(exc, EngineError | StorageError | secrets.SecretError | WorkerLost):
        logger.error(
            "backup %s of target %s failed: %s", backup.pk, backup.target.name, message, exc_info=exc
        )
    else:
        logger.warning("backup %s of target %s failed: %s", backup.pk, backup.target.name, message)
    now = timezone.now()
    backup.status = BackupStatus.FAILED
    backup.error_message = message
    backup.completed_at = now
    backup.duration_seconds = (now - (backup.started_at or now)).total_seconds()
    backup.save(update_fields=["status", "error_message", "completed_at", "duration_seconds"])
