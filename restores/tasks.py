"""Celery tasks: ids in, one service call, nothing else."""

from __future__ import annotations

from backupsite.celery import app

from . import provisioning, services


# Bound to the project's app explicitly, as backups.tasks is: the web process that queues it
# must use the project's broker settings.
@app.task(acks_late=True)
def restore_backup_task(restore_log_id: int) -> str | None:
    """Carry out a restore confirmed on the web page (its RestoreLog row is queued); returns its
    final status, or None when the row was already taken (a task delivered twice restores once)."""
    refusal = services.withdrawn_permission(restore_log_id)
    if refusal:
        return refusal
    log = services.run_restore(restore_log_id)
    return None if log is None else log.status


@app.task(acks_late=True)
def drop_expired_provisions() -> int:
    """Drop the provisioned copies past their TTL (beat, every 10 minutes); returns how many."""
    return provisioning.drop_expired()
