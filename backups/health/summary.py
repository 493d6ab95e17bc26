"""The dashboard's facts: one summary per target and the totals above them, gathered in a fixed
number of queries whatever the number of targets or backups (a test counts them at two sizes).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Aggregate, CharField, Count, F, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from backups.health.status import Facts, target_status
from backups.models import Backup, BackupCopy, BackupStatus, CopyStatus, Drill, DrillStatus, Storage, Target
from backups.requests import RunningWork, ScheduleOverview, running_work, schedule_overviews
from backups.watching.service import watch_overviews

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
    proof: str = ""  # the newest success's proof level ("" without one)
    proof_at: datetime | None = None
    last_drill_status: str = ""  # the newest finished drill's: passed or failed
    last_drill_at: datetime | None = None
    last_drill_restore_seconds: float | None = None  # what an outage would cost
    worst_data_age_seconds: float | None = None  # what would be lost, at worst, over 30 days

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


def dashboard(now: datetime | None = None, target_ids: Sequence[int] | None = None) -> Dashboard:
    """Every target's summary (by name) and the totals; with ``target_ids``, only those targets'
    (and totals over them), for a page about one target."""
    now = now or timezone.now()
    facts = _target_facts(now, target_ids)
    targets = [row.target for row in facts]
    stored, stored_by_storage = _stored_bytes(target_ids)
    worst_ages = _worst_data_ages(now, target_ids)
    # External targets have no schedules; their watch says whether a file is missed.
    overviews = {**schedule_overviews([target.pk for target in targets]), **watch_overviews(targets)}
    running = running_now()
    by_target: dict[int | None, list[Running]] = defaultdict(list)
    for item in running:
        by_target[item.target_id].append(item)
    summaries = []
    for row in facts:
        target = row.target
        overview = overviews.get(target.pk, ScheduleOverview())
        summary = TargetSummary(
            target=target,
            status="",
            last_success_at=row.last_success_at,
            last_failure_at=row.failure_at,
            last_failure_message=_first_line(row.failure_message or ""),
            last_verified_at=row.last_verified_at,
            runs_30d=row.runs_30d,
            successes_30d=row.successes_30d,
            strip=_strip(row.strip_dated, row.strip_undated),
            stored_bytes=stored.get(target.pk) or 0,
            schedule=overview,
            running=by_target.get(target.pk, []),
            proof=row.proof or "",
            proof_at=row.proof_at,
            last_drill_status=row.drill_status or "",
            last_drill_at=row.drill_at,
            last_drill_restore_seconds=row.drill_restore_seconds,
            worst_data_age_seconds=worst_ages.get(target.pk),
        )
        summary.status = target_status(
            Facts(
                is_active=target.is_active,
                running=any(item.kind == "backup" for item in summary.running),
                last_success_at=summary.last_success_at,
                last_finished_status=row.newest_finished,
                schedules=overview.schedules,
                active_schedules=overview.active,
                missed_since=overview.missed_since,
            )
        )
        summaries.append(summary)
    return Dashboard(
        now=now,
        targets=summaries,
        stored_by_storage=stored_by_storage,
        backups_24h=sum(row.successes_24h for row in facts),
        running=running,
    )


def _first_line(message: str, limit: int = 200) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class _Facts:
    """What one query finds about one target: each fact a correlated subquery that reads a few
    entries of an index on ``backup_history`` (on SQLite and PostgreSQL; see _last_statuses)."""

    target: Target
    newest_finished: str | None
    failure_at: datetime | None
    failure_message: str | None
    last_success_at: datetime | None
    last_verified_at: datetime | None
    runs_30d: int
    successes_30d: int
    successes_24h: int
    strip_dated: str | None
    strip_undated: str | None
    proof: str | None
    proof_at: datetime | None
    drill_status: str | None
    drill_at: datetime | None
    drill_restore_seconds: float | None


def _target_facts(now: datetime, target_ids: Sequence[int] | None) -> list[_Facts]:
    """Every target (by name), or those of ``target_ids``, with its facts, in one query."""
    since = now - timedelta(days=RATE_DAYS)
    newest_first = ("-started_at", "-id")
    runs = Backup.objects.filter(target=OuterRef("pk"))
    finished = runs.filter(status__in=FINISHED).order_by(*newest_first)
    failed = runs.filter(status=BackupStatus.FAILED).order_by(*newest_first)
    successes = runs.filter(status=BackupStatus.SUCCESS, started_at__isnull=False).order_by(*newest_first)
    verified = runs.filter(verified_at__isnull=False).order_by("-verified_at")
    # The strip's order is started_at DESC NULLS LAST, id DESC. No index can give NULLS LAST
    # on both databases, so the runs that started and those that never did (skipped while
    # another run held the target) are read apart, each in index order, and joined in Python.
    shown = runs.exclude(status__in=(BackupStatus.PENDING, BackupStatus.RUNNING))
    dated = shown.filter(started_at__isnull=False).order_by(*newest_first)
    undated = shown.filter(started_at__isnull=True).order_by("-id")
    drills = Drill.objects.filter(
        target=OuterRef("pk"), status__in=(DrillStatus.PASSED, DrillStatus.FAILED)
    ).order_by("-started_at", "-id")
    chosen = Target.objects.all() if target_ids is None else Target.objects.filter(pk__in=target_ids)
    rows = chosen.order_by("name").annotate(
        newest_finished=Subquery(finished.values("status")[:1]),
        failure_at=Subquery(failed.values("completed_at")[:1]),
        failure_message=Subquery(failed.values("error_message")[:1]),
        last_success_at=Subquery(successes.values("started_at")[:1]),
        last_verified_at=Subquery(verified.values("verified_at")[:1]),
        runs_30d=_count(runs.filter(status__in=FINISHED, started_at__gte=since)),
        successes_30d=_count(runs.filter(status=BackupStatus.SUCCESS, started_at__gte=since)),
        successes_24h=_count(
            runs.filter(status=BackupStatus.SUCCESS, started_at__gte=now - timedelta(hours=24))
        ),
        strip_dated=_last_statuses(dated),
        strip_undated=_last_statuses(undated),
        proof=Subquery(successes.values("proof")[:1]),
        proof_at=Subquery(successes.values("proof_at")[:1]),
        drill_status=Subquery(drills.values("status")[:1]),
        drill_at=Subquery(drills.values("finished_at")[:1]),
        drill_restore_seconds=Subquery(drills.values("restore_seconds")[:1]),
    )
    return [
        _Facts(
            target=target,
            newest_finished=target.newest_finished,
            failure_at=target.failure_at,
            failure_message=target.failure_message,
            last_success_at=target.last_success_at,
            last_verified_at=target.last_verified_at,
            runs_30d=target.runs_30d,
            successes_30d=target.successes_30d,
            successes_24h=target.successes_24h,
            strip_dated=target.strip_dated,
            strip_undated=target.strip_undated,
            proof=target.proof,
            proof_at=target.proof_at,
            drill_status=target.drill_status,
            drill_at=target.drill_at,
            drill_restore_seconds=target.drill_restore_seconds,
        )
        for target in rows
    ]


def _worst_data_ages(now: datetime, target_ids: Sequence[int] | None) -> dict[int, float]:
    """Per target with a success in the last RATE_DAYS days: the longest time its data went
    without a newer successful backup (the gaps between consecutive successes' starts, and from
    the last one to ``now``), in seconds. One query over the successes of the window."""
    successes = Backup.objects.filter(
        status=BackupStatus.SUCCESS, started_at__gte=now - timedelta(days=RATE_DAYS), started_at__lte=now
    )
    if target_ids is not None:
        successes = successes.filter(target_id__in=target_ids)
    previous: dict[int, datetime] = {}
    worst: dict[int, float] = {}
    rows = successes.order_by("target_id", "started_at").values_list("target_id", "started_at")
    started_at: datetime
    for target_id, started_at in rows:  # type: ignore[assignment]  # the filter excludes NULL
        if target_id in previous:
            gap = (started_at - previous[target_id]).total_seconds()
            worst[target_id] = max(worst.get(target_id, 0.0), gap)
        previous[target_id] = started_at
    for target_id, last in previous.items():
        worst[target_id] = max(worst.get(target_id, 0.0), (now - last).total_seconds())
    return worst


def _count(runs: QuerySet[Backup]) -> Coalesce:
    """How many of ``runs`` (correlated to the outer target) there are; 0 when none."""
    counted = runs.order_by().values("target_id").annotate(count=Count("pk")).values("count")
    return Coalesce(Subquery(counted), 0)


def _last_statuses(runs: QuerySet[Backup]) -> Subquery:
    """The statuses of the first STRIP_RUNS of ``runs`` (ordered, correlated to the target),
    comma-joined in that order."""
    if connection.vendor == "mysql":
        # MariaDB cannot correlate a subquery in FROM: there every matching run is aggregated
        # (slower on a long history, the same strip).
        grouped = runs.order_by().values("target").annotate(statuses=NewestStatuses())
        return Subquery(grouped.values("statuses"))
    return Statuses(runs, STRIP_RUNS)


class Statuses(Subquery):
    """The ``status`` of the first ``limit`` rows of an ordered queryset of runs, comma-joined
    in that order: a target's last runs as one value of the target's row, read from an index."""

    template = "(SELECT GROUP_CONCAT(runs.status, ',') FROM (%(subquery)s) runs)"
    output_field = CharField()

    def __init__(self, queryset: QuerySet[Backup], limit: int) -> None:
        super().__init__(queryset.values("status", "started_at", "id")[:limit])

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        # PostgreSQL states the order inside the aggregate; SQLite keeps the subquery's order.
        template = (
            "(SELECT STRING_AGG(runs.status, ',' ORDER BY runs.started_at DESC, runs.id DESC) "
            "FROM (%(subquery)s) runs)"
        )
        return self.as_sql(compiler, connection, **{**extra_context, "template": template})


class NewestStatuses(Aggregate):
    """MySQL and MariaDB: the statuses of a group of runs, newest first, comma-joined (the
    result is cut at ``group_concat_max_len``, 1 024 bytes by default: far more than a strip)."""

    function = "GROUP_CONCAT"
    output_field = CharField()

    def __init__(self) -> None:
        super().__init__(F("status"), F("started_at"), F("id"))

    def as_mysql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        (status, status_params), (started, started_params), (pk, pk_params) = (
            compiler.compile(expression) for expression in self.source_expressions
        )
        sql = f"GROUP_CONCAT({status} ORDER BY {started} DESC, {pk} DESC SEPARATOR ',')"
        return sql, (*status_params, *started_params, *pk_params)


def _strip(dated: str | None, undated: str | None) -> list[str]:
    """The last runs' statuses, oldest first, from the two halves newest first."""
    newest_first = [*(dated or "").split(","), *(undated or "").split(",")]
    return [status for status in newest_first if status][:STRIP_RUNS][::-1]


def _stored_bytes(target_ids: Sequence[int] | None) -> tuple[dict[int, int], list[tuple[str, int]]]:
    """Bytes in stored copies: per target, and per storage (by name), from one pass over the
    partial index of stored copies (grouped by ids; the names come apart). Retention marks a
    backup deleted only once each of its copies is deleted, so no join to the backups is needed."""
    per_target: dict[int, int] = defaultdict(int)
    per_storage: dict[int, int] = defaultdict(int)
    copies = BackupCopy.objects.filter(status=Word(CopyStatus.STORED))
    if target_ids is not None:
        copies = copies.filter(target_id__in=target_ids)
    rows = copies.values_list("target_id", "storage_id").annotate(total=Sum("size")).order_by()
    for target_id, storage_id, total in rows:
        per_target[target_id] += total or 0
        per_storage[storage_id] += total or 0
    names = dict(Storage.objects.values_list("pk", "name"))  # a handful of rows
    return dict(per_target), sorted((names[pk], total) for pk, total in per_storage.items())


class Word(Value):
    """A constant word written into the SQL itself, not bound as a parameter: SQLite uses a
    partial index (``WHERE status = 'stored'``) only when the query's own text implies its
    condition, which a bound parameter never does (240 ms instead of 16 ms on a million copies)."""

    def __init__(self, word: str) -> None:
        if not re.fullmatch(r"[a-z_]+", word):
            raise ValueError(f"not a plain word: {word!r}")
        super().__init__(word, output_field=CharField())

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        return f"'{self.value}'", []


def running_now() -> list[Running]:
    """Every running backup, then the other apps' running work (restores)."""
    return running_backups() + [from_work(work) for work in running_work()]


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
            url=reverse("admin:backups_backup_change", args=[pk]),
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
