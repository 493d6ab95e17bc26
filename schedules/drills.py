"""Scheduled restore drills in beat: a target with ``drill`` set (cron) and active owns exactly
one django-celery-beat PeriodicTask (``target-drill:<pk>``) that sends ``backups.tasks.drill_target``
to the target's queue on that cron in the target's timezone; any other target owns none. The
core knows nothing of beat: this app keeps it in step when a target is saved or deleted and
after each configuration apply."""

from __future__ import annotations

import json
import logging

from django_celery_beat.models import PeriodicTask

from backups import services as backup_services
from backups.models import Target

from .cron import CronError, crontab_row, parse_cron

logger = logging.getLogger(__name__)

TASK = "backups.tasks.drill_target"
PREFIX = "target-drill:"


def drill_task_name(target_id: int) -> str:
    return f"{PREFIX}{target_id}"


def sync_drill_task(target: Target) -> PeriodicTask | None:
    """Create or update ``target``'s drill PeriodicTask (its cron in the target's timezone, kwargs
    holding only the target id, the target's queue), or delete it when the target is inactive
    or has no drill. Returns the task, or None when there is none. Saving or deleting the model
    tells beat it changed."""
    if not (target.is_active and target.drill.strip()):
        remove_drill_task(target.pk)
        return None
    try:
        cron = parse_cron(target.drill)
    except CronError as exc:  # written around the admin's and the file's checks (a shell)
        logger.error("target %s: drill %r not scheduled: %s", target.name, target.drill, exc)
        remove_drill_task(target.pk)
        return None
    crontab = crontab_row(cron, target.timezone)
    task, _ = PeriodicTask.objects.update_or_create(
        name=drill_task_name(target.pk),
        defaults={
            "task": TASK,
            "crontab": crontab,
            "interval": None,
            "kwargs": json.dumps({"target_id": target.pk}),
            "queue": backup_services.queue_for(target),  # workers near the target (and its sandbox)
            "exchange": None,
            "routing_key": None,
            "enabled": True,
            "description": f"Restore drill of {target.name} ({target.drill} {target.timezone})",
        },
    )
    return task


def remove_drill_task(target_id: int) -> None:
    PeriodicTask.objects.filter(name=drill_task_name(target_id)).delete()


def sync_all_drill_tasks() -> dict[str, int]:
    """Reconcile beat with every target's drill (after a configuration apply, which may have
    changed or deactivated targets with bulk updates); delete drill tasks of targets without
    one. Returns counts."""
    drilled = [
        target for target in Target.objects.filter(is_active=True).exclude(drill="") if target.drill.strip()
    ]
    for target in drilled:
        sync_drill_task(target)
    wanted = {drill_task_name(target.pk) for target in drilled}
    orphans = PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=wanted)
    removed, _ = orphans.delete()
    return {"drills": len(wanted), "drills_removed": removed}
