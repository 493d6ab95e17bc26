"""The retention engine: which backups a policy keeps, and why. Pure Python, no Django.

``plan(backups, policy, now)`` is a pure function. Its contract (each one a property test):

- only SUCCESS backups count toward a rule; FAILED, SKIPPED and CORRUPT ones count for nothing,
  and RUNNING or PENDING ones are never deleted;
- the newest SUCCESS backup and the newest verified one are never deleted, nor are the
  ``min_keep`` newest SUCCESS backups, whatever a cap says;
- a group without a SUCCESS backup loses nothing, and a policy without a rule deletes nothing;
- every window and expiry is measured from the newest SUCCESS backup (the newest one not after
  ``now``), never from the clock, so a schedule that stops never ages everything out;
- every kept backup carries at least one reason; planning the kept backups again deletes
  nothing more; equal timestamps are ordered by id (the higher id is the newer);
- a chain is never broken: every backup that a kept SUCCESS, RUNNING or PENDING backup is built on
  (``base_id``, an incremental's previous link), directly or through other links, is kept too,
  with a reason ``"base of incremental <id>"`` per kept backup built on it, whatever the rules and
  caps say (so a chain may keep more than ``max_backups``). Incrementals count as ordinary
  backups for the rules; a failed, skipped or corrupt run pins nothing (it has nothing to
  restore); a ``base_id`` missing from the input is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backups.retention.durations import EARLIEST
from backups.retention.policy import Policy

SUCCESS = "success"
FAILED, SKIPPED, CORRUPT = "failed", "skipped", "corrupt"
RUNNING, PENDING = "running", "pending"

NO_SUCCESS = "no successful backup yet: nothing is deleted"
NO_RULE = "the policy has no rule: nothing is deleted"
NOT_KEPT = "no rule keeps it"


# -- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupInfo:
    id: int
    timestamp: datetime  # timezone-aware
    status: str
    verified: bool = False
    #: The backup this incremental was built on (its previous link); None for a full backup.
    base_id: int | None = None


@dataclass(frozen=True, slots=True)
class Kept:
    backup: BackupInfo
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Deleted:
    backup: BackupInfo
    reason: str


@dataclass(frozen=True)
class Plan:
    """Both lists newest first. ``anchor`` is the newest SUCCESS backup's time, the point every
    window is measured from (None when there is no SUCCESS backup)."""

    keep: tuple[Kept, ...]
    delete: tuple[Deleted, ...]
    anchor: datetime | None = None

    def reasons(self) -> dict[int, tuple[str, ...]]:
        return {kept.backup.id: kept.reasons for kept in self.keep}


@dataclass(slots=True)
class _Candidate:
    backup: BackupInfo
    moment: datetime  # the timestamp in UTC: ordering and arithmetic by instant, not wall clock
    reasons: list[str] = field(default_factory=list)
    protected: bool = False
    deleted: str = ""  # why a cap removes it


def plan(backups: Iterable[BackupInfo], policy: Policy, now: datetime) -> Plan:
    # Order and arithmetic by instant (UTC): aware datetimes sharing a zone compare by wall clock.
    ordered = sorted(
        ((b.timestamp.astimezone(UTC), b.id, b) for b in backups), key=lambda item: item[:2], reverse=True
    )
    successes = [_Candidate(b, moment) for moment, _, b in ordered if b.status == SUCCESS]
    if not successes:
        return Plan(tuple(Kept(b, (NO_SUCCESS,)) for _, _, b in ordered), ())
    if not policy.has_rules:
        return Plan(tuple(Kept(b, (NO_RULE,)) for _, _, b in ordered), ())
    newest = next((c for c in successes if c.moment <= now), successes[0])
    anchor = newest.moment
    tz = policy.tz
    locals_ = [c.moment.astimezone(tz) for c in successes]
    cap_reason = ""
    if policy.has_keep_rules:
        _apply_counts(successes, locals_, policy)
        _apply_windows(successes, locals_, policy, anchor, tz)
        _apply_spacing(successes, policy)
    else:
        cap_reason = _cap_reason(policy)
        for candidate in successes:
            candidate.reasons.append(cap_reason)
    _protect(successes, newest, policy)
    _apply_caps(successes, policy, anchor, cap_reason)

    keep: list[Kept] = []
    delete: list[Deleted] = []
    evidence: dict[str, tuple[str, ...]] = {}
    counts_nothing: dict[str, str] = {}
    pending = iter(successes)  # the same order as ``ordered``
    for moment, backup_id, backup in ordered:
        if backup.status == SUCCESS:
            candidate = next(pending)
            if candidate.deleted:
                delete.append(Deleted(backup, candidate.deleted))
            elif candidate.reasons:
                keep.append(Kept(backup, tuple(candidate.reasons)))
            else:
                delete.append(Deleted(backup, NOT_KEPT))
        elif backup.status in (RUNNING, PENDING):
            keep.append(Kept(backup, (f"{backup.status}: never deleted",)))
        elif (moment, backup_id) > (anchor, newest.backup.id):
            reasons = evidence.setdefault(
                backup.status, (f"{backup.status} after the newest success: kept as evidence",)
            )
            keep.append(Kept(backup, reasons))
        else:
            reason = counts_nothing.setdefault(
                backup.status, f"{backup.status} run older than the newest success: counts for nothing"
            )
            delete.append(Deleted(backup, reason))
    if any(backup.base_id is not None for _, _, backup in ordered):
        keep, delete = _keep_bases(ordered, keep, delete)
    return Plan(tuple(keep), tuple(delete), newest.backup.timestamp)


#: Statuses of backups that hold (or are about to hold) a restorable tree, so pin their base.
PINNING = (SUCCESS, RUNNING, PENDING)


def _keep_bases(
    ordered: list[tuple[datetime, int, BackupInfo]], keep: list[Kept], delete: list[Deleted]
) -> tuple[list[Kept], list[Deleted]]:
    """Keep what kept backups are built on, transitively; both lists stay newest first. O(n)."""
    present = {backup.id: backup for _, _, backup in ordered}
    kept = {k.backup.id for k in keep}
    pinning = {k.backup.id for k in keep if k.backup.status in PINNING}
    pending = [present[backup_id] for backup_id in pinning]
    while pending:  # a base pins its own base whatever its status: it is part of the chain
        backup = pending.pop()
        base = present.get(backup.base_id) if backup.base_id is not None else None
        if base is not None and base.id not in pinning:
            kept.add(base.id)
            pinning.add(base.id)
            pending.append(base)
    reasons: dict[int, list[str]] = {}
    for _, backup_id, backup in ordered:  # newest dependent first: a stable order of reasons
        base_id = backup.base_id
        if backup_id in pinning and base_id is not None and base_id != backup_id and base_id in present:
            reasons.setdefault(base_id, []).append(f"base of incremental {backup_id}")
    if not reasons:
        return keep, delete
    before = {k.backup.id: k for k in keep}
    gone = {d.backup.id: d for d in delete}
    new_keep: list[Kept] = []
    new_delete: list[Deleted] = []
    for _, backup_id, backup in ordered:
        extra = tuple(reasons.get(backup_id, ()))
        if backup_id in before:
            old = before[backup_id]
            new_keep.append(Kept(backup, old.reasons + extra) if extra else old)
        elif backup_id in kept:
            new_keep.append(Kept(backup, extra))
        else:
            new_delete.append(gone[backup_id])
    return new_keep, new_delete


def _hour_key(local: datetime) -> tuple[int, ...]:
    # The offset keeps the two 02:00 hours of a DST autumn night apart.
    offset = local.utcoffset()
    return (local.year, local.month, local.day, local.hour, int(offset.total_seconds()) if offset else 0)


_BUCKETS = (
    ("keep_last", "last", None),
    ("keep_hourly", "hourly", _hour_key),
    ("keep_daily", "daily", lambda local: local.toordinal()),
    ("keep_weekly", "weekly", lambda local: local.isocalendar()[:2]),
    ("keep_monthly", "monthly", lambda local: (local.year, local.month)),
    ("keep_yearly", "yearly", lambda local: local.year),
)


def _apply_counts(successes: list[_Candidate], locals_: list[datetime], policy: Policy) -> None:
    """restic ``forget``: per rule, the newest backup of each of the N newest periods holding
    one; while a rule has count left, the oldest backup is kept too."""
    last_index = len(successes) - 1
    for name, label, bucket in _BUCKETS:
        count = getattr(policy, name)
        if count is None:
            continue
        remaining, previous, used = count, object(), 0
        for index, (candidate, local) in enumerate(zip(successes, locals_, strict=True)):
            if remaining == 0:
                break
            value = index if bucket is None else bucket(local)
            if value != previous:
                used += 1
                candidate.reasons.append(f"{label} {used}")
            elif index == last_index:
                candidate.reasons.append(f"oldest ({label} count left)")
            else:
                continue
            previous = value
            if remaining > 0:
                remaining -= 1


def _apply_windows(
    successes: list[_Candidate], locals_: list[datetime], policy: Policy, anchor: datetime, tz: Any
) -> None:
    if policy.keep_within is not None:
        cutoff = policy.keep_within.before(anchor, tz)
        for candidate in successes:
            if candidate.moment <= cutoff:
                break
            candidate.reasons.append(f"within {policy.keep_within}")
    for tier in policy.tiers:
        cutoff = tier.window.before(anchor, tz)
        previous: object = None
        for candidate, local in zip(successes, locals_, strict=True):
            if candidate.moment <= cutoff:
                break  # newest first: every later one is older still
            value = tier.period.key(candidate.moment, local)
            if value != previous:
                candidate.reasons.append(f"tier {tier}")
                previous = value


def _apply_spacing(successes: list[_Candidate], policy: Policy) -> None:
    for rule in policy.rules:
        gap = timedelta(days=rule.min_age_days)
        chosen = 0
        last: datetime | None = None
        for candidate in successes:
            if chosen == rule.count:
                break
            if last is None or last - candidate.moment >= gap:
                chosen += 1
                last = candidate.moment
                candidate.reasons.append(f"rule {rule}: {chosen} of {rule.count}")


def _cap_reason(policy: Policy) -> str:
    caps = []
    if policy.retention_days is not None:
        caps.append(f"retention_days {policy.retention_days}")
    if policy.max_backups is not None:
        caps.append(f"max_backups {policy.max_backups}")
    return "within " + " and ".join(caps)


def _protect(successes: list[_Candidate], newest: _Candidate, policy: Policy) -> None:
    for candidate in {id(successes[0]): successes[0], id(newest): newest}.values():
        candidate.protected = True
        candidate.reasons.append(
            "newest success" if candidate is newest else "newest success (dated after now)"
        )
    verified = next((c for c in successes if c.backup.verified), None)
    if verified is not None:
        verified.protected = True
        verified.reasons.append("newest verified")
    for candidate in successes[: policy.min_keep]:
        candidate.protected = True
        candidate.reasons.append(f"min_keep {policy.min_keep}")


def _apply_caps(successes: list[_Candidate], policy: Policy, anchor: datetime, cap_reason: str) -> None:
    """Caps remove kept backups, never protected ones (which then lose a caps-only reason that
    no longer holds)."""
    if policy.retention_days is not None:
        try:
            oldest_allowed = anchor - timedelta(days=policy.retention_days)
        except OverflowError:  # more days than the calendar holds: nothing expires
            oldest_allowed = EARLIEST
        expired = f"expired: retention_days {policy.retention_days} reached, counted from the newest success"
        for candidate in reversed(successes):
            if candidate.moment > oldest_allowed:
                break  # oldest first: every later one is newer still
            if candidate.protected:
                candidate.reasons = [reason for reason in candidate.reasons if reason != cap_reason]
            else:
                candidate.deleted = expired
    if policy.max_backups is not None:
        kept = [c for c in successes if c.reasons and not c.deleted]
        protected_after = sum(c.protected for c in kept)
        count, beyond = 0, f"beyond max_backups {policy.max_backups}"
        for candidate in kept:
            if candidate.protected:
                protected_after -= 1
                count += 1
            elif count + protected_after < policy.max_backups:
                count += 1
            else:
                candidate.deleted = beyond
