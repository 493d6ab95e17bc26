"""When an external target's next file is due: its ``expect`` cron, evaluated by the app that
runs cron expressions. The core does not import that app (schedules): it registers its clock
here from its ``ready``, as it registers its cron check in ``backups.requests``, so ``expect``
means exactly what a schedule's cron means (Celery's crontab, DST gaps and repeats included)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

#: ``(expression, timezone name, moment) -> the latest run time at or before moment``, or None.
CronClock = Callable[[str, str, datetime], "datetime | None"]
_clocks: list[CronClock] = []

NO_CLOCK = (
    "expect cannot be checked: no scheduler is installed to evaluate cron (the schedules app "
    "registers it with register_cron_clock)"
)


class NoClock(LookupError):
    """No app registered a cron clock; :data:`NO_CLOCK` says so."""


def register_cron_clock(clock: CronClock) -> None:
    """Called by the app that runs cron expressions (schedules), once, from its ``ready``."""
    if clock not in _clocks:
        _clocks.append(clock)


def due_slot(expect: str, timezone: str, grace: timedelta, now: datetime, since: datetime) -> datetime | None:
    """The latest time a file was expected whose grace has passed at ``now``, if it is not before
    ``since`` (when the watch began: nothing is owed for the time before). Raises :class:`NoClock`."""
    if not _clocks:
        raise NoClock(NO_CLOCK)
    slot = _clocks[0](expect, timezone, now - grace)
    if slot is None or slot < since:
        return None
    return slot
