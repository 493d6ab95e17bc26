"""Where one scheduled run spends its time and its catalog queries, outside the dump.

Run as a child process (``python bench/schedule_profile.py RUNS``) with the environment of a
schedule load's BACKUPSITE_HOME (its catalog, after the load, its workers stopped). It runs
``RUNS`` firings in this process, one schedule each, each with ``now`` a day after the load's
slot (so each claims a slot of its own), exactly as a worker's task does
(``schedules.services.run_schedule``), and attributes every catalog query and every
millisecond to the innermost phase running when it happened: the firing's lookups, the slot
claim, the run's claim, each step (``validate``, ``dump``, ``compress``, ``upload``,
``verify``, ``manifest``), recording the outcome, notifications, monitoring and retention.
Queries are counted with ``connection.execute_wrapper`` on the run's own connection (the
heartbeat thread's are not: its first touch comes after BACKUPSITE_HEARTBEAT_SECONDS, longer
than a run here). Prints one JSON object on stdout.

The phases are found by wrapping the functions that begin them, in this process only; the
product code is not changed.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The phases, in run order; "firing" is run_schedule itself (its own lookups and logging).
PHASES = (
    "firing", "claim slot", "run (other)", "claim", "validate", "dump", "compress", "upload",
    "verify", "manifest", "record outcome", "notifications", "monitoring", "retention",
)  # fmt: skip
OUTSIDE_DUMP = tuple(p for p in PHASES if p != "dump")


@dataclass
class PhaseStats:
    ms_median: float
    ms_p90: float
    queries_median: float


@dataclass
class ProfileResult:
    runs: int
    statuses: dict[str, int]
    phases: dict[str, PhaseStats]
    total_ms_median: float
    outside_dump_ms_median: float
    queries_median: float
    queries_max: int
    sample_queries: dict[str, list[str]] = field(default_factory=dict)  # one run's SQL, per phase


class Recorder:
    """A stack of phases; time and queries go to the innermost one."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, float]] = []
        self.ms: dict[str, float] = {}
        self.queries: dict[str, int] = {}
        self.sql: dict[str, list[str]] = {}

    def reset(self) -> None:
        self.ms, self.queries, self.sql = {}, {}, {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        now = time.perf_counter()
        if self.stack:  # the outer phase's clock pauses while this one runs
            outer, since = self.stack[-1]
            self.ms[outer] = self.ms.get(outer, 0.0) + (now - since) * 1000
        self.stack.append((name, now))
        try:
            yield
        finally:
            end = time.perf_counter()
            _, since = self.stack.pop()
            self.ms[name] = self.ms.get(name, 0.0) + (end - since) * 1000
            if self.stack:
                outer, _ = self.stack[-1]
                self.stack[-1] = (outer, end)

    def execute(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        name = self.stack[-1][0] if self.stack else "outside"
        self.queries[name] = self.queries.get(name, 0) + 1
        self.sql.setdefault(name, []).append(sql[:160])
        return execute(sql, params, many, context)


def _wrap(recorder: Recorder, module: Any, attribute: str, phase: str) -> None:
    original = getattr(module, attribute)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with recorder.phase(phase):
            return original(*args, **kwargs)

    setattr(module, attribute, wrapped)


def _wrap_steps(recorder: Recorder, module: Any) -> None:
    original = module.record_step

    @contextlib.contextmanager
    def wrapped(backup: Any, name: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with (
            recorder.phase(name if name in PHASES else "run (other)"),
            original(backup, name, *args, **kwargs) as step,
        ):
            yield step

    module.record_step = wrapped
    done = getattr(module, "record_done", None)  # a step recorded finished in one write
    if done is not None:
        _wrap(recorder, module, "record_done", "compress")


def instrument(recorder: Recorder) -> None:
    from backups import services as backup_services
    from backups.runs import claims, destinations, service
    from schedules import monitoring
    from schedules import services as schedule_services

    _wrap(recorder, schedule_services, "claim_slot", "claim slot")
    _wrap(recorder, backup_services, "run_backup", "run (other)")
    _wrap(recorder, service, "claim", "claim")
    _wrap(recorder, service, "_record_success", "record outcome")
    _wrap(recorder, service, "_fail", "record outcome")
    _wrap(recorder, service, "notify_backup", "notifications")
    _wrap(recorder, claims, "notify_backup", "notifications")
    _wrap(recorder, monitoring, "check_shrinkage", "monitoring")
    _wrap(recorder, monitoring, "note_recovery", "monitoring")
    _wrap(recorder, backup_services, "cleanup_target", "retention")
    _wrap_steps(recorder, service)
    _wrap_steps(recorder, destinations)


def profile(runs: int) -> ProfileResult:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.db import connection
    from django.utils import timezone

    from schedules import services as schedule_services
    from schedules.models import BackupSchedule

    recorder = Recorder()
    instrument(recorder)
    schedules = list(BackupSchedule.objects.order_by("pk").values_list("pk", "latest_slot")[:runs])
    if len(schedules) < runs:
        raise SystemExit(f"only {len(schedules)} schedules in the catalog; asked for {runs} runs")
    per_run: list[dict[str, float]] = []
    per_run_queries: list[dict[str, int]] = []
    statuses: dict[str, int] = {}
    sample: dict[str, list[str]] = {}
    for index, (pk, latest) in enumerate(schedules):
        # A day after the slot the load ran (or after now, for a schedule that never ran): a
        # slot of its own, with none skipped before it for a daily schedule.
        now = (latest or timezone.now()) + timedelta(days=1, seconds=1)
        recorder.reset()
        with connection.execute_wrapper(recorder.execute), recorder.phase("firing"):
            backup = schedule_services.run_schedule(pk, now=now)
        status = backup.status if backup is not None else "none"
        statuses[status] = statuses.get(status, 0) + 1
        per_run.append(dict(recorder.ms))
        per_run_queries.append(dict(recorder.queries))
        if index == len(schedules) // 2:
            sample = dict(recorder.sql)
    phases = {}
    for name in PHASES:
        times = sorted(run.get(name, 0.0) for run in per_run)
        counts = [run.get(name, 0) for run in per_run_queries]
        phases[name] = PhaseStats(
            ms_median=statistics.median(times),
            ms_p90=times[min(len(times) - 1, int(len(times) * 0.9))],
            queries_median=statistics.median(counts),
        )
    totals = [sum(run.values()) for run in per_run]
    outside = [sum(v for k, v in run.items() if k != "dump") for run in per_run]
    queries = [sum(run.values()) for run in per_run_queries]
    return ProfileResult(
        runs=runs,
        statuses=statuses,
        phases=phases,
        total_ms_median=statistics.median(totals),
        outside_dump_ms_median=statistics.median(outside),
        queries_median=statistics.median(queries),
        queries_max=max(queries),
        sample_queries=sample,
    )


def main(argv: list[str]) -> int:
    runs = int(argv[1]) if len(argv) > 1 else 30
    result = profile(runs)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
