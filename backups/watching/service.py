"""One scan of an external target, the service behind the periodic watch: claim the target,
list its storage under the watched folder, adopt the new files, alert on what is missing or
shrunken, then apply the target's retention to the adopted files (the safety brake included).
Every scan leaves its outcome on the target's :class:`ExternalWatch` row."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from backups import secrets
from backups.cleanup import cleanup_target
from backups.models import ExternalWatch, Target
from backups.processes import process_gone, this_worker
from backups.queues import queue_for
from backups.requests import ScheduleOverview
from backups.resources import storage_for
from backups.runs.steps import describe_error
from backups.storages import StorageError

from . import alerts
from .adoption import adopt_new
from .expect import NoClock
from .settings import EXTERNAL, WatchSettingsError, parse

logger = logging.getLogger(__name__)

#: A claim whose scanner gave no sign of life for this long is taken over (a scanner touches it
#: at least every adoption.TOUCH_EVERY seconds while it reads).
STALE_CLAIM = timedelta(minutes=10)


@dataclass
class ScanReport:
    """What one scan did; ``problem`` is why it could not list or use the storage."""

    target: str
    claimed: bool = True
    seen: int = 0
    adopted: list[int] = field(default_factory=list)  # backup ids
    waiting: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    problem: str = ""
    alerts: list[str] = field(default_factory=list)  # events sent: missed, recovered, anomaly
    deleted: list[int] = field(default_factory=list)  # backup ids retention deleted
    retention_note: str = ""


def external_targets() -> list[tuple[int, str]]:
    """The active external targets to scan, as ``(target id, queue)``: each scan reads whole new
    files, the work of the workers near its storage (the target's queue)."""
    return [
        (target.pk, queue_for(target)) for target in Target.objects.filter(engine=EXTERNAL, is_active=True)
    ]


def scan_external_target(target: Target | int, now: datetime | None = None) -> ScanReport:
    """Scan one external target once (see the module's docstring). Returns what it did; never
    raises for a storage or settings problem (recorded on the watch row, alerted once). A target
    already being scanned is left to that scan (``claimed`` False). ``now``: the scan's clock for
    the settling of new files and the expected times (the claim uses the real clock)."""
    if isinstance(target, int):
        target = Target.objects.get(pk=target)
    now = now or timezone.now()
    report = ScanReport(target=target.name)
    if target.engine != EXTERNAL:
        report.problem = f"target {target.name} is not external (engine {target.engine})"
        return report
    row, _ = ExternalWatch.objects.get_or_create(target=target)
    worker = this_worker()
    if not _claim(row, worker):
        report.claimed = False
        return report
    try:
        _scan(row, target, now, report, worker)
    finally:
        ExternalWatch.objects.filter(pk=row.pk, scanner=worker).update(scanner="", claimed_at=None)
    return report


def _claim(row: ExternalWatch, worker: str) -> bool:
    """Take the target's scan with a conditional update: free, stale, or its scanner gone."""
    now = timezone.now()
    free = Q(scanner="") | Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM)
    current = ExternalWatch.objects.filter(pk=row.pk).values_list("scanner", flat=True).first()
    if current and process_gone(current):
        free |= Q(scanner=current)
    return bool(ExternalWatch.objects.filter(pk=row.pk).filter(free).update(scanner=worker, claimed_at=now))


def _scan(row: ExternalWatch, target: Target, now: datetime, report: ScanReport, worker: str) -> None:
    def touch() -> None:
        ExternalWatch.objects.filter(pk=row.pk, scanner=worker).update(claimed_at=timezone.now())

    try:
        watch = parse(target.options)
    except WatchSettingsError as exc:
        _failed(row, target, report, f"targets.{target.name}: {exc}", now)
        return
    storages = list(target.storages.all())
    if len(storages) != 1:
        names = ", ".join(s.name for s in storages) or "none"
        _failed(row, target, report, f"an external target watches exactly one storage; it has {names}", now)
        return
    try:
        with storage_for(storages[0]) as storage:
            found = adopt_new(target, storages[0], storage, watch, now, touch)
    except (StorageError, secrets.SecretError) as exc:
        _failed(
            row, target, report, f"storage {storages[0].name}: {secrets.redact(describe_error(exc))}", now
        )
        return
    report.seen, report.waiting, report.errors = found.seen, found.waiting, found.errors
    report.adopted = [backup.pk for backup in found.adopted]
    error = "; ".join(found.errors)
    ExternalWatch.objects.filter(pk=row.pk).update(scanned_at=now, seen=found.seen, error=error)
    if alerts.note_listing_works(row, target):
        report.alerts.append("recovered")
    # Only the newest file of a scan is compared with the one before it: a first scan that adopts
    # a backlog of old files must not alert on sizes that mattered months ago.
    newest = max(found.adopted, key=lambda backup: (backup.started_at, backup.pk), default=None)
    if newest is not None and alerts.check_shrinkage(newest):
        report.alerts.append("anomaly")
    try:
        sent = alerts.check_expected(row, target, watch, now)
    except NoClock as exc:
        report.errors.append(str(exc))
        ExternalWatch.objects.filter(pk=row.pk).update(error="; ".join([*found.errors, str(exc)]))
    else:
        if sent:
            report.alerts.append(sent)
    _apply_retention(row, target, now, report)


def _failed(row: ExternalWatch, target: Target, report: ScanReport, problem: str, now: datetime) -> None:
    report.problem = problem
    if alerts.note_listing_failed(row, target, problem, now):
        report.alerts.append("missed")


def _apply_retention(row: ExternalWatch, target: Target, now: datetime, report: ScanReport) -> None:
    """The target's retention over its adopted files, as ``backup_cleanup`` applies it: the
    brake refuses a pass that would delete too many, and says so on the watch row."""
    plan = cleanup_target(target, now=now)
    report.deleted = [backup.pk for backup in plan.deleted]
    notes = [*plan.errors, *([plan.refused] if plan.refused else [])]
    report.retention_note = "; ".join(notes)
    ExternalWatch.objects.filter(pk=row.pk).update(retention_note=report.retention_note)
    for note in notes:
        logger.warning("watch of %s: retention: %s", target.name, note)


def watch_overviews(targets: Sequence[Target]) -> dict[int, ScheduleOverview]:
    """What the dashboard shows of the external ones among ``targets`` (one query, none without
    any): no schedules (so never PAUSED for want of one), missed since the expected file that did
    not come or since the storage could not be listed, whichever began first."""
    ids = [target.pk for target in targets if target.engine == EXTERNAL]
    if not ids:
        return {}
    overviews: dict[int, ScheduleOverview] = {}
    rows = ExternalWatch.objects.filter(target_id__in=ids).values_list(
        "target_id", "missed_since", "failing_since"
    )
    for target_id, missed_since, failing_since in rows:
        moments = [moment for moment in (missed_since, failing_since) if moment is not None]
        overviews[target_id] = ScheduleOverview(missed_since=min(moments) if moments else None)
    return overviews
