"""What other apps hand backups when they ask for work: small frozen values owned by backups,
never another app's objects (backups does not import the apps that build them).

The schedules app builds a :class:`ScheduleInfo` for every run it starts, and registers a
lookup so that code starting from a stored Backup row (alerts about a lost run, retention per
schedule) can get the same facts by id. The restores app registers the reaper of its running
work, which the periodic watch calls beside the core's own reaping of lost runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ScheduleInfo:
    """The facts of the schedule a run belongs to that backups acts on."""

    pk: int
    name: str
    storage_path: str = ""  # sub-path inside each storage
    retention: Mapping[str, Any] = field(default_factory=dict)  # rules; empty: the target's apply
    retention_days: int | None = None
    notify_channels: tuple[str, ...] = ()  # notifier names; empty: the default notifiers
    notification_email: str = ""  # extra addresses, comma-separated
    encryption: str = ""  # a key name; empty: the target's
    escrow: tuple[str, ...] = ()  # escrow key names added to the target's


KeyUsersLookup = Callable[[], "Sequence[tuple[str, str]]"]
_key_users: list[KeyUsersLookup] = []


def register_key_users(lookup: KeyUsersLookup) -> None:
    """Called by an app whose rows name encryption keys (schedules): the lookup returns
    ``(key name, "schedule NAME")`` pairs, so that retiring a key in use is refused."""
    if lookup not in _key_users:
        _key_users.append(lookup)


def schedule_key_users() -> list[tuple[str, str]]:
    return [pair for lookup in _key_users for pair in lookup()]


ScheduleLookup = Callable[[int], "ScheduleInfo | None"]
_lookups: list[ScheduleLookup] = []


def register_schedule_lookup(lookup: ScheduleLookup) -> None:
    """Called by the app that owns schedules (once, from its ``ready``)."""
    if lookup not in _lookups:
        _lookups.append(lookup)


def schedule_info(schedule_id: int | None) -> ScheduleInfo | None:
    """The facts of schedule ``schedule_id``; None for a manual run or a deleted schedule."""
    if schedule_id is None:
        return None
    for lookup in _lookups:
        info = lookup(schedule_id)
        if info is not None:
            return info
    return None


@dataclass(frozen=True)
class ScheduleOverview:
    """What the dashboard shows of one target's schedules."""

    schedules: int = 0  # how many schedules back the target up
    active: int = 0  # how many of them are active
    next_run_at: datetime | None = None  # the soonest next run of an active schedule
    missed_since: datetime | None = None  # the oldest due run that has not succeeded (alerted)


ScheduleOverviewLookup = Callable[[Sequence[int]], Mapping[int, ScheduleOverview]]
_overviews: list[ScheduleOverviewLookup] = []


def register_schedule_overview(lookup: ScheduleOverviewLookup) -> None:
    """Called by the app that owns schedules: target ids in, one overview per target out (in a
    fixed number of queries, whatever the number of targets)."""
    if lookup not in _overviews:
        _overviews.append(lookup)


def schedule_overviews(target_ids: Sequence[int]) -> dict[int, ScheduleOverview]:
    found: dict[int, ScheduleOverview] = {}
    for lookup in _overviews:
        found.update(lookup(target_ids))
    return found


@dataclass(frozen=True)
class RunningWork:
    """Work of another app that the dashboard shows with a progress bar (a restore)."""

    kind: str  # "restore"
    pk: int
    label: str  # "restore of backup 42 into app-db-copy"
    target_id: int | None  # the target it acts on (the destination of a restore)
    started_at: datetime | None
    done_bytes: int  # bytes so far
    total_bytes: int | None  # when known
    url: str = ""  # its page


RunningWorkLookup = Callable[[], Sequence[RunningWork]]
_running: list[RunningWorkLookup] = []


def register_running_work(lookup: RunningWorkLookup) -> None:
    """Called by an app whose long work the dashboard should show (the restores app)."""
    if lookup not in _running:
        _running.append(lookup)


def running_work() -> list[RunningWork]:
    return [work for lookup in _running for work in lookup()]


@dataclass(frozen=True)
class AwaitingDecision:
    """Something of another app that waits for a person's decision (a four-eyes restore
    request), shown on the dashboard to those who may decide."""

    pk: int
    label: str  # "restore of backup 42 into shop-live, asked by web:alice: INC-42 ..."
    target_id: int  # the target it acts on (the destination of a restore)
    expires_at: datetime | None
    url: str  # its page, where the decision is taken


AwaitingDecisionLookup = Callable[[], Sequence[AwaitingDecision]]
_awaiting: list[AwaitingDecisionLookup] = []


def register_awaiting_decisions(lookup: AwaitingDecisionLookup) -> None:
    """Called by an app with requests awaiting a decision (the restores app)."""
    if lookup not in _awaiting:
        _awaiting.append(lookup)


def awaiting_decisions() -> list[AwaitingDecision]:
    return [item for lookup in _awaiting for item in lookup()]


Reaper = Callable[[datetime | None], int]
_reapers: list[Reaper] = []


def register_reaper(reaper: Reaper) -> None:
    """Called by an app whose running work a dead worker leaves RUNNING (the restores app): the
    periodic watch calls it with the time of its pass (None: now); it ends every row whose worker
    is gone, announcing each, and returns how many it ended."""
    if reaper not in _reapers:
        _reapers.append(reaper)


def reap_lost_work(now: datetime | None = None) -> int:
    """Call every registered reaper once; how many rows they ended in all."""
    return sum(reaper(now) for reaper in _reapers)


@dataclass(frozen=True)
class ScheduleState:
    """What the metrics export of one schedule: whose it is and whether it is missed now."""

    name: str
    target_id: int
    missed: bool  # an active schedule whose due run has not succeeded within its grace


ScheduleStatesLookup = Callable[[], Sequence[ScheduleState]]
_states: list[ScheduleStatesLookup] = []


def register_schedule_states(lookup: ScheduleStatesLookup) -> None:
    """Called by the app that owns schedules: every schedule's state, in one query."""
    if lookup not in _states:
        _states.append(lookup)


def schedule_states() -> list[ScheduleState]:
    return [state for lookup in _states for state in lookup()]


CronCheck = Callable[[str], "str | None"]
_cron_checks: list[CronCheck] = []


def register_cron_check(check: CronCheck) -> None:
    """Called by the app that runs cron expressions (schedules, from its ``ready``): its check
    returns the problem with an expression, or None when beat can run it. The core checks a
    target's ``drill`` with it, so a cron means the same thing everywhere."""
    if check not in _cron_checks:
        _cron_checks.append(check)


def cron_problem(expression: str) -> str | None:
    """The problem with the cron ``expression`` (None when fine), by the registered checks."""
    if not _cron_checks:
        return "no scheduler is installed to run it (the schedules app registers the cron check)"
    return next((problem for check in _cron_checks if (problem := check(expression))), None)
