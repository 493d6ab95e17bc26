"""Running a backup: claim the target, dump once, stream into every storage, confirm every copy,
retry the failed ones, write the manifests, and record every step. Never raises for a failed
backup: the outcome is on the Backup row."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from backups import keys, secrets
from backups.engines import Connection, DumpOptions, Engine, EngineError, get_engine
from backups.engines.base import refuse_problems
from backups.logs import log_context
from backups.models import Backup, BackupStatus, CopyStatus, Proof, StepStatus, Storage, Target
from backups.notifications import notify_backup
from backups.requests import ScheduleInfo
from backups.resources import MANIFEST_SUFFIX, ServiceError, connection_for, engine_for, scratch_dir
from backups.runs import chains, destinations, unchanged
from backups.runs.claims import claim
from backups.runs.destinations import Destination, FanOut
from backups.runs.heartbeat import Heartbeat
from backups.runs.manifests import build_manifest
from backups.runs.steps import WorkerLost, describe_error, record_done, record_step
from backups.storages import StorageError
from backups.streaming.codecs import EXTENSIONS
from backups.streaming.encryption import AGE_EXTENSION, AgeEncryptor
from backups.streaming.pipeline import ProgressCallback, StreamResult, dump_profile, stream_backup
from backups.watching.settings import run_refusal

logger = logging.getLogger(__name__)
# A catalog database that restarts is back within seconds: a run that lost it tries this long to
# record its failure (each try on a new connection) before leaving the row to the watch.
CATALOG_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
# What a run sets on its row between the claim and its success, saved with the closing fields in
# one UPDATE of these columns only: not the whole row, so heartbeat_at (the heartbeat thread's)
# and what other processes write meanwhile are left alone.
OUTCOME_FIELDS = (
    "file_path", "fingerprint", "base", "backup_type", "backup_name", "encryption", "encryption_key_id",
    "encryption_recipients", "file_size", "raw_size", "progress", "checksum", "tables_included",
    "engine_info", "files_included", "notes", "proof", "proof_at",
)  # fmt: skip


class NotRecorded(Exception):
    """Every copy was stored, but the run could not be recorded as a success; its copies are
    removed (a copy never outlives a run that is not SUCCESS) and the run fails with this message."""


class CatalogUnreachable(Exception):
    """A run lost the catalog database and could not record its failure even on new connections
    (CATALOG_RETRY_DELAYS): its stored copies are removed, its row stays RUNNING until the watch
    reaps it. The message is one line for the operator."""


def supports_type(target: Target, backup_type: str) -> bool:
    if run_refusal(target):
        return False
    if backup_type == "configuration":
        return bool(target.config_paths)
    return backup_type in get_engine(target.engine).supported_types


def type_problem(target: Target, backup_type: str) -> str:
    """Why ``target`` cannot make ``backup_type`` backups, or "" when it can."""
    if supports_type(target, backup_type):
        return ""
    if run_refusal(target):  # external: another tool writes its backups (backups.watching)
        return run_refusal(target)
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


def queue_backup(target: Target, *, backup_type: str = "full", initiated_by: str = "") -> Backup:
    """A PENDING row for a backup a worker will run (``run_backup(target, queued=row)``), so the
    person who asked gets its id at once and can follow it. Raises ServiceError, recording
    nothing, where :func:`run_backup` would. A row no worker takes is ended FAILED by the watch
    after BACKUPSITE_QUEUED_STALE_HOURS (``reap_stale_runs``)."""
    refusal = run_refusal(target)
    if refusal:
        raise ServiceError(refusal)
    return _new_row(target, backup_type, None, target.compression, None, initiated_by)


def _new_row(
    target: Target,
    backup_type: str,
    schedule: ScheduleInfo | None,
    compression: str,
    retention_days: int | None,
    initiated_by: str,
) -> Backup:
    if retention_days is None:
        retention_days = target.retention.get("retention_days")
    return Backup.objects.create(
        target=target,
        schedule_id=schedule.pk if schedule is not None else None,
        backup_type=backup_type,
        backup_name=_backup_name(target, backup_type),
        compression=compression,
        retention_days=retention_days,
        initiated_by=initiated_by,
    )


def run_backup(
    target: Target,
    *,
    backup_type: str = "full",
    storages: Sequence[Storage] | None = None,
    compression: str | None = None,
    schedule: ScheduleInfo | None = None,
    retention_days: int | None = None,
    initiated_by: str = "",
    progress: ProgressCallback | None = None,
    queued: Backup | None = None,
) -> Backup:
    """Back up ``target`` once and return its Backup row (SUCCESS, FAILED or SKIPPED): the
    ``queued`` row of :func:`queue_backup` when given (returned untouched when it is no longer
    PENDING: the watch ended it, or another worker took it), else a new one.

    Never raises for a failed backup: the failure is recorded on the row and its steps. A run
    is SUCCESS only when every copy is stored, re-read, and matches the streamed size and
    SHA-256, and its manifest is stored beside it.

    Raises ServiceError, recording nothing, for a target Backupsite does not back up itself
    (``engine = "external"``: it adopts what another tool writes).
    """
    refusal = run_refusal(target)
    if refusal:
        raise ServiceError(refusal)
    if queued is not None:
        backup = queued
        backup.refresh_from_db()
        if backup.status != BackupStatus.PENDING:
            logger.warning("queued backup %s of %s is %s: not run", backup.pk, target.name, backup.status)
            return backup
    else:
        compression = compression or target.compression
        backup = _new_row(target, backup_type, schedule, compression, retention_days, initiated_by)
    if not claim(backup):
        return backup
    with log_context(backup_id=backup.pk, target=target.name):  # on every line of the run (LOG_FORMAT=json)
        logger.info("backup %s of target %s started", backup.pk, target.name)
        try:
            with Heartbeat(
                Backup.objects.filter(pk=backup.pk, status=BackupStatus.RUNNING), f"backup {backup.pk}"
            ):
                _execute(backup, target, storages, schedule, progress)
        except BaseException as exc:
            recorded = _fail(backup, exc)  # raises CatalogUnreachable when the catalog stays away
            if not isinstance(exc, Exception):
                if recorded:
                    notify_backup(backup, schedule=schedule)  # interrupted (SIGTERM, Ctrl-C): still say so
                raise
            if not recorded:
                return backup  # the watch ended it meanwhile, and sent its alert
        notify_backup(backup, schedule=schedule)  # after the outcome is saved; it never raises
    return backup


def _backup_name(target: Target, backup_type: str) -> str:
    return f"{target.name}-{backup_type}-{timezone.now():%Y%m%dT%H%M%SZ}"


def _execute(
    backup: Backup,
    target: Target,
    storages: Sequence[Storage] | None,
    schedule: ScheduleInfo | None,
    progress: ProgressCallback | None,
) -> None:
    with record_step(backup, "validate") as step:
        engine, connection, rows = _prepare(backup, target, storages)
        encryption = keys.encryption_for(target, schedule)
        step.message = f"engine {engine.key}; storages: {', '.join(row.name for row in rows)}"
        if encryption is not None:
            backup.encryption = keys.AGE
            backup.encryption_key_id = encryption.key.fingerprint
            backup.encryption_recipients = encryption.recipients
            step.message += f"; encrypted: {encryption.describe()}"
        backup.fingerprint = unchanged.fingerprint(engine, connection, target, rows, backup)
        previous = unchanged.unchanged_since(backup, target) if target.skip_unchanged else None
        if previous is None:
            opened = destinations.open_destinations(backup, rows)
        else:
            step.message += f"; unchanged since backup {previous.pk}"
    if previous is not None:
        unchanged.skip_unchanged(backup, previous)
        return

    base_info = chains.link_to_previous(backup) if backup.backup_type == "incremental" else None
    backup.file_path = _object_path(backup, engine, schedule)
    options = DumpOptions(
        backup_type=backup.backup_type,
        compression=backup.compression,
        scratch_dir=scratch_dir(),
        previous=base_info,
    )
    try:
        with transaction.atomic():  # one write to the catalog: the run's name and its copies' names
            backup.save(
                update_fields=[
                    "file_path", "fingerprint", "base", "backup_type", "backup_name",
                    "encryption", "encryption_key_id", "encryption_recipients",
                ]
            )  # fmt: skip
            destinations.name_copies(opened, backup.file_path)
        result, info = _stream(
            backup, engine, connection, FanOut(backup, opened), options, progress, encryption
        )
        _confirm_and_describe(backup, engine, opened, result, info, schedule)
        _record_success(backup, opened)
    except BaseException:
        destinations.discard_all(opened)
        raise
    finally:
        destinations.close_all(opened)
    logger.info("backup %s of target %s succeeded: %s bytes", backup.pk, target.name, backup.file_size)


def _record_success(backup: Backup, opened: list[Destination]) -> None:
    """End the run as SUCCESS and save it with its copies' outcomes, in one transaction. Called
    inside the stream's ``try``: a failure here (a ``retention_days`` written around the checks
    that overflows the expiry, a lost database) removes the committed copies and their manifests
    like any other failure."""
    try:
        ended = backup.finish(BackupStatus.SUCCESS)
        backup.proof, backup.proof_at = Proof.STORED, backup.completed_at  # every copy confirmed
        with transaction.atomic():
            destinations.record_outcomes(opened)
            backup.save(update_fields=[*ended, *OUTCOME_FIELDS])
    except Exception as exc:
        why = (
            f"retention_days {backup.retention_days} puts its expiry past the last date the calendar holds"
            if isinstance(exc, OverflowError)
            else describe_error(exc)
        )
        raise NotRecorded(
            f"the backup was stored but could not be recorded as a success ({why}); "
            "its stored copies and manifests were removed"
        ) from exc


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


def _object_path(backup: Backup, engine: Engine, schedule: ScheduleInfo | None) -> str:
    extension = engine.file_extension + EXTENSIONS[backup.compression]
    if backup.encryption == keys.AGE:
        extension += AGE_EXTENSION
    sub = schedule.storage_path.strip("/") + "/" if schedule is not None and schedule.storage_path else ""
    return f"{sub}{backup.target.name}/{backup.backup_name}-{backup.pk}{extension}"


def _stream(
    backup: Backup,
    engine: Engine,
    connection: Connection,
    fan: FanOut,
    options: DumpOptions,
    progress: ProgressCallback | None,
    encryption: keys.Encryption | None,
) -> tuple[StreamResult, dict[str, Any]]:
    began = time.monotonic()

    def on_progress(raw: int, stored: int) -> None:
        # A dump shorter than one progress interval (most scheduled runs of small databases)
        # writes no progress: its row gets the final count with the outcome.
        if time.monotonic() - began >= settings.BACKUPSITE_PROGRESS_INTERVAL:
            Backup.objects.filter(pk=backup.pk).update(progress=raw)
        if progress is not None:
            progress(raw, stored)

    fan.open(backup.file_path)
    with record_step(backup, "dump") as step:
        opening = time.perf_counter()
        with engine.dump(connection, options) as dump:
            opening = time.perf_counter() - opening  # the engine's connections and snapshot
            result = stream_backup(
                dump.stream,
                [fan],
                backup.compression,
                extra_transforms=[AgeEncryptor(encryption.recipients)] if encryption is not None else (),
                on_progress=on_progress,
                chunk_size=settings.BACKUPSITE_CHUNK_SIZE,
                progress_interval=settings.BACKUPSITE_PROGRESS_INTERVAL,
            )
            streamed = time.perf_counter()
        finishing = time.perf_counter() - streamed  # the tool's exit, the engine's own checks
        step.bytes = result.raw_size
        step.message = dump_profile(result, engine.label, opening, finishing)
    ratio = result.size / result.raw_size if result.raw_size else 0
    compressed = f"{backup.compression}: {result.size} bytes ({ratio:.1%} of the dump)"
    if encryption is not None:
        compressed += f", encrypted ({encryption.describe()})"
    record_done(backup, "compress", compressed, result.size)
    fan.commit()
    return result, dict(dump.info)


def _confirm_and_describe(
    backup: Backup,
    engine: Engine,
    opened: list[Destination],
    result: StreamResult,
    info: dict[str, Any],
    schedule: ScheduleInfo | None,
) -> None:
    with record_step(backup, "verify") as step:
        destinations.confirm_all(opened, backup.file_path, result.size, result.sha256)
        good = [d for d in opened if d.confirmed]
        if not good:
            raise StorageError("no copy was stored and confirmed: " + "; ".join(d.failure for d in opened))
        step.bytes = result.size
        step.message = (
            f"{len(good)} cop{'y' if len(good) == 1 else 'ies'} re-read: size and sha256 match"
            + "".join(f"; failed: {d.failure}" for d in opened if not d.confirmed)
        )
    destinations.retry_failed_copies(backup, opened, good[0], result)
    backup.file_size = result.size
    backup.raw_size = result.raw_size
    backup.progress = result.raw_size
    backup.checksum = result.sha256
    backup.tables_included = list(info.get("tables", []))
    backup.engine_info = chains.catalog_info(info)
    backup.files_included = list(info.get("roots", {}).values()) or list(info.get("config_paths", []))
    with record_step(backup, "manifest") as step:
        manifest = json.dumps(
            build_manifest(backup, engine, info, schedule.name if schedule is not None else None),
            indent=2,
            sort_keys=True,
        ).encode()
        destinations.store_manifests(opened, backup.file_path + MANIFEST_SUFFIX, manifest)
        step.message = f"{backup.file_path}{MANIFEST_SUFFIX}"
    optional_failures = [d.failure for d in opened if not d.confirmed]
    if optional_failures:
        notes = [backup.notes] if backup.notes else []
        backup.notes = "; ".join(
            notes + [f"optional copy failed: {failure}" for failure in optional_failures]
        )


def _fail(backup: Backup, exc: BaseException) -> bool:
    """Record ``exc`` on the row as FAILED. A lost catalog connection (the error, or the save of
    another error) is retried on new connections; False when the watch had ended the run by then."""
    lost = _catalog_error(exc)
    if lost is not None:
        message = (
            f"the catalog database stopped answering during the run ({_first_line(lost)}); "
            "nothing it stored was kept"
        )
    else:
        message = secrets.redact(str(exc) if isinstance(exc, NotRecorded) else describe_error(exc))
    if lost is None and not isinstance(exc, EngineError | StorageError | secrets.SecretError | WorkerLost):
        logger.error(
            "backup %s of target %s failed: %s", backup.pk, backup.target.name, message, exc_info=exc
        )
    else:
        logger.warning("backup %s of target %s failed: %s", backup.pk, backup.target.name, message)
    backup.error_message = message
    fields = [*backup.finish(BackupStatus.FAILED), "error_message"]
    if lost is None:
        try:
            backup.save(update_fields=fields)
            return True
        except (OperationalError, InterfaceError) as save_error:
            lost = save_error
    return _record_failure_again(backup, fields, lost)


def _record_failure_again(backup: Backup, fields: list[str], lost: BaseException) -> bool:
    """Record the failure on a new connection (a broken one never recovers), retrying while the
    catalog restarts; also end the steps and copies the lost connection left open."""
    for delay in (0.0, *CATALOG_RETRY_DELAYS):
        time.sleep(delay)
        connection.close()
        try:
            with transaction.atomic():
                ended = Backup.objects.filter(pk=backup.pk, status=BackupStatus.RUNNING).update(
                    **{name: getattr(backup, name) for name in fields}
                )
                backup.steps.filter(status=StepStatus.RUNNING).update(
                    status=StepStatus.FAILED, message=backup.error_message, completed_at=backup.completed_at
                )
                backup.copies.filter(status=CopyStatus.PENDING).update(
                    status=CopyStatus.FAILED, error_message=backup.error_message
                )
            return bool(ended)
        except (OperationalError, InterfaceError) as exc:
            lost = exc
    raise CatalogUnreachable(
        f"backup {backup.pk} of target {backup.target.name} failed and the catalog database cannot "
        f"record it ({_first_line(lost)}); nothing it stored was kept; the next watch "
        "marks it failed"
    )


def _catalog_error(exc: BaseException) -> BaseException | None:
    """The first lost-connection error of the catalog in ``exc``'s chain (the cause, not the
    "connection is closed" of every later query), or None."""
    found = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OperationalError | InterfaceError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def _first_line(exc: BaseException) -> str:
    return secrets.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
