"""Test servers for developers: a backup restored into a new database on a sandbox, masked, with
a database user of its own whose password is shown once and never stored; dropped after its TTL.

The password exists only in this process's memory and in the connection string returned to the
caller; it is remembered for redaction so no log line, error or audit detail can carry it."""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from datetime import datetime, timedelta
from urllib.parse import quote

from django.utils import timezone

from backups import services as backup_services
from backups.models import Backup, Target
from backups.services import (
    Connection,
    Heartbeat,
    ServiceError,
    connection_for,
    describe_error,
    log_context,
    redact,
)

from . import applying, reaping, sandbox
from .models import Provision, RestoreLog, RestoreStatus
from .progress import RestoreProgress
from .refusals import check_restorable

logger = logging.getLogger(__name__)

MAX_TTL = timedelta(days=30)
RESTORE_TYPE = "provision"
_SCHEMES = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


class ProvisionRefused(ServiceError):
    """The copy cannot be made as asked; nothing was created."""


_UNITS = {"min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str, field: str = "ttl") -> timedelta:
    """``90min``, ``24h``, ``7d``, ``2w``: more than nothing, at most 30 days; else
    :class:`ProvisionRefused` naming ``field`` and how to write it."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*(min|m|h|d|w)\s*", text)
    if not match:
        raise ProvisionRefused(
            f"{field}: {text!r} is not a duration; write e.g. 90min, 24h, 7d (at most 30d)"
        )
    ttl = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ProvisionRefused(f"{field}: {text.strip()} is out of range; give more than 0 and at most 30d")
    return ttl


def _identifier(text: str, limit: int) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "db"
    if not name[0].isalpha():
        name = "p_" + name
    return name[:limit].rstrip("_")


def new_names(target: Target) -> tuple[str, str]:
    """``<target>_<yyyymmdd>_<random>`` (the backup's target) for the database (PostgreSQL's 63 characters at most)
    and the same, with the target part shortened, for the user (MySQL's 32)."""
    day = timezone.localdate().strftime("%Y%m%d")
    random = secrets.token_hex(4)
    database = f"{_identifier(target.name, 40)}_{day}_{random}"
    user = f"{_identifier(target.name, 14)}_{day}_{random}"
    return database, user


def check_provisionable(backup: Backup, sandbox_target: Target, connection: Connection | None = None) -> None:
    """Raise :class:`ProvisionRefused` unless ``backup`` can be provisioned onto ``sandbox_target``
    (into ``connection``, the new database on it, when given: e.g. a ``restore_jobs`` spool that
    would not fit is refused for it before anything is read)."""
    engine = backup.target.engine
    if engine not in sandbox.ENGINES:
        raise ProvisionRefused(
            f"backup {backup.pk} is a {engine} backup; provisioning makes database copies for "
            "PostgreSQL and MySQL/MariaDB only"
        )
    if sandbox_target.engine != engine:
        raise ProvisionRefused(
            f"sandbox {sandbox_target.name} uses the {sandbox_target.engine} engine; backup {backup.pk} "
            f"is a {engine} backup. Choose a sandbox of the same engine."
        )
    try:
        check_restorable(backup, sandbox_target, connection)
    except ServiceError as exc:
        raise ProvisionRefused(str(exc)) from None


def connection_string(sandbox_target: Target, user: str, password: str, database: str) -> str:
    host = sandbox_target.host or "localhost"
    port = f":{sandbox_target.port}" if sandbox_target.port else ""
    scheme = _SCHEMES[sandbox_target.engine]
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}/{quote(database)}"


def provision(
    backup: Backup, sandbox_target: Target, *, ttl: timedelta, mask_sql: str | None = None, initiated_by: str
) -> tuple[Provision, str]:
    """Restore ``backup`` into a new database on ``sandbox_target``, run ``mask_sql`` there as
    the sandbox's own user, then create a user with rights on that database only. Returns the
    Provision and the connection string (with the password: show it once, store it nowhere).

    Raises :class:`ProvisionRefused` (nothing recorded) when it cannot start; any later failure
    drops what was created, ends the RestoreLog FAILED with the reason (the Provision row marked
    dropped, or with its drop_error for the sweep to retry), and raises ServiceError."""
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ProvisionRefused("ttl must be more than 0 and at most 30d (e.g. 24h, 7d)")
    database, user = new_names(backup.target)
    admin = connection_for(sandbox_target)
    target_connection = dataclasses.replace(admin, database=database)
    check_provisionable(backup, sandbox_target, target_connection)
    password = secrets.token_urlsafe(24)
    backup_services.remember_secret(password)  # redacted from every log line and error from now on
    log = RestoreLog.objects.create(
        backup=backup,
        destination=sandbox_target,
        restore_type=RESTORE_TYPE,
        status=RestoreStatus.RUNNING,
        initiated_by=initiated_by,
        **reaping.claim_fields(),  # a worker and a heartbeat: the reaper ends it if this process dies
        notes=f"into new database {database} on {sandbox_target.name}",
    )
    logger.info("provision of backup %s into %s on %s started", backup.pk, database, sandbox_target.name)
    # Listed before the database exists: a process killed midway leaves a row the TTL sweep
    # (or --drop) cleans up, not a nameless database on the sandbox.
    row = Provision.objects.create(
        restore=log,
        sandbox=sandbox_target,
        database=database,
        username=user,
        masked=bool(mask_sql and mask_sql.strip()),
        created_by=initiated_by,
        expires_at=timezone.now() + ttl,
    )
    beating = RestoreLog.objects.filter(pk=log.pk, status=RestoreStatus.RUNNING)
    try:
        with log_context(restore_id=log.pk, backup_id=backup.pk), Heartbeat(beating, f"provision {log.pk}"):
            tracker = RestoreProgress(log.pk)
            result = applying.restore_into(backup, sandbox_target, tracker, target_connection)
            if mask_sql and mask_sql.strip():
                sandbox.run_script(admin, database, mask_sql)  # before anyone else can log in
            sandbox.create_user(admin, database, user, password)
    except BaseException as exc:  # Ctrl-C or SIGTERM too: nothing left behind, then re-raised
        message = redact(describe_error(exc))
        try:
            sandbox.drop(admin, database, user)
        except Exception as cleanup:  # reported with the first error; the sweep tries again
            row.drop_error = redact(describe_error(cleanup))
            message += f"; database {database} and user {user} could not be dropped: {row.drop_error}"
        else:
            row.dropped_at = timezone.now()
            message += f"; database {database} and user {user} were dropped again"
        row.save(update_fields=["dropped_at", "drop_error"])
        _finish(log, RestoreStatus.FAILED, error=message)
        backup_services.record_audit(
            "restore.provision", obj=log, outcome="failure", username=initiated_by or None,
            details={"backup": backup.pk, "sandbox": sandbox_target.name, "error": message},
        )  # fmt: skip
        logger.warning("provision of backup %s failed: %s", backup.pk, message)
        if not isinstance(exc, Exception):
            raise
        raise ServiceError(f"provisioning failed: {message}") from None
    _finish(log, RestoreStatus.SUCCESS, notes=f"{result.message}; user {user}", tables=result.tables)
    row.expires_at = timezone.now() + ttl  # the TTL counts from when the copy can be used
    row.save(update_fields=["expires_at"])
    backup_services.record_audit(
        "restore.provision", obj=log, username=initiated_by or None,
        details={"backup": backup.pk, "sandbox": sandbox_target.name, "database": database,
                 "user": user, "masked": row.masked, "expires_at": row.expires_at.isoformat()},
    )  # fmt: skip
    logger.info("provisioned backup %s as %s on %s (user %s)", backup.pk, database, sandbox_target.name, user)
    return row, connection_string(sandbox_target, user, password, database)


def _finish(
    log: RestoreLog, status: str, *, error: str = "", notes: str = "", tables: list[str] | None = None
) -> None:
    log.status = status
    log.error_message = error
    if notes:
        log.notes = notes
    if tables is not None:
        log.tables_restored = tables
    log.completed_at = timezone.now()
    log.save()


def drop_provision(row: Provision, *, by: str) -> None:
    """Drop the copy's database and user (again is harmless). A sandbox that cannot be reached
    leaves the row listed with ``drop_error``; the next sweep tries again. Raises ServiceError then."""
    if row.dropped_at is not None:
        return
    try:
        sandbox.drop(connection_for(row.sandbox), row.database, row.username)
    except Exception as exc:
        row.drop_error = redact(describe_error(exc))
        row.save(update_fields=["drop_error"])
        backup_services.record_audit(
            "restore.provision_drop", obj=row.restore, outcome="failure", username=by or None,
            details={"database": row.database, "error": row.drop_error},
        )  # fmt: skip
        logger.warning("provision %s could not be dropped: %s", row.database, row.drop_error)
        raise ServiceError(
            f"{row.database} on {row.sandbox.name} was not dropped: {row.drop_error}"
        ) from None
    row.dropped_at = timezone.now()
    row.drop_error = ""
    row.save(update_fields=["dropped_at", "drop_error"])
    backup_services.record_audit(
        "restore.provision_drop", obj=row.restore, username=by or None,
        details={"database": row.database, "user": row.username, "sandbox": row.sandbox.name},
    )  # fmt: skip
    logger.info("provision %s on %s dropped by %s", row.database, row.sandbox.name, by)


def drop_expired(now: datetime | None = None) -> int:
    """Drop every provision past its ``expires_at`` whose restore has ended (a copy left by a
    killed process too, once the reaper ended its restore); returns how many were dropped (one
    that cannot be reached stays listed with its error and is tried again next time)."""
    moment = now or timezone.now()
    dropped = 0
    due = Provision.objects.filter(dropped_at__isnull=True, expires_at__lte=moment)
    # Not one still being restored: its process owns it; a dead one's restore is ended by the reaper.
    for row in due.exclude(restore__status=RestoreStatus.RUNNING).select_related("sandbox", "restore"):
        try:
            drop_provision(row, by="system:ttl")
        except ServiceError:
            continue
        dropped += 1
    return dropped


def live_provisions() -> list[Provision]:
    """Provisions not dropped yet, newest first."""
    return list(
        Provision.objects.filter(dropped_at__isnull=True).select_related("sandbox", "restore__backup__target")
    )
