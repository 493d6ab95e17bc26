"""/api/v1/backups: the runs of the targets one may see, newest first with cursor pages; one
run with its steps and copies; verify; a temporary download URL."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field as SchemaField
from ninja import Query, Router, Schema, Status

from backups import services
from backups.models import Backup, BackupStatus, BackupStep, StepStatus
from backups.tasks import verify_backup_task

from .auth import require, token_of, visible_target_ids
from .errors import conflict, invalid, not_found
from .schemas import (
    ERRORS,
    MAX_ID,
    NAME_PATTERN,
    BackupDetailOut,
    BackupPage,
    CopyOut,
    ErrorOut,
    Id,
    ProgressOut,
    StepOut,
    VerifyIn,
    VerifyOut,
)

router = Router(tags=["backups"])
STATUSES = {status.upper(): status for status in BackupStatus.values}


class BackupFilters(Schema):
    target: str | None = SchemaField(None, pattern=NAME_PATTERN, description="A target's name")
    status: str | None = SchemaField(None, max_length=16, description="SUCCESS, FAILED, RUNNING, ...")
    since: datetime | None = SchemaField(None, description="Created at or after (ISO 8601)")
    until: datetime | None = SchemaField(None, description="Created before (ISO 8601)")
    limit: int = SchemaField(50, ge=1, le=200)
    cursor: str | None = SchemaField(None, max_length=200, description="next_cursor of the previous page")


def backup_out(backup: Backup) -> dict[str, object]:
    return {
        "id": backup.pk,
        "target": backup.target.name,
        "status": backup.status.upper(),
        "backup_type": backup.backup_type,
        "created_at": backup.created_at,
        "started_at": backup.started_at,
        "completed_at": backup.completed_at,
        "size_bytes": backup.file_size,
        "sha256": backup.checksum or None,
        "compression": backup.compression,
        "encrypted": backup.encryption != "none",  # "age" when encrypted
        "error_message": backup.error_message,
        "proof": backup.proof or None,
    }


def visible_backup(request: HttpRequest, backup_id: int) -> Backup:
    backup = Backup.objects.select_related("target").filter(pk=backup_id).first()
    if backup is None:
        raise not_found(f"backup {backup_id}")
    ids = visible_target_ids(request)
    if ids is not None and backup.target_id not in ids:
        raise not_found(f"backup {backup_id}")
    return backup


def require_stored(backup: Backup, verb: str) -> None:
    """409 unless ``backup`` is a successful backup retention has not deleted (``verb``: what
    the caller would do with it, for the message)."""
    if backup.status != BackupStatus.SUCCESS or backup.deleted_at is not None:
        state = "deleted by retention" if backup.deleted_at else backup.status.upper()
        raise conflict(f"backup {backup.pk} is {state}; only stored successful backups can be {verb}")


def aware(moment: datetime | None) -> datetime | None:
    if moment is None or timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment)


def encode_cursor(backup: Backup) -> str:
    raw = json.dumps([backup.created_at.isoformat(), backup.pk]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def after_cursor(rows: QuerySet[Backup], cursor: str) -> QuerySet[Backup]:
    """The rows older than the cursor's (newest first: created_at, then id)."""
    try:
        created, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(created)
        if not isinstance(pk, int) or not 0 < pk <= MAX_ID or timezone.is_naive(moment):
            raise ValueError(pk)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid("cursor", "cursor: not a cursor this API gave; pass next_cursor unchanged") from None
    return rows.filter(Q(created_at__lt=moment) | Q(created_at=moment, pk__lt=pk))


@router.get("", response={200: BackupPage, ERRORS: ErrorOut}, summary="Backups, newest first")
def list_backups(request: HttpRequest, filters: Query[BackupFilters]) -> BackupPage:
    rows = Backup.objects.select_related("target").order_by("-created_at", "-id")
    ids = visible_target_ids(request)
    if ids is not None:
        rows = rows.filter(target_id__in=ids)
    if filters.target:
        rows = rows.filter(target__name=filters.target)
    if filters.status:
        status = STATUSES.get(filters.status.upper())
        if status is None:
            raise invalid("status", f"status: one of {', '.join(STATUSES)}")
        rows = rows.filter(status=status)
    if filters.since:
        rows = rows.filter(created_at__gte=aware(filters.since))
    if filters.until:
        rows = rows.filter(created_at__lt=aware(filters.until))
    if filters.cursor:
        rows = after_cursor(rows, filters.cursor)
    page = list(rows[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    return BackupPage.model_validate(
        {
            "items": [backup_out(backup) for backup in page],
            "next_cursor": encode_cursor(page[-1]) if more else None,
        }
    )


@router.get("/{backup_id}", response={200: BackupDetailOut, ERRORS: ErrorOut}, summary="One backup")
def get_backup(request: HttpRequest, backup_id: Id) -> BackupDetailOut:
    backup = visible_backup(request, backup_id)
    steps = list(BackupStep.objects.filter(backup=backup).order_by("started_at", "id"))
    copies = backup.copies.select_related("storage").order_by("storage__name")
    progress = None
    if backup.status in (BackupStatus.PENDING, BackupStatus.RUNNING):
        running = [step.name for step in steps if step.status == StepStatus.RUNNING]
        progress = ProgressOut(bytes_done=backup.progress or 0, phase=running[-1] if running else None)
    return BackupDetailOut.model_validate(
        {
            **backup_out(backup),
            "progress": progress,
            "steps": [
                StepOut(
                    name=step.name,
                    status=step.status.upper(),
                    started_at=step.started_at,
                    completed_at=step.completed_at,
                    message=step.message,
                )
                for step in steps
            ],
            "copies": [
                CopyOut(
                    storage=copy.storage.name,
                    status=copy.status.upper(),
                    size_bytes=copy.size,
                    path=copy.path,
                )
                for copy in copies
            ],
        }
    )


@router.post("/{backup_id}/verify", response={202: VerifyOut, ERRORS: ErrorOut}, summary="Verify a backup")
def verify(request: HttpRequest, backup_id: Id, payload: VerifyIn | None = None) -> Status[VerifyOut]:
    """Queue a verification: every copy re-read against its SHA-256 (``deep``: a restore too)."""
    deep = (payload or VerifyIn()).deep
    backup = visible_backup(request, backup_id)
    require(
        request,
        "verify",
        backup.target,
        audit="backup.verify",
        obj=backup,
        message=f"you may not verify backups of {backup.target.name}",
    )
    require_stored(backup, "verified")
    initiated_by = f"web:{request.user.get_username()}"  # re-checked by the worker, as the web's
    verify_backup_task.apply_async((backup.pk, deep, initiated_by), queue=services.queue_for(backup.target))
    services.record_audit(
        "backup.verify",
        request=request,
        obj=backup,
        details={"deep": deep, "via": "api", "key_id": token_of(request).key_id},
    )
    return Status(202, VerifyOut(backup_id=backup.pk, queued=True))
