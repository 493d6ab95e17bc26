"""/api/v1/targets: the targets one may see with their status as the dashboard computes it, run
now, and what retention would keep and delete now."""

from __future__ import annotations

import re

from django.db.models import Max
from django.http import HttpRequest
from ninja import Router, Status

from backups import services
from backups.models import Backup, Target
from backups.tasks import run_target_backup

from .auth import require, token_of, visible_target_ids
from .errors import conflict, invalid, not_found
from .schemas import ERRORS, ErrorOut, RetentionOut, RunIn, RunOut, TargetList, TargetOut

router = Router(tags=["targets"])
NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")  # a target's name is a slug


def runnable(target: Target) -> bool:
    """Whether Backupsite makes the target's backups (not an external target it only watches)."""
    return not services.run_refusal(target)


def target_named(request: HttpRequest, name: str) -> Target:
    """The target ``name`` if the caller may see it; 404 otherwise (unknown or not theirs)."""
    target = Target.objects.filter(name=name).first() if NAME.fullmatch(name) else None
    if target is None:
        raise not_found(f"target {name}")
    require(request, "view", target)
    return target


def summaries(ids: list[int] | None) -> list[TargetOut]:
    """The dashboard's facts of the targets ``ids`` (None: all), in a fixed number of queries."""
    board = services.dashboard(target_ids=ids)
    backups = Backup.objects.all() if ids is None else Backup.objects.filter(target_id__in=ids)
    newest = dict(backups.values("target_id").annotate(newest=Max("id")).values_list("target_id", "newest"))
    return [
        TargetOut(
            name=summary.target.name,
            engine=summary.target.engine,
            tags=list(summary.target.tags or ()),
            status=summary.status,
            last_success_at=summary.last_success_at,
            last_backup_id=newest.get(summary.target.pk),
            next_run_at=summary.schedule.next_run_at,
            stored_bytes=summary.stored_bytes,
            runnable=runnable(summary.target),
        )
        for summary in board.targets
    ]


@router.get("", response={200: TargetList, ERRORS: ErrorOut}, summary="The targets you may see")
def list_targets(request: HttpRequest) -> TargetList:
    visible = visible_target_ids(request)
    return TargetList(items=summaries(None if visible is None else sorted(visible)))


@router.get("/{name}", response={200: TargetOut, ERRORS: ErrorOut}, summary="One target")
def get_target(request: HttpRequest, name: str) -> TargetOut:
    return summaries([target_named(request, name).pk])[0]


@router.post("/{name}/run", response={202: RunOut, ERRORS: ErrorOut}, summary="Run a backup now")
def run_now(request: HttpRequest, name: str, payload: RunIn | None = None) -> Status[RunOut]:
    """Queue a backup of the target (the web's Run now): its row is written PENDING at once, so
    the answer names it; a worker of the target's queue runs it."""
    target = target_named(request, name)
    backup_type = (payload or RunIn()).backup_type
    require(request, "run", target, audit="backup.run", message=f"you may not run backups of {target.name}")
    refusal = services.run_refusal(target)
    if refusal:
        raise conflict(refusal)
    try:
        problem = services.type_problem(target, backup_type)
    except (services.EngineError, KeyError, ImportError):
        raise conflict(f"target {target.name}: its engine {target.engine!r} is not available here") from None
    if problem:
        raise invalid("backup_type", f"backup_type: {problem}")
    initiated_by = f"web:{request.user.get_username()}"  # re-checked by the worker, as the web's
    backup = services.queue_backup(target, backup_type=backup_type, initiated_by=initiated_by)
    run_target_backup.apply_async(
        (target.pk,),
        {"backup_type": backup_type, "initiated_by": initiated_by, "backup_id": backup.pk},
        queue=services.queue_for(target),
    )
    services.record_audit(
        "backup.run",
        request=request,
        obj=target,
        details={"via": "api", "key_id": token_of(request).key_id, "backup_type": backup_type},
    )
    backup.refresh_from_db(fields=["status"])  # an eager or quick worker may have run it already
    return Status(
        202, RunOut(backup_id=backup.pk, status=backup.status.upper(), url=f"/api/v1/backups/{backup.pk}")
    )


@router.get(
    "/{name}/retention-preview",
    response={200: RetentionOut, ERRORS: ErrorOut},
    summary="What retention would keep and delete now",
)
def retention_preview(request: HttpRequest, name: str) -> RetentionOut:
    plan = services.plan_cleanup(target_named(request, name))

    def moment(backup: Backup) -> object:
        return services.backup_info(backup).timestamp

    return RetentionOut.model_validate(
        {
            "keep": [{"id": b.pk, "created_at": moment(b), "reasons": list(why)} for b, why in plan.keep],
            "delete": [{"id": b.pk, "created_at": moment(b), "reason": why} for b, why in plan.delete],
            "refused": plan.refused,
            "errors": plan.errors,
        }
    )
