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
which readiness (``/readyz``) reads. A catalog error there is logged and never stops beat.

And three changes for many schedules due at once (each tick fires one entry, then ticks again at
once): a tick no longer compares every entry of the schedule with itself (Celery checks the
schedule is unchanged at every tick, entry by entry: with 2,000 entries, 15 ms of beat's CPU per
firing), the catalog is asked whether the schedule changed at most every CHANGE_CHECK_SECONDS
(not once per firing), and the entries' last runs are written together
(django-celery-beat reads and saves each row: 4 queries per fired entry, 10 s of a stalled beat
after 2,000 firings; now one statement for all, 50 ms)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from celery.utils.time import maybe_make_aware
from django.db import DatabaseError, InterfaceError, close_old_connections, connection, transaction
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler as BaseScheduler
from django_celery_beat.schedulers import ModelEntry as BaseEntry

from backups import services

logger = logging.getLogger(__name__)

HEARTBEAT_ROLE = "beat"
HEARTBEAT_SECONDS = 15.0  # well under BACKUPSITE_BEAT_STALE_SECONDS (default 180)
# A change to the schedule (an apply, an admin edit) is seen this much later at most; an idle
# beat ticks every few seconds and checks at every tick.
CHANGE_CHECK_SECONDS = 1.0


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

    _next_change_check = 0.0  # time.monotonic() of the next look at PeriodicTasks
    _dirty: set[str]  # names of the entries fired since the last sync (django-celery-beat's)

    def schedules_equal(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
        """Whether the schedule beat's heap was built from is still ``new``. The same entry
        objects under the same names are equal without comparing their fields (an entry equals
        itself); anything else is compared as Celery does."""
        if (
            not self._heap_invalidated  # a reload: the base class clears it and says no
            and old is not None
            and new is not None
            and len(old) == len(new)
            and all(old.get(name) is entry for name, entry in new.items())
        ):
            return True
        return bool(super().schedules_equal(old, new))

    def schedule_changed(self) -> bool:
        """Ask the catalog whether the schedule changed, at most every CHANGE_CHECK_SECONDS."""
        now = time.monotonic()
        if now < self._next_change_check:
            return False
        self._next_change_check = now + CHANGE_CHECK_SECONDS
        return bool(super().schedule_changed())

    def sync(self) -> None:
        """Write the last run and run count of every entry fired since the last sync: one
        statement run for every row (``executemany``) in one transaction; no signal, as
        django-celery-beat's own save sends none (nothing beat reads changed). A catalog error
        keeps them for the next sync, as django-celery-beat does."""
        dirty, self._dirty = self._dirty, set()
        schedule = self._schedule or {}
        models = [schedule[name].model for name in dirty if name in schedule]
        if not models:
            return
        try:
            close_old_connections()
            _write_last_runs(models)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning(
                "beat: cannot record the last runs of %s entries (%s); retried later", len(models), exc
            )
            self._dirty |= dirty

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


def _write_last_runs(models: list[PeriodicTask]) -> None:
    """UPDATE each row's last_run_at and total_run_count. Raw SQL because the ORM's ways cost
    too much for thousands of rows: bulk_update builds a CASE per row (1.6 s for 2,000 rows on
    SQLite), an update() per row is a query each (0.8 s); executemany takes 50 ms."""
    meta = PeriodicTask._meta
    quote = connection.ops.quote_name
    last_run, count = meta.get_field("last_run_at"), meta.get_field("total_run_count")
    rows = [(last_run.get_db_prep_value(m.last_run_at, connection), m.total_run_count, m.pk) for m in models]
    # Only identifiers from the model's own meta, quoted; every value is a parameter.
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {quote(last_run.column)} = %s, {quote(count.column)} = %s "  # noqa: S608
        f"WHERE {quote(meta.pk.column)} = %s"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
