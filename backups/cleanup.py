"""Retention applied to stored backups (the service behind ``backup_cleanup`` and the scheduler),
and the sweep of upload leftovers from every storage. The decisions are made by the pure engine
in :mod:`backups.retention.planner`; this module feeds it rows and carries out its plan."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from backups import secrets
from backups.retention import planner as retention
from backups.retention.policy import Policy, PolicyError
from backups.runs import chains
from backups.runs.steps import describe_error, record_step

from .models import Backup, BackupStatus, CopyStatus, Storage, Target
from .requests import ScheduleInfo, schedule_info
from .resources import storage_for
from .storages import STALE_AFTER, StorageError

logger = logging.getLogger(__name__)


def sweep_storages(older_than: timedelta = STALE_AFTER) -> tuple[list[str], list[str]]:
    """Remove writer leftovers (temporary names, unfinished multipart uploads, uncommitted
    blocks) older than ``older_than`` from every storage: what a worker killed mid-upload on
    another host left. Each storage removes only what its own writers create (the exact
    ``.NAME.partial-TOKEN`` and write-test names, see ``storages.base``) and only under its
    prefix; a storage it cannot build (a prefix with '..') is reported, never swept. Returns
    (what was removed, errors)."""
    removed: list[str] = []
    errors: list[str] = []
    for row in Storage.objects.order_by("name"):
        try:
            with storage_for(row) as storage:
                count = storage.sweep_stale(older_than)
        except (StorageError, secrets.SecretError) as exc:
            errors.append(f"storage {row.name}: {secrets.redact(describe_error(exc))}")
            continue
        if count:
            removed.append(f"storage {row.name}: removed {count} leftover upload(s) older than {older_than}")
            logger.info("swept %s leftover upload(s) from storage %s", count, row.name)
    return removed, errors


DATED_AFTER_NOW = "dated after now (a clock ran ahead or went back): kept, counted toward no rule until then"
# Hosts whose clocks are a few seconds apart (a worker stamps, another plans) are no clock jump.
CLOCK_TOLERANCE = timedelta(minutes=5)
PLAN_FIELDS = (
    "id",
    "target_id",
    "schedule_id",
    "backup_name",
    "status",
    "verified",
    "started_at",
    "created_at",
    "base_id",
)


def policy_for(target: Target, schedule: ScheduleInfo | None = None) -> Policy:
    """The policy for ``target``'s backups made by ``schedule`` (None: manual runs). A schedule
    with its own rules uses them, else the target's; the schedule's ``retention_days`` fills a
    policy that sets none. Periods use the target's timezone. Raises PolicyError."""
    mapping = (
        dict(schedule.retention) if schedule is not None and schedule.retention else dict(target.retention)
    )
    if schedule is not None and schedule.retention_days and "retention_days" not in mapping:
        mapping["retention_days"] = schedule.retention_days
    return Policy.from_mapping(mapping, timezone=target.timezone)


def backup_info(backup: Backup) -> retention.BackupInfo:
    moment = backup.started_at or backup.created_at
    return retention.BackupInfo(backup.pk, moment, backup.status, backup.verified, base_id=backup.base_id)


@dataclass
class GroupPlan:
    """One schedule's backups of a target (``schedule`` None: the manual ones)."""

    schedule: ScheduleInfo | None
    policy: Policy | None
    plan: retention.Plan | None
    error: str = ""

    @property
    def label(self) -> str:
        return f"schedule {self.schedule.name}" if self.schedule is not None else "manual runs"


@dataclass
class CleanupPlan:
    target: Target
    groups: list[GroupPlan] = field(default_factory=list)
    keep: list[tuple[Backup, tuple[str, ...]]] = field(default_factory=list)
    delete: list[tuple[Backup, str]] = field(default_factory=list)
    deleted: list[Backup] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: str = ""  # why the safety brake stopped every deletion

    @property
    def successes(self) -> int:
        return sum(b.status == BackupStatus.SUCCESS for b, _ in self.keep + self.delete)


def plan_cleanup(
    target: Target,
    now: datetime | None = None,
    *,
    policy: Policy | None = None,
    schedule_ids: set[int | None] | None = None,
) -> CleanupPlan:
    """Plan retention for every group of ``target``'s live backups (per schedule, manual runs
    apart), or only the groups of ``schedule_ids`` (None stands for manual runs). ``policy``
    overrides the configured ones (the preview command). A group whose policy is invalid keeps
    everything and reports the error. A backup dated after ``now`` (by more than the few minutes
    two hosts' clocks may differ) is kept and left out of its group's plan: a clock set back
    deletes nothing newer than itself, and backups stamped by a clock that ran ahead take no
    rule's place from the others once it is set right."""
    now = now or timezone.now()
    result = CleanupPlan(target=target)
    rows = Backup.objects.filter(target=target, deleted_at__isnull=True).only(*PLAN_FIELDS)
    if schedule_ids is not None:
        named = {pk for pk in schedule_ids if pk is not None}
        rows = (
            rows.filter(Q(schedule_id__in=named) | Q(schedule__isnull=True))
            if None in schedule_ids
            else rows.filter(schedule_id__in=named)
        )
    groups: dict[int | None, list[Backup]] = defaultdict(list)
    for row in rows:
        groups[row.schedule_id].append(row)
    by_id = {row.pk: row for row in rows}
    for schedule_id in sorted(groups, key=lambda key: (key is not None, key or 0)):
        members = groups[schedule_id]
        schedule = schedule_info(schedule_id)
        group = GroupPlan(schedule=schedule, policy=None, plan=None)
        result.groups.append(group)
        try:
            group.policy = policy or policy_for(target, schedule)
        except PolicyError as exc:
            group.error = f"{group.label}: retention.{exc}; nothing is deleted until it is fixed"
            result.errors.append(group.error)
            result.keep.extend((row, ("invalid retention policy: nothing is deleted",)) for row in members)
            continue
        # A backup dated after now was stamped by a clock that ran ahead (or this one went back).
        # Counted, it would take a daily, weekly ... place from a backup made at the right time.
        current: list[retention.BackupInfo] = []
        for row in members:
            info = backup_info(row)
            if info.timestamp > now + CLOCK_TOLERANCE:
                result.keep.append((row, (DATED_AFTER_NOW,)))
            else:
                current.append(info)
        # One dated a little after now (within the tolerance: another host's clock, or this
        # one stepped back a moment) is taken as made now, so it is the newest success the
        # rules count from, as it would be a moment later: planned at a "now" before it, the
        # older backups' retention_days would be counted from the one before it.
        plan_now = max([now, *(info.timestamp for info in current)])
        group.plan = retention.plan(current, group.policy, plan_now)
        result.keep.extend((by_id[kept.backup.id], kept.reasons) for kept in group.plan.keep)
        result.delete.extend((by_id[gone.backup.id], gone.reason) for gone in group.plan.delete)
    _protect_chains(result)
    result.keep.sort(key=_newest_first, reverse=True)
    result.delete.sort(key=_newest_first, reverse=True)
    _apply_brake(result)
    return result


def _protect_chains(result: CleanupPlan) -> None:
    """Keep every backup that a live incremental is built on, whichever group planned it: a
    weekly full schedule's plan must not break the daily incremental schedule's chain."""
    doomed = {backup.pk for backup, _ in result.delete}
    protected = chains.dependents(doomed) if doomed else set()
    if not protected:
        return
    still: list[tuple[Backup, str]] = []
    for backup, reason in result.delete:
        if backup.pk in protected:
            result.keep.append((backup, ("base of a kept incremental backup",)))
        else:
            still.append((backup, reason))
    result.delete = still


def _newest_first(pair: tuple[Backup, Any]) -> tuple[datetime, int]:
    return backup_info(pair[0]).timestamp, pair[0].pk


def _apply_brake(result: CleanupPlan) -> None:
    fractions = [group.policy.max_delete_fraction for group in result.groups if group.policy is not None]
    if not fractions:
        return
    limit = min(fractions)
    deleting = sum(b.status == BackupStatus.SUCCESS for b, _ in result.delete)
    total = result.successes
    if total and deleting / total > limit:
        result.refused = (
            f"refusing to delete {deleting} of {total} successful backups of {result.target.name} "
            f"({deleting / total:.0%}, above max_delete_fraction {limit:g}); check the policy with "
            "--dry-run, then run again with --force"
        )


def cleanup_target(
    target: Target,
    *,
    dry_run: bool = False,
    force: bool = False,
    now: datetime | None = None,
    schedule_ids: set[int | None] | None = None,
) -> CleanupPlan:
    """Apply :func:`plan_cleanup`, oldest backups first: delete every copy and its manifest,
    mark the row deleted (kept for audit) and record a ``cleanup`` step. Nothing is deleted when
    the safety brake refuses (unless ``force``). A storage error leaves that backup's row intact
    and is reported in ``errors``; so does a backup that changed since planning or is being
    restored."""
    plan = plan_cleanup(target, now, schedule_ids=schedule_ids)
    if dry_run or (plan.refused and not force):
        return plan
    for backup, reason in reversed(plan.delete):
        if not _unchanged(backup):
            plan.errors.append(
                f"backup {backup.pk}: changed while cleanup ran or is being restored; left for the next run"
            )
            continue
        try:
            with record_step(backup, "cleanup", f"retention: {reason}"):
                _delete_copies(backup)
        except Exception as exc:
            plan.errors.append(f"backup {backup.pk}: {secrets.redact(describe_error(exc))}")
            logger.warning(
                "cleanup of backup %s (target %s) failed: %s", backup.pk, target.name, plan.errors[-1]
            )
            continue
        backup.deleted_at = timezone.now()
        backup.save(update_fields=["deleted_at"])
        plan.deleted.append(backup)
        logger.info("retention deleted backup %s of target %s: %s", backup.pk, target.name, reason)
    return plan


def _unchanged(backup: Backup) -> bool:
    current = Backup.objects.filter(
        pk=backup.pk, status=backup.status, verified=backup.verified, deleted_at__isnull=True
    ).exists()
    return current and not backup.restores.filter(status="running").exists()


def _delete_copies(backup: Backup) -> None:
    """The data object first, then its manifest: an interruption leaves a manifest without data,
    which reindex reports, never data without a manifest nobody lists."""
    for copy in backup.copies.exclude(status=CopyStatus.DELETED).select_related("storage"):
        if copy.path:
            with storage_for(copy.storage) as storage:
                storage.delete(copy.path)  # a missing object is not an error: a rerun finishes
                storage.delete(copy.manifest_path)
        copy.status, copy.deleted_at = CopyStatus.DELETED, timezone.now()
        copy.save(update_fields=["status", "deleted_at"])
