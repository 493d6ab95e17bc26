"""A running backup's heartbeat: ``heartbeat_at`` touched every few seconds from a thread, so a
run whose worker died (on any host) is recognised by its silence and reaped."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from backups.models import Backup, BackupStatus

logger = logging.getLogger(__name__)


class Heartbeat:
    """Context manager: while it is open, touch the RUNNING backup's ``heartbeat_at`` every
    ``BACKUPSITE_HEARTBEAT_SECONDS``. A failed touch is logged, never fails the backup."""

    def __init__(self, backup_id: int, interval: float | None = None) -> None:
        self.backup_id = backup_id
        self.interval = interval if interval is not None else settings.BACKUPSITE_HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{backup_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    Backup.objects.filter(pk=self.backup_id, status=BackupStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as exc:
                    logger.warning("backup %s: heartbeat not recorded: %s", self.backup_id, exc)
        finally:
            connection.close()  # this thread's own connection
