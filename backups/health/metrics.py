"""Prometheus metrics (``/metrics``), computed from the catalog at each scrape: every process
(web replicas, workers) exports the same values, and nothing is lost at a restart.

A scrape runs a fixed number of queries whatever the number of targets or backups: one over the
targets with correlated subqueries that read a few index entries each (as the dashboard does),
one count of runs grouped by target and status, one sum of stored copies grouped by storage, the
storage names, and the schedules' registered lookup (``requests.schedule_states``).

Who may read them: a bearer token (``BACKUPSITE_METRICS_TOKEN``) or a client address inside
``BACKUPSITE_METRICS_ALLOW`` (behind ``BACKUPSITE_TRUSTED_PROXIES``); nobody when neither is set.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Subquery, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from backups.access.proxies import Network, client_address
from backups.health.summary import FINISHED, Word
from backups.models import (
    PROOF_ORDER,
    Backup,
    BackupCopy,
    BackupStatus,
    BackupStep,
    CopyStatus,
    Drill,
    DrillStatus,
    ExternalWatch,
    Storage,
    Target,
)
from backups.requests import ScheduleState, schedule_states

COUNTED = (BackupStatus.SUCCESS, BackupStatus.FAILED, BackupStatus.CORRUPT, BackupStatus.SKIPPED)
ANOMALY_STEP = "anomaly"  # the step schedules' shrink check records on a suspiciously small backup


# -- access ----------------------------------------------------------------------------------


def metrics_refusal(authorization: str | None, remote_addr: str | None, forwarded_for: str | None) -> str:
    """Why this caller may not read the metrics ("" when it may): a matching ``Authorization:
    Bearer`` token, or a client address inside BACKUPSITE_METRICS_ALLOW."""
    token: str = settings.BACKUPSITE_METRICS_TOKEN
    networks = settings.BACKUPSITE_METRICS_ALLOW
    if not token and not networks:
        return (
            "Metrics are off: set BACKUPSITE_METRICS_TOKEN (or BACKUPSITE_METRICS_TOKEN_FILE) and send "
            "'Authorization: Bearer <token>', or list the scrapers' addresses in BACKUPSITE_METRICS_ALLOW "
            "(CIDRs, e.g. 10.0.0.0/8)."
        )
    if token and _bearer_matches(authorization, token):
        return ""
    if networks and _address_allowed(remote_addr, forwarded_for, networks):
        return ""
    ways = []
    if token:
        ways.append("send 'Authorization: Bearer <token>' with the token of BACKUPSITE_METRICS_TOKEN")
    if networks:
        ways.append("scrape from an address listed in BACKUPSITE_METRICS_ALLOW")
    return f"Metrics refused: {', or '.join(ways)}."


def _bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _address_allowed(
    remote_addr: str | None, forwarded_for: str | None, networks: tuple[Network, ...]
) -> bool:
    client = client_address(remote_addr, forwarded_for, settings.BACKUPSITE_TRUSTED_PROXIES)
    if client is None:
        return False
    address = ipaddress.ip_address(client)
    return any(address in network for network in networks)


# -- the facts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetFacts:
    name: str
    is_active: bool
    last_success_at: datetime | None
    last_success_bytes: int | None
    last_success_shrunken: bool
    last_failure_at: datetime | None
    last_verified_at: datetime | None
    last_duration_seconds: float | None
    #: level -> when a backup of the target last obtained a proof at least that strong
    proven_at: dict[str, datetime] = field(default_factory=dict)
    last_drill_at: datetime | None = None  # the newest finished drill's end
    last_drill_restore_seconds: float | None = None
    last_drill_passed: bool | None = None


@dataclass
class CatalogFacts:
    targets: dict[int, TargetFacts]
    runs: dict[tuple[int, str], int]  # (target id, status) -> how many
    storage_bytes: dict[str, int]  # storage name -> bytes in stored copies
    schedules: list[ScheduleState] = field(default_factory=list)
    external_missed: dict[int, bool] = field(default_factory=dict)  # watched target id -> missed


def gather() -> CatalogFacts:
    """What the metrics show, in a fixed number of queries (six, plus the schedules')."""
    return CatalogFacts(
        targets=_target_facts(),
        runs=_run_counts(),
        storage_bytes=_storage_bytes(),
        schedules=schedule_states(),
        external_missed=_external_missed(),
    )


def _external_missed() -> dict[int, bool]:
    """External targets (backups.watching): missed while the expected file has not come or the
    storage cannot be listed (the watch's open outages)."""
    rows = ExternalWatch.objects.values_list("target_id", "missed_since", "failing_since")
    return {target_id: missed is not None or failing is not None for target_id, missed, failing in rows}


_TARGET_COLUMNS = (
    "pk", "name", "is_active", "success_at", "success_bytes", "shrunken", "failure_at", "verified_at", "duration",
    "drill_at", "drill_restore", "drill_status", *(f"proven_{level}" for level in PROOF_ORDER),
)  # fmt: skip


def _target_facts() -> dict[int, TargetFacts]:
    newest_first = ("-started_at", "-id")
    runs = Backup.objects.filter(target=OuterRef("pk"))
    successes = runs.filter(status=BackupStatus.SUCCESS, started_at__isnull=False).order_by(*newest_first)
    failures = runs.filter(status=BackupStatus.FAILED, started_at__isnull=False).order_by(*newest_first)
    finished = runs.filter(status__in=FINISHED, started_at__isnull=False).order_by(*newest_first)
    verified = runs.filter(verified_at__isnull=False).order_by("-verified_at")
    proven = runs.filter(status=BackupStatus.SUCCESS, proof_at__isnull=False).order_by("-proof_at")
    drills = Drill.objects.filter(
        target=OuterRef("pk"), status__in=(DrillStatus.PASSED, DrillStatus.FAILED)
    ).order_by("-started_at", "-id")
    rows = (
        Target.objects.order_by("name")
        .annotate(
            success_id=Subquery(successes.values("pk")[:1]),
            success_at=Subquery(successes.values("completed_at")[:1]),
            success_bytes=Subquery(successes.values("file_size")[:1]),
            failure_at=Subquery(failures.values("completed_at")[:1]),
            verified_at=Subquery(verified.values("verified_at")[:1]),
            duration=Subquery(finished.values("duration_seconds")[:1]),
            drill_at=Subquery(drills.values("finished_at")[:1]),
            drill_restore=Subquery(drills.values("restore_seconds")[:1]),
            drill_status=Subquery(drills.values("status")[:1]),
            **{
                f"proven_{level}": Subquery(
                    proven.filter(proof__in=PROOF_ORDER[index:]).values("proof_at")[:1]
                )
                for index, level in enumerate(PROOF_ORDER)
            },
        )
        .annotate(
            shrunken=Exists(BackupStep.objects.filter(backup_id=OuterRef("success_id"), name=ANOMALY_STEP))
        )
        .values_list(*_TARGET_COLUMNS)
    )
    facts = {}
    for row in rows:
        pk, name, is_active, success_at, success_bytes, shrunken, failure_at, verified_at, duration = row[:9]
        drill_at, drill_restore, drill_status = row[9:12]
        facts[pk] = TargetFacts(
            name=name,
            is_active=is_active,
            last_success_at=success_at,
            last_success_bytes=success_bytes,
            last_success_shrunken=bool(shrunken),
            last_failure_at=failure_at,
            last_verified_at=verified_at,
            last_duration_seconds=duration,
            proven_at={
                str(level): moment for level, moment in zip(PROOF_ORDER, row[12:], strict=True) if moment
            },
            last_drill_at=drill_at,
            last_drill_restore_seconds=drill_restore,
            last_drill_passed=None if drill_status is None else drill_status == DrillStatus.PASSED,
        )
    return facts


def _run_counts() -> dict[tuple[int, str], int]:
    rows = Backup.objects.order_by().values_list("target_id", "status").annotate(count=Count("pk"))
    return {(target_id, status): count for target_id, status, count in rows}


def _storage_bytes() -> dict[str, int]:
    """Bytes in stored copies per storage name (every storage, 0 when it holds none). Grouped by
    target and storage, the order of the partial covering index of stored copies (see
    health.summary.Word), then summed here: grouped by storage alone, SQLite walks the storage
    foreign key's index and reads every copy row instead (370 ms instead of 16 ms on a million)."""
    stored = (
        BackupCopy.objects.filter(status=Word(CopyStatus.STORED))
        .order_by()
        .values_list("target_id", "storage_id")
        .annotate(total=Sum("size"))
    )
    totals: dict[int, int] = defaultdict(int)
    for _target_id, storage_id, total in stored:
        totals[storage_id] += total or 0
    return {
        name: totals.get(pk, 0) for pk, name in Storage.objects.order_by("name").values_list("pk", "name")
    }


# -- the exposition --------------------------------------------------------------------------


def metric_families(facts: CatalogFacts) -> Iterator[Metric]:
    """The metrics of ``facts``, as prometheus_client families."""
    targets = facts.targets

    def gauge(name: str, documentation: str, labels: tuple[str, ...] = ("target",)) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"backupsite_{name}", documentation, labels=list(labels))

    active = gauge("target_active", "1 when the target is active (backed up by its schedules), else 0.")
    success = gauge(
        "last_success_timestamp_seconds",
        "When the target's newest successful backup completed (Unix time); absent when none.",
    )
    size = gauge("backup_size_bytes", "Stored bytes of the target's newest successful backup.")
    shrunken = gauge(
        "last_backup_shrunken",
        "1 when the target's newest successful backup was flagged as an anomaly (its raw size below "
        "BACKUPSITE_SHRINK_PERCENT of the schedule's previous success), else 0.",
    )
    failure = gauge(
        "last_failure_timestamp_seconds",
        "When the target's newest failed backup completed (Unix time); absent when none.",
    )
    verified = gauge(
        "last_verified_timestamp_seconds",
        "When a backup of the target was last verified (Unix time); absent when never.",
    )
    duration = gauge("backup_duration_seconds", "How long the target's newest finished backup ran.")
    running = gauge("running_backups", "Backups of the target running now.")
    for pk, target in targets.items():
        labels = [target.name]
        active.add_metric(labels, 1 if target.is_active else 0)
        shrunken.add_metric(labels, 1 if target.last_success_shrunken else 0)
        running.add_metric(labels, facts.runs.get((pk, BackupStatus.RUNNING), 0))
        if target.last_success_at is not None:
            success.add_metric(labels, target.last_success_at.timestamp())
        if target.last_success_bytes is not None:
            size.add_metric(labels, target.last_success_bytes)
        if target.last_failure_at is not None:
            failure.add_metric(labels, target.last_failure_at.timestamp())
        if target.last_verified_at is not None:
            verified.add_metric(labels, target.last_verified_at.timestamp())
        if target.last_duration_seconds is not None:
            duration.add_metric(labels, target.last_duration_seconds)
    yield from (active, success, size, shrunken, failure, verified, duration, running)
    yield from _proof_families(targets, gauge)

    backups = CounterMetricFamily(
        "backupsite_backups",
        "Finished backups of the target by outcome (success, failed, corrupt, skipped), from the catalog.",
        labels=["target", "status"],
    )
    for pk, target in targets.items():
        for status in COUNTED:
            backups.add_metric([target.name, str(status)], facts.runs.get((pk, status), 0))
    yield backups

    missed = gauge(
        "schedule_missed",
        "1 while the schedule's due run has not succeeded within its grace (BACKUPSITE_MISSED_GRACE_MINUTES).",
        ("target", "schedule"),
    )
    for state in facts.schedules:
        owner = targets.get(state.target_id)
        if owner is not None:
            missed.add_metric([owner.name, state.name], 1 if state.missed else 0)
    yield missed

    watched = gauge(
        "external_missed",
        "1 while an external target's expected file has not come within its grace, or its storage "
        "cannot be listed (docs/EXTERNAL.md), else 0.",
    )
    for target_id, is_missed in facts.external_missed.items():
        owner = targets.get(target_id)
        if owner is not None:
            watched.add_metric([owner.name], 1 if is_missed else 0)
    yield watched

    used = gauge("storage_used_bytes", "Bytes in the storage's stored copies.", ("storage",))
    for name, total in facts.storage_bytes.items():
        used.add_metric([name], total)
    yield used


def _proof_families(
    targets: dict[int, TargetFacts], gauge: Callable[..., GaugeMetricFamily]
) -> Iterator[Metric]:
    proven = gauge(
        "last_proven_timestamp_seconds",
        "When a backup of the target last obtained a proof at least as strong as level (stored < "
        "verified < trial < drilled), Unix time; absent when none.",
        ("target", "level"),
    )
    drilled = gauge("last_drill_timestamp_seconds", "When the target's newest finished restore drill ended.")
    restore = gauge(
        "last_drill_restore_seconds",
        "How long the newest finished drill's restore took (what an outage costs).",
    )
    passed = gauge("last_drill_passed", "1 when the target's newest finished restore drill passed, else 0.")
    for target in targets.values():
        for level, moment in target.proven_at.items():
            proven.add_metric([target.name, level], moment.timestamp())
        if target.last_drill_at is not None:
            drilled.add_metric([target.name], target.last_drill_at.timestamp())
        if target.last_drill_restore_seconds is not None:
            restore.add_metric([target.name], target.last_drill_restore_seconds)
        if target.last_drill_passed is not None:
            passed.add_metric([target.name], 1 if target.last_drill_passed else 0)
    yield from (proven, drilled, restore, passed)


class _Collector:
    def __init__(self, facts: CatalogFacts) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        return metric_families(self.facts)


def metrics_exposition() -> tuple[bytes, str]:
    """The catalog's metrics in Prometheus' text format, and its content type. A fresh registry
    per scrape: the values are the catalog's, not counters of this process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(gather()))
    return generate_latest(registry), CONTENT_TYPE_LATEST
