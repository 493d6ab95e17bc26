"""Celery tasks: ids in, one service call, nothing else."""

from __future__ import annotations

from backupsite.celery import app

from . import services
from .models import Target


# Bound to the project's app explicitly (not shared_task): a web process that queues a task
# must use our broker settings, and the app is no longer imported at every start-up.
@app.task(acks_late=True)
def run_target_backup(target_id: int, backup_type: str = "full", initiated_by: str = "task") -> int:
    """Back up one target; returns the Backup id (its row records the outcome)."""
    target = Target.objects.get(pk=target_id)
    return services.run_backup(target, backup_type=backup_type, initiated_by=initiated_by).pk
