"""Who runs a restore, and what becomes of one whose worker died.

A worker that takes a restore records itself on the row (``worker``, host:pid) and touches
``heartbeat_at`` from a thread while the restore runs, as a backup run does. A RUNNING restore
whose process is gone (on this host) or whose heartbeat went silent for
``BACKUPSITE_HEARTBEAT_STALE_SECONDS`` (on any host) is ended FAILED "worker lost while
restoring", with what its engine guarantees about a destination left midway; the same rules as
``backups.runs.claims`` applies to backups. A queued restore (no worker yet) is never lost.
:func:`restores.services.reap_lost_restores` announces each one ended here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from backups.models import Target
from backups.services import process_gone, this_worker

from .models import RestoreLog, RestoreStatus

logger = logging.getLogger(__name__)

_STAGED = (
    "it restores into a staging directory (.NAME.restore-*) beside each destination directory and "
    "renames it into place only once checked, so each directory is either as it was or wholly "
    "restored (the previous one then kept as NAME.before-restore-TIME); remove a staging directory "
    "left beside it"
)
#: What each engine guarantees about a destination whose restore stopped midway (by engine key).
INTERRUPTED: dict[str, str] = {
    "sqlite": (
        "SQLite writes the restored database to a temporary file (.NAME.restore-*) beside it and "
        "swaps it in with one rename, so the database file is either as it was or wholly restored "
        "(the previous one then kept as NAME.before-restore-TIME); remove a temporary file left "
        "beside it"
    ),
    "files": f"the files engine: {_STAGED}",
    "configuration": f"a configuration restore: {_STAGED}",
    "postgresql": (
        "PostgreSQL restores run in one transaction that stops at the first error (options "
        "single_transaction and exit_on_error, both on by default), so the database is either as "
        "it was (a database the restore created stays, empty) or wholly restored; with either "
        "option off, some tables may be restored and others not"
    ),
    "mysql": "MySQL restores replay the dump table after table: some tables may be restored and others not",
    "mariadb": "MariaDB restores replay the dump table after table: some tables may be restored and others not",
    "clickhouse": "ClickHouse restores fill one table after another: some tables may be restored and others not",
    "mongodb": "MongoDB restores one collection after another: some may be restored and others not",
    "redis": "Redis restores copy the keys one by one: some keys may be restored and others not",
}
UNKNOWN = "check it before using it"


def claim_fields() -> dict[str, Any]:
    """The fields a worker sets on a restore it takes (a conditional update's or a new row's)."""
    now = timezone.now()
    return {"started_at": now, "heartbeat_at": now, "worker": this_worker()}


def end_lost(now: datetime, destination: Target | None = None) -> list[RestoreLog]:
    """End FAILED every started RUNNING restore (into ``destination``, or any) whose worker is
    gone, unless it finished or beat meanwhile; return the rows ended."""
    running = RestoreLog.objects.filter(status=RestoreStatus.RUNNING, started_at__isnull=False)
    if destination is not None:
        running = running.filter(destination=destination)
    silent_since = now - timedelta(seconds=settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS)
    lost = []
    for log in running.select_related("backup__target", "destination"):
        last = log.heartbeat_at or log.started_at
        assert last is not None  # started
        if last < silent_since:
            why = f"no heartbeat from {log.worker or 'its worker'} since {last:%Y-%m-%d %H:%M:%S %Z}"
        elif log.worker and process_gone(log.worker):
            why = f"process {log.worker} ended without finishing the restore"
        else:
            continue
        engine = log.destination.engine if log.destination is not None else "configuration"
        message = (
            f"worker lost while restoring: {why}; the destination may be partly restored; "
            + INTERRUPTED.get(engine, UNKNOWN)
        )
        ended = RestoreLog.objects.filter(
            pk=log.pk, status=RestoreStatus.RUNNING, heartbeat_at=log.heartbeat_at
        ).update(status=RestoreStatus.FAILED, error_message=message, completed_at=now, announce_pending=True)
        if ended:
            log.status, log.error_message, log.completed_at = RestoreStatus.FAILED, message, now
            logger.warning("restore %s of backup %s: %s", log.pk, log.backup_id, message)
            lost.append(log)
    return lost
