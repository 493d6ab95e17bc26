"""The schedule endpoints of /api/v1/ (added to the API by backupsite/urls.py): list the
schedules of the targets one may see; pause and resume one.

Pausing and resuming change the schedule, which the project leaves to Administrators (of the
target's tag, or everywhere): the same right as editing it in the admin. A schedule the
configuration file defines is changed in that file, never here: the next apply would undo it."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema

from backups.api.auth import require, token_of, visible_target_ids
from backups.api.errors import conflict, not_found
from backups.api.schemas import ERRORS, ErrorOut, Id
from backups.services import record_audit

from . import services
from .models import BackupSchedule

router = Router(tags=["schedules"])


class ScheduleOut(Schema):
    id: int
    name: str
    target: str
    cron: str
    timezone: str
    enabled: bool
    next_run_at: datetime | None


class ScheduleList(Schema):
    items: list[ScheduleOut]


def schedule_out(schedule: BackupSchedule) -> ScheduleOut:
    return ScheduleOut(
        id=schedule.pk,
        name=schedule.name,
        target=schedule.target.name,
        cron=schedule.cron_expression,
        timezone=schedule.timezone,
        enabled=schedule.is_active,
        next_run_at=schedule.next_run_at,
    )


@router.get("", response={200: ScheduleList, ERRORS: ErrorOut}, summary="The schedules of your targets")
def list_schedules(request: HttpRequest) -> ScheduleList:
    rows = BackupSchedule.objects.select_related("target").order_by("name")
    ids = visible_target_ids(request)
    if ids is not None:
        rows = rows.filter(target_id__in=ids)
    return ScheduleList(items=[schedule_out(schedule) for schedule in rows])


@router.post(
    "/{schedule_id}/pause", response={200: ScheduleOut, ERRORS: ErrorOut}, summary="Pause a schedule"
)
def pause(request: HttpRequest, schedule_id: Id) -> ScheduleOut:
    return schedule_out(_set_active(request, schedule_id, False))


@router.post(
    "/{schedule_id}/resume", response={200: ScheduleOut, ERRORS: ErrorOut}, summary="Resume a schedule"
)
def resume(request: HttpRequest, schedule_id: Id) -> ScheduleOut:
    return schedule_out(_set_active(request, schedule_id, True))


def _set_active(request: HttpRequest, schedule_id: int, active: bool) -> BackupSchedule:
    schedule = BackupSchedule.objects.select_related("target").filter(pk=schedule_id).first()
    ids = visible_target_ids(request)
    if schedule is None or (ids is not None and schedule.target_id not in ids):
        raise not_found(f"schedule {schedule_id}")
    verb = "resume" if active else "pause"
    require(
        request,
        "configure",
        schedule.target,
        audit="config.change",
        obj=schedule,
        message=f"you may not {verb} schedules of {schedule.target.name}: it takes an Administrator",
    )
    if schedule.managed_by:
        raise conflict(
            f"schedule {schedule.name} is defined by {schedule.managed_by}: set is_active there and apply it"
        )
    if schedule.is_active != active:
        schedule.is_active = active
        schedule.save(update_fields=["is_active", "updated_at"])
        services.sync_periodic_task(schedule)  # beat stops (or starts) firing it; next_run_at follows
        schedule.refresh_from_db()
        record_audit(
            "config.change",
            request=request,
            obj=schedule,
            details={
                "model": "schedules.backupschedule",
                "change": f"{verb}d",
                "fields": ["is_active"],
                "via": "api",
                "key_id": token_of(request).key_id,
            },
        )
    return schedule
