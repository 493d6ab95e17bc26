"""The dashboard's facts: one summary per target and the totals above them, gathered in a fixed
number of queries whatever the number of targets or backups (a test counts them at two sizes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Max, OuterRef, Q, Subquery, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from backups.health.status import Facts, target_status
from backups.models import Backup, BackupCopy, BackupStatus, CopyStatus, Target
from backups.requests import RunningWork, ScheduleOverview, running_work, schedule_overviews

STRIP_RUNS = 20  # the last runs shown as a coloured strip
RATE_DAYS = 30
FINISHED = (BackupStatus.SUCCESS, BackupStatus.FAILED, BackupStatus.CORRUPT)


@dataclass(frozen=True)
class Running:
    """A running backup (or another app's running work) with what its progress bar needs."""

    kind: str  # "backup" or "restore"
    pk: int
    label: str
    target_id: int | None
    started_at: datetime | None
    done_bytes: int
    expected_bytes: int | None  # the previous success's raw size, or the restore's total
    url: str = ""


@dataclass
class TargetSummary:
    target: Target
    status: str
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_message: str = ""
    last_verified_at: datetime | None = None
    runs_30d: int = 0
    successes_30d: int = 0
    strip: list[str] = field(default_factory=list)  # newest last: success, failed, skipped, ...
    stored_bytes: int = 0
    schedule: ScheduleOverview = field(default_factory=ScheduleOverview)
    running: list[Running] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        """Successes over finished runs in the last 30 days; None without any."""
        return self.successes_30d / self.runs_30d if self.runs_30d else None


@dataclass
class Dashboard:
    now: datetime
    targets: list[TargetSummary]
    stored_by_storage: list[tuple[str, int]]  # (storage name, bytes), by name
    backups_24h: int
    running: list[Running]

    def count(self, status: str) -> int:
        return sum(summary.status == status for summary in self.targets)


def dashboard(now: datetime | None = None) -> Dashboard:
    """Every target's summary (by name) and the totals."""
    now = now or timezone.now()
    targets = list(Target.objects.order_by("name"))
    ids = [target.pk for target in targets]
    finished = Backup.objects.filter(target=OuterRef("pk"), status__in=FINISHED).order_by(
        "-started_at", "-id"
    )
    failed = finished.filter(status=BackupStatus.FAILED)
    newest = {
        pk: (status, failure_at, failure_message)
        for pk, status, failure_at, failure_message in Target.objects.annotate(
            newest_finished=Subquery(finished.values("status")[:1]),
            failure_at=Subquery(failed.values("completed_at")[:1]),
            failure_message=Subquery(failed.values("error_message")[:1]),
        ).values_list("pk", "newest_finished", "failure_at", "failure_message")
    }
    figures = _figures(now)
    strips = _strips()
    stored = dict(
        BackupCopy.objects.filter(status=CopyStatus.STORED, backup__deleted_at__isnull=True)
        .values_list("backup__target_id")
        .annotate(total=Sum("size"))
        .values_list("backup__target_id", "total")
    )
    overviews = schedule_overviews(ids)
    running = running_backups() + [from_work(work) for work in running_work()]
    by_target: dict[int | None, list[Running]] = defaultdict(list)
    for item in running:
        by_target[item.target_id].append(item)
    summaries = []
    for target in targets:
        row = figures.get(target.pk, {})
        overview = overviews.get(target.pk, ScheduleOverview())
        newest_status, failure_at, failure_message = newest.get(target.pk, (None, None, ""))
        summary = TargetSummary(
            target=target,
            status="",
            last_success_at=row.get("last_success"),
            last_failure_at=failure_at,
            last_failure_message=_first_line(failure_message or ""),
            last_verified_at=row.get("last_verified"),
            runs_30d=row.get("runs_30d", 0),
            successes_30d=row.get("successes_30d", 0),
            strip=strips.get(target.pk, []),
            stored_bytes=stored.get(target.pk) or 0,
            schedule=overview,
            running=by_target.get(target.pk, []),
        )
        summary.status = target_status(
            Facts(
                is_active=target.is_active,
                running=any(item.kind == "backup" for item in summary.running),
                last_success_at=summary.last_success_at,
                last_finished_status=newest_status,
                schedules=overview.schedules,
                active_schedules=overview.active,
                missed_since=overview.missed_since,
            )
        )
        summaries.append(summary)
    return Dashboard(
        now=now,
        targets=summaries,
        stored_by_storage=list(
            BackupCopy.objects.filter(status=CopyStatus.STORED, backup__deleted_at__isnull=True)
            .values_list("storage__name")
            .annotate(total=Sum("size"))
            .order_by("storage__name")
            .values_list("storage__name", "total")
        ),
        backups_24h=Backup.objects.filter(
            status=BackupStatus.SUCCESS, started_at__gte=now - timedelta(hours=24)
        ).count(),
        running=running,
    )


def _first_line(message: str, limit: int = 200) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _figures(now: datetime) -> dict[int, dict[str, Any]]:
    since = now - timedelta(days=RATE_DAYS)
    rows = (
        Backup.objects.values("target_id")
        .annotate(
            last_success=Max("started_at", filter=Q(status=BackupStatus.SUCCESS)),
            last_verified=Max("verified_at"),
            runs_30d=Count("id", filter=Q(status__in=FINISHED, started_at__gte=since)),
            successes_30d=Count("id", filter=Q(status=BackupStatus.SUCCESS, started_at__gte=since)),
        )
        .order_by()
    )
    return {row["target_id"]: row for row in rows}


def _strips() -> dict[int, list[str]]:
    """The statuses of every target's last runs (pending and running ones left out), oldest first."""
    ranked = (
        Backup.objects.exclude(status__in=(BackupStatus.PENDING, BackupStatus.RUNNING))
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("target_id")],
                order_by=[F("started_at").desc(nulls_last=True), F("id").desc()],
            )
        )
        .filter(rank__lte=STRIP_RUNS)
        .values_list("target_id", "status", "rank")
    )
    strips: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for target_id, status, rank in ranked:
        strips[target_id].append((rank, status))
    return {
        target_id: [status for _, status in sorted(runs, reverse=True)] for target_id, runs in strips.items()
    }


def running_backups() -> list[Running]:
    """Every running backup with its progress and, for an ETA, its target's previous raw size."""
    previous = Backup.objects.filter(
        target=OuterRef("target_id"), status=BackupStatus.SUCCESS, raw_size__isnull=False
    ).order_by("-started_at", "-id")
    rows = (
        Backup.objects.filter(status=BackupStatus.RUNNING)
        .annotate(previous_size=Subquery(previous.values("raw_size")[:1]), target_name=F("target__name"))
        .order_by("started_at", "id")
        .values_list(
            "pk", "target_id", "target_name", "backup_type", "started_at", "progress", "previous_size"
        )
    )
    return [
        Running(
            kind="backup",
            pk=pk,
            label=f"{backup_type} backup of {name}",
            target_id=target_id,
            started_at=started_at,
            done_bytes=progress or 0,
            expected_bytes=previous_size,
            url=f"/admin/backups/backup/{pk}/change/",
        )
        for pk, target_id, name, backup_type, started_at, progress, previous_size in rows
    ]


def from_work(work: RunningWork) -> Running:
    return Running(
        kind=work.kind,
        pk=work.pk,
        label=work.label,
        target_id=work.target_id,
        started_at=work.started_at,
        done_bytes=work.done_bytes,
        expected_bytes=work.total_bytes,
        url=work.url,
    )
