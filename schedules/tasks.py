"""Celery tasks of schedules: ids in, one service call."""

from __future__ import annotations

from backupsite.celery import app

from . import services


@app.task(acks_late=True, ignore_result=True)
def run_schedule(schedule_id: int) -> int | None:
    """One firing of a schedule; returns the Backup id, or None when the slot already ran."""
    backup = services.run_schedule(schedule_id)
    return backup.pk if backup is not None else None


@app.task(ignore_result=True)
def watch() -> None:
    """Every minute (beat): reap runs and restores whose worker died, look for what did not
    happen, and queue the day's verifications."""
    services.watch()
    for backup_id in services.due_verifications():
        # On the target's queue, not the watch's: the verification reads its copies and
        # restores them into its sandbox, the work of the workers near its database.
        verify_backup.apply_async((backup_id,), queue=services.backup_queue(backup_id))


@app.task(acks_late=True, ignore_result=True)
def verify_backup(backup_id: int) -> bool | None:
    """Deep-verify one backup; the outcome is recorded on its row."""
    return services.verify_scheduled(backup_id)
