"""A target's status badge from its facts: a pure function, standard library only.

The badges, in the order that wins when several apply:

- ``PAUSED``: the target is inactive, or every schedule it has is paused (nothing will run);
- ``RUNNING``: a backup of it is running now;
- ``FAILING``: its newest finished run failed (or its newest success was found corrupt);
- ``MISSED``: a schedule's due run has not succeeded within its grace period (the watch's
  dead man's switch raised "missed" and nothing has succeeded since);
- ``NEVER RUN``: it has no successful backup yet (and nothing above applies);
- ``OK``: otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

OK = "OK"
FAILING = "FAILING"
MISSED = "MISSED"
RUNNING = "RUNNING"
NEVER_RUN = "NEVER RUN"
PAUSED = "PAUSED"
STATUSES = (OK, FAILING, MISSED, RUNNING, NEVER_RUN, PAUSED)


@dataclass(frozen=True)
class Facts:
    is_active: bool
    running: bool
    last_success_at: datetime | None
    last_finished_status: str | None  # "success", "failed", "corrupt" of the newest finished run
    schedules: int = 0
    active_schedules: int = 0
    missed_since: datetime | None = None


def target_status(facts: Facts) -> str:
    if not facts.is_active or (facts.schedules and not facts.active_schedules):
        return PAUSED
    if facts.running:
        return RUNNING
    if facts.last_finished_status in ("failed", "corrupt"):
        return FAILING
    if facts.missed_since is not None and (
        facts.last_success_at is None or facts.last_success_at < facts.missed_since
    ):
        return MISSED
    if facts.last_success_at is None:
        return NEVER_RUN
    return OK
