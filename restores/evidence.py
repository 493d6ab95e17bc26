"""Evidence for auditors: what was backed up, proven and restored in a window, per target.

:func:`collect` reads the catalog into plain dataclasses in a fixed number of queries for all the
targets together (targets, backups with their copies and verify steps, drills, restores) plus at
most two small ones per target whose window opens during an outage (where that outage began).
The renderers (:mod:`restores.evidence_html`, :mod:`restores.evidence_export`) read only these.

Nothing secret is collected: no password, option, secret reference or key identity; of the
connection only the host and database names. Every text a run wrote (errors, step messages,
check values) passes through ``services.redact``.

An outage (failure episode) starts at the first failed run (``failed`` or ``corrupt``) after a
success and lasts until the next success completed; with no success since, it is still open and
its length is counted to the generation time. Skipped and running runs neither open nor close one.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib import admin
from django.db.models import Prefetch, Q
from django.urls import get_resolver
from django.utils import timezone

from backups import services
from backups.models import (
    Backup,
    BackupCopy,
    BackupStatus,
    BackupStep,
    Drill,
    DrillStatus,
    Target,
)
from restores.models import RestoreLog

FAILURES = (BackupStatus.FAILED, BackupStatus.CORRUPT)


@dataclass(frozen=True)
class ScheduleEvidence:
    name: str
    cron: str
    timezone: str
    backup_type: str
    active: bool


@dataclass(frozen=True)
class PolicyEvidence:
    engine: str
    host: str
    database: str
    retention: str  # the rules as text, "none (nothing is deleted)" when empty
    schedules: list[ScheduleEvidence]
    encryption_key: str  # the key's name, "" when unencrypted
    escrow_keys: list[str]
    storages: list[str]
    drill_schedule: str  # cron, "" when none


@dataclass(frozen=True)
class CopyEvidence:
    storage: str
    status: str
    size_bytes: int | None


@dataclass(frozen=True)
class VerificationEvidence:
    step: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    message: str


@dataclass
class BackupEvidence:
    id: int
    status: str
    backup_type: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    size_bytes: int | None
    sha256: str
    copies: list[CopyEvidence]
    proof: str
    proof_at: datetime | None
    verified_at: datetime | None
    verifications: list[VerificationEvidence]
    drills_passed: int = 0
    drills_failed: int = 0
    error: str = ""


@dataclass(frozen=True)
class CheckEvidence:
    name: str
    expected: str
    actual: str
    ok: bool


@dataclass(frozen=True)
class DrillEvidence:
    id: int
    backup_id: int | None
    status: str
    trigger: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    restore_seconds: float | None
    data_age_seconds: float | None
    checks: list[CheckEvidence]
    error: str


@dataclass(frozen=True)
class RestoreEvidence:
    id: int
    backup_id: int
    destination: str
    initiated_by: str
    confirmed_by: str
    approved_by: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    error: str


@dataclass(frozen=True)
class OutageEvidence:
    started_at: datetime
    ended_at: datetime | None  # None: still open
    failed_runs: int  # failed runs in the window that belong to it
    duration_seconds: float
    open: bool


@dataclass(frozen=True)
class SummaryEvidence:
    backups: int
    successes: int
    failures: int
    longest_outage_seconds: float | None
    open_outage: bool
    last_drill: str  # passed / failed / running, "" when none in the window
    last_drill_at: datetime | None
    newest_success_proof: str  # "" when no success in the window
    newest_success_at: datetime | None


@dataclass
class TargetEvidence:
    name: str
    policy: PolicyEvidence
    backups: list[BackupEvidence] = field(default_factory=list)
    drills: list[DrillEvidence] = field(default_factory=list)
    restores: list[RestoreEvidence] = field(default_factory=list)
    outages: list[OutageEvidence] = field(default_factory=list)
    summary: SummaryEvidence | None = None


@dataclass
class Evidence:
    site: str
    generated_at: datetime
    since: datetime
    until: datetime
    targets: list[TargetEvidence]


class UnknownTarget(LookupError):
    """``--target`` names no target."""


def collect(since: datetime, target_name: str | None = None, now: datetime | None = None) -> Evidence:
    """The evidence of every target (or only ``target_name``: UnknownTarget if none is so named)
    from ``since`` to ``now``, targets by name, backups, drills and restores oldest first."""
    now = now or timezone.now()
    targets = Target.objects.order_by("name").prefetch_related("storages", "schedules")
    if target_name is not None:
        targets = targets.filter(name__iexact=target_name)
    rows = list(targets)
    if target_name is not None and not rows:
        raise UnknownTarget(target_name)
    ids = [target.pk for target in rows]
    in_window = Q(started_at__gte=since, started_at__lte=now) | Q(
        started_at__isnull=True, created_at__gte=since, created_at__lte=now
    )
    backups = (
        Backup.objects.filter(in_window, target_id__in=ids)
        .order_by("started_at", "id")
        .prefetch_related(
            Prefetch(
                "copies", queryset=BackupCopy.objects.select_related("storage").order_by("storage__name")
            ),
            Prefetch(
                "steps", queryset=BackupStep.objects.filter(name__icontains="verify"), to_attr="verify_steps"
            ),
        )
    )
    drills = Drill.objects.filter(target_id__in=ids, started_at__gte=since, started_at__lte=now).order_by(
        "started_at", "id"
    )
    restores = (
        RestoreLog.objects.filter(backup__target_id__in=ids, created_at__gte=since, created_at__lte=now)
        .select_related("backup", "destination")
        .order_by("created_at", "id")
    )
    by_target: dict[int, TargetEvidence] = {
        target.pk: TargetEvidence(target.name, _policy(target)) for target in rows
    }
    by_backup: dict[int, BackupEvidence] = {}
    for backup in backups:
        backup_item = _backup(backup)
        by_backup[backup.pk] = backup_item
        by_target[backup.target_id].backups.append(backup_item)
    for drill in drills:
        drill_item = _drill(drill)
        by_target[drill.target_id].drills.append(drill_item)
        tested = by_backup.get(drill.backup_id or 0)
        if tested is not None and drill.status == DrillStatus.PASSED:
            tested.drills_passed += 1
        elif tested is not None and drill.status == DrillStatus.FAILED:
            tested.drills_failed += 1
    for restore in restores:
        by_target[restore.backup.target_id].restores.append(_restore(restore))
    for target in rows:
        evidence = by_target[target.pk]
        evidence.outages = outages(evidence.backups, now, partial(_episode_start, target.pk, since))
        evidence.summary = _summary(evidence)
    return Evidence(
        site=site_name(),
        generated_at=now,
        since=since,
        until=now,
        targets=list(by_target.values()),
    )


def site_name() -> str:
    """The admin's header (set by the URLconf, loaded here if no request has yet) and this host."""
    get_resolver().url_patterns  # noqa: B018  (imports the URLconf, which names the admin site)
    return f"{admin.site.site_header} on {socket.gethostname()}"


def _policy(target: Target) -> PolicyEvidence:
    schedules = sorted(target.schedules.all(), key=lambda schedule: schedule.name)
    return PolicyEvidence(
        engine=target.engine,
        host=target.host,
        database=target.database,
        retention=retention_text(target.retention),
        schedules=[
            ScheduleEvidence(s.name, s.cron_expression, s.timezone, s.backup_type, s.is_active)
            for s in schedules
        ],
        encryption_key=target.encryption,
        escrow_keys=list(target.escrow or []),
        storages=sorted(storage.name for storage in target.storages.all()),
        drill_schedule=target.drill,
    )


def retention_text(rules: dict[str, Any] | None) -> str:
    """``keep_daily 7, keep_weekly 4, tiers 1h:72h``; an empty policy keeps everything."""
    if not rules:
        return "none (nothing is deleted)"
    parts = []
    for name, value in rules.items():
        shown = ", ".join(str(item) for item in value) if isinstance(value, list) else str(value)
        parts.append(f"{name} {shown}")
    return "; ".join(parts)


def _backup(backup: Backup) -> BackupEvidence:
    return BackupEvidence(
        id=backup.pk,
        status=backup.status,
        backup_type=backup.backup_type,
        started_at=backup.started_at,
        completed_at=backup.completed_at,
        duration_seconds=backup.duration_seconds,
        size_bytes=backup.file_size,
        sha256=backup.checksum,
        copies=[CopyEvidence(copy.storage.name, copy.status, copy.size) for copy in backup.copies.all()],
        proof=backup.proof,
        proof_at=backup.proof_at,
        verified_at=backup.verified_at,
        verifications=[
            VerificationEvidence(
                step.name,
                step.status,
                step.started_at,
                step.completed_at,
                step.duration_seconds,
                services.redact(step.message),
            )
            for step in backup.verify_steps  # type: ignore[attr-defined]  # Prefetch to_attr
        ],
        error=services.redact(backup.error_message),
    )


def _drill(drill: Drill) -> DrillEvidence:
    checks = [
        CheckEvidence(
            services.redact(str(check.get("name", ""))),
            services.redact(str(check.get("expected", ""))),
            services.redact(str(check.get("actual", ""))),
            bool(check.get("ok")),
        )
        for check in drill.checks or []
        if isinstance(check, dict)
    ]
    return DrillEvidence(
        id=drill.pk,
        backup_id=drill.backup_id,
        status=drill.status,
        trigger=drill.trigger,
        started_at=drill.started_at,
        finished_at=drill.finished_at,
        duration_seconds=drill.duration_seconds,
        restore_seconds=drill.restore_seconds,
        data_age_seconds=drill.data_age_seconds,
        checks=checks,
        error=services.redact(drill.error_message),
    )


def _restore(restore: RestoreLog) -> RestoreEvidence:
    duration = None
    if restore.started_at and restore.completed_at:
        duration = (restore.completed_at - restore.started_at).total_seconds()
    return RestoreEvidence(
        id=restore.pk,
        backup_id=restore.backup_id,
        destination=restore.destination.name if restore.destination else "",
        initiated_by=restore.initiated_by,
        confirmed_by=restore.confirmed_by,
        approved_by=restore.decided_by,
        status=restore.status,
        started_at=restore.started_at,
        completed_at=restore.completed_at,
        duration_seconds=duration,
        error=services.redact(restore.error_message),
    )


def _episode_start(target_id: int, since: datetime) -> datetime | None:
    """Where an outage still going on at ``since`` began: the first failed run after the last
    success before ``since`` (None: it began in the window, i.e. no failure before it)."""
    last_success = (
        Backup.objects.filter(target_id=target_id, status=BackupStatus.SUCCESS, started_at__lt=since)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    earlier = Backup.objects.filter(target_id=target_id, status__in=FAILURES, started_at__lt=since)
    if last_success is not None:
        earlier = earlier.filter(started_at__gt=last_success)
    return earlier.order_by("started_at").values_list("started_at", flat=True).first()


def outages(
    backups: Sequence[BackupEvidence],
    now: datetime,
    began_before: Callable[[], datetime | None] | None = None,
) -> list[OutageEvidence]:
    """The failure episodes among ``backups`` (oldest first). ``began_before``: called (once, only
    when the window opens on a failure) for the start of an episode that began before the window."""
    found: list[OutageEvidence] = []
    start: datetime | None = None
    failed = 0
    first = True
    for backup in backups:
        if backup.status in FAILURES:
            if start is None:
                start = backup.started_at or now
                if first and began_before is not None:
                    start = began_before() or start
            failed += 1
            first = False
        elif backup.status == BackupStatus.SUCCESS:
            if start is not None:
                end = backup.completed_at or backup.started_at or now
                found.append(OutageEvidence(start, end, failed, (end - start).total_seconds(), False))
                start, failed = None, 0
            first = False
    if start is not None:
        found.append(OutageEvidence(start, None, failed, (now - start).total_seconds(), True))
    return found


def _summary(item: TargetEvidence) -> SummaryEvidence:
    successes = [backup for backup in item.backups if backup.status == BackupStatus.SUCCESS]
    newest = successes[-1] if successes else None  # oldest first: the last is the newest
    last_drill = item.drills[-1] if item.drills else None
    longest = max((outage.duration_seconds for outage in item.outages), default=None)
    return SummaryEvidence(
        backups=len(item.backups),
        successes=len(successes),
        failures=sum(1 for backup in item.backups if backup.status in FAILURES),
        longest_outage_seconds=longest,
        open_outage=any(outage.open for outage in item.outages),
        last_drill=last_drill.status if last_drill else "",
        last_drill_at=last_drill.started_at if last_drill else None,
        newest_success_proof=newest.proof if newest else "",
        newest_success_at=newest.started_at if newest else None,
    )
