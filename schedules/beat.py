"""Celery beat's scheduler: django-celery-beat's DatabaseScheduler with one change. A last run
dated after now (the clock was set back, or ran ahead and came back) is taken as now, so the
entry is due at its next run time. Celery would otherwise wait until the clock caught up with
that date: after a clock that ran a year ahead, every schedule, and the watch with them, would
fire no more for a year.

And one guard: a Ctrl-C or SIGTERM while the scheduler is being built (the first second of beat)
ends beat. Celery's signal handler saves the schedule through ``service.scheduler``, which is
not built yet, so it builds a second scheduler inside the first one's database queries; that
fails on the interrupted connection, the first one's entry loop logs the error and carries on,
and the signal is lost: beat ran on until its supervisor killed it.

And a sign of life: every tick writes beat's heartbeat row (at most every HEARTBEAT_SECONDS),
which readiness (``/readyz``) reads. A catalog error there is logged and never stops beat."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from celery.utils.time import maybe_make_aware
from django.db import close_old_connections
from django_celery_beat.schedulers import DatabaseScheduler as BaseScheduler
from django_celery_beat.schedulers import ModelEntry as BaseEntry

from backups import services

logger = logging.getLogger(__name__)

HEARTBEAT_ROLE = "beat"
HEARTBEAT_SECONDS = 15.0  # well under BACKUPSITE_BEAT_STALE_SECONDS (default 180)


class ModelEntry(BaseEntry):
    def is_due(self) -> Any:
        now = maybe_make_aware(self._default_now())
        last: datetime | None = getattr(self, "last_run_at", None)
        if last is not None and maybe_make_aware(last) > now:
            logger.warning(
                "beat: %s last ran at %s, after now (%s): the clock went back; taking now as its "
                "last run, so it fires at its next run time",
                self.name, last, now,
            )  # fmt: skip
            self.last_run_at = self.model.last_run_at = now
        return super().is_due()


class DatabaseScheduler(BaseScheduler):
    Entry = ModelEntry
    _building = False  # one scheduler per beat process: set while it is being built
    _next_heartbeat = 0.0  # time.monotonic() of the next heartbeat write

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if DatabaseScheduler._building:
            # The signal handler's save, while the scheduler is being built: nothing has fired,
            # so nothing needs saving. SystemExit is what the handler raises next anyway; no
            # `except Exception` on the way out of the interrupted build can swallow it.
            raise SystemExit()
        DatabaseScheduler._building = True
        try:
            super().__init__(*args, **kwargs)
        finally:
            DatabaseScheduler._building = False

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        interval = super().tick(*args, **kwargs)
        self._show_life()
        return interval

    def _show_life(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + HEARTBEAT_SECONDS  # a failed write waits as long: no log flood
        try:
            services.touch_heartbeat(HEARTBEAT_ROLE)
        except Exception as exc:  # the catalog is down or locked: beat's schedule must go on
            logger.warning(
                "beat: cannot record its heartbeat in the catalog (%s); beat carries on",
                services.describe_error(exc),
            )
            close_old_connections()  # a broken connection is replaced at the next query
