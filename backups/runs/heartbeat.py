"""A running backup's (or restore's) heartbeat: ``heartbeat_at`` touched every few seconds from
a thread, so work whose worker died (on any host) is recognised by its silence and reaped."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from django.conf import settings
from django.db import Error, connection
from django.db.models import QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)


class Heartbeat:
    """Context manager: while it is open, touch ``heartbeat_at`` on ``rows`` (the one RUNNING row
    of a backup or of another app's work, e.g. ``Backup.objects.filter(pk=..., status=RUNNING)``)
    every ``BACKUPSITE_HEARTBEAT_SECONDS``. ``label`` names it in the log. A failed touch is
    logged in one line, never fails the work, and the next touch uses a new connection (so the
    beat resumes once a restarted catalog database is back)."""

    def __init__(self, rows: QuerySet[Any], label: str, interval: float | None = None) -> None:
        self.rows, self.label = rows, label
        self.interval = interval if interval is not None else settings.BACKUPSITE_HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {label}", daemon=True)

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
                    self.rows.update(heartbeat_at=timezone.now())
                except Error as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    logger.warning("%s: heartbeat not recorded: %s", self.label, first)
                    connection.close()  # a broken connection never recovers by itself
        finally:
            connection.close()  # this thread's own connection
