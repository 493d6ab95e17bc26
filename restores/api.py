"""The restore endpoints of /api/v1/ (added to the API by backupsite/urls.py): ask for a restore
of a backup, and follow it.

The same rules as the restore page: the caller must hold the restore right on the backup's
target and on the destination; into a protected destination the request waits for a second
person's approval (four eyes: status AWAITING, approved or rejected on the web); a refused
request changes nothing and is audited."""

from __future__ import annotations

import functools
from datetime import datetime

from django.db import transaction
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from backups.api.auth import may, require, token_of
from backups.api.errors import ApiError, conflict, invalid, not_found
from backups.api.history import visible_backup
from backups.api.schemas import ERRORS, NAME_PATTERN, TEXT_PATTERN, ErrorOut, Id
from backups.api.targets import target_named
from backups.models import Backup, Target
from backups.services import queue_for, record_audit, run_refusal

from . import approvals, services
from .models import RestoreLog
from .tasks import restore_backup_task

router = Router(tags=["restores"])


class RestoreIn(Schema):
    to: str | None = Field(
        None, pattern=NAME_PATTERN, description="The destination target; default the backup's own."
    )
    database: str | None = Field(
        None,
        max_length=1024,
        pattern=TEXT_PATTERN,
        description="The destination's database, as a confirmation (optional).",
    )
    reason: str | None = Field(
        None,
        max_length=approvals.REASON_MAX,
        pattern=TEXT_PATTERN,
        description="Why (protected destinations: for the approver).",
    )


class RestoreAccepted(Schema):
    restore_id: int
    status: str = Field(description="RUNNING (queued), or AWAITING a second person's approval")
    url: str


class RestoreOut(Schema):
    id: int
    backup_id: int
    to: str | None
    status: str = Field(description="AWAITING, RUNNING, SUCCESS; FAILED, REJECTED and EXPIRED are failures")
    phase: str
    bytes_done: int
    error_message: str
    created_at: datetime
    completed_at: datetime | None


@router.post(
    "/backups/{backup_id}/restore",
    response={202: RestoreAccepted, ERRORS: ErrorOut},
    summary="Restore a backup",
)
def restore(request: HttpRequest, backup_id: Id, payload: RestoreIn) -> Status[RestoreAccepted]:
    backup = visible_backup(request, backup_id)
    destination = _destination(request, backup, payload.to)
    for target in (backup.target, destination):
        require(
            request,
            "restore",
            target,
            audit="restore.start",
            obj=backup,
            message=f"you may not restore backups of {backup.target.name} into {destination.name}",
        )
    refusal = run_refusal(backup.target) or run_refusal(destination)
    if refusal:
        raise conflict(refusal)
    word, what = services.confirmation_word(destination)
    if payload.database is not None and payload.database.strip() != word:
        raise invalid("database", f"database: the {what} is {word}; restoring elsewhere is not supported")
    by = f"web:{request.user.get_username()}"  # re-checked by the worker, as the web's
    protected = approvals.needs_approval(destination)
    action = "restore.request" if protected else "restore.start"
    try:
        if protected:
            reason = (
                payload.reason or ""
            ).strip() or f"asked through the API ({token_of(request).name or 'token'})"
            log = approvals.request_approval(backup, destination, typed=word, by=by, reason=reason)
        else:
            log = services.start_restore(backup, destination, initiated_by=by, confirmed_by=by)
    except services.RestoreRefused as exc:
        record_audit(action, request=request, obj=backup, outcome="refused", details={"reason": str(exc)})
        raise conflict(str(exc)) from None
    if not protected:
        transaction.on_commit(
            functools.partial(restore_backup_task.apply_async, (log.pk,), queue=queue_for(destination))
        )
    record_audit(
        action,
        request=request,
        obj=log,
        details={
            "backup": backup.pk,
            "into": destination.name,
            "via": "api",
            "key_id": token_of(request).key_id,
        },
    )
    return Status(
        202, RestoreAccepted(restore_id=log.pk, status=log.status.upper(), url=f"/api/v1/restores/{log.pk}")
    )


def _destination(request: HttpRequest, backup: Backup, name: str | None) -> Target:
    if backup.backup_type == "configuration":
        raise conflict(
            f"backup {backup.pk} is a configuration backup: restore it into a directory "
            "(manage.py backup_restore --to-dir DIR)"
        )
    if not name:
        return backup.target
    try:
        return target_named(request, name)
    except ApiError:  # unknown, or not the caller's to see: the same answer
        raise invalid("to", f"to: there is no target {name} (or you may not see it)") from None


@router.get("/restores/{restore_id}", response={200: RestoreOut, ERRORS: ErrorOut}, summary="One restore")
def get_restore(request: HttpRequest, restore_id: Id) -> RestoreOut:
    log = RestoreLog.objects.select_related("backup__target", "destination").filter(pk=restore_id).first()
    if log is None or not any(
        may(request, "view", target) for target in (log.backup.target, log.destination) if target is not None
    ):
        raise not_found(f"restore {restore_id}")
    return RestoreOut(
        id=log.pk,
        backup_id=log.backup_id,
        to=log.destination.name if log.destination else None,
        status=log.status.upper(),
        phase=log.phase,
        bytes_done=log.progress,
        error_message=log.error_message,
        created_at=log.created_at,
        completed_at=log.completed_at,
    )
