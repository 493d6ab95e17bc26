"""Retention planning benchmark: ``backups.retention.planner.plan`` on 10 000 to 1 000 000 backups.

    .venv/bin/python bench/run.py --engines retention [--retention-sizes 10000,100000,1000000]
        [--retention-runs 7] [--warmup 1]

Each size runs in its own child process (``retentionbench.py child N RUNS WARMUP``, one JSON
object on stdout), so one size's memory high-water mark never hides another's. The child builds
N backups in memory: one every 15 minutes (start delayed 0-30 s) ending at a fixed ``NOW``, the
newest one still running, ~5 % failed, ~1 % skipped, a few corrupt and stale running ones, one
verified backup a day, and an equal-timestamp tie every ``TIE_EVERY`` backups; handed to
``plan()`` newest first, the order ``Backup.Meta.ordering`` gives ``backups.cleanup``. The
policy (``POLICY``, timezone ``TIMEZONE``) uses every rule kind: all six count rules (yearly
unlimited), ``keep_within``, four tiers, two spacing rules, ``retention_days``, ``max_backups``
and ``min_keep``.

Measured in the child, in-process: wall time of ``plan()`` (``time.perf_counter``) over RUNS
timed calls after WARMUP untimed ones, garbage collector on as in production; then, in one more
call with ``tracemalloc`` tracing (so tracing never slows the timed calls), the peak of the
memory ``plan()`` allocates and what its returned ``Plan`` still holds; the process's
``ru_maxrss`` before the first and after the last timed call, and VmRSS/VmHWM from
/proc/self/status. Every plan is checked (untimed): the newest success, the newest verified
backup and the ``min_keep`` newest successes are kept, running ones are kept, every kept backup
has a reason, nothing is lost or duplicated, and planning the kept backups again deletes nothing.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CADENCE = timedelta(minutes=15)
TIMEZONE = "Europe/Berlin"
SEED = 20261122
TIE_EVERY = 9973  # backup k (counted from the newest) gets the timestamp of backup k - 1
VERIFIED_EVERY = 96  # one verified backup a day
TARGET_SIZE = 100_000
TARGET_SECONDS = 1.0  # the issue: "well under a second" for 100 000 backups
WELL_UNDER = 0.5  # what "well under" is taken to mean: a median of at most half the budget
POLICY: dict[str, Any] = {
    "keep_last": 10,
    "keep_hourly": 48,
    "keep_daily": 14,
    "keep_weekly": 8,
    "keep_monthly": 24,
    "keep_yearly": -1,
    "keep_within": "2d",
    "tiers": ["15min:24h", "1h:72h", "1d:14d", "1w:1y"],
    "rules": ["3.1", "2.15"],
    "retention_days": 730,
    "max_backups": 250,
    "min_keep": 3,
}
# Where each rule kind shows up: a reason on a kept backup, or (the caps) on a deleted one.
RULE_KINDS = (
    *(name for name in POLICY if name.startswith("keep_")),
    *(f"tier {tier}" for tier in POLICY["tiers"]),
    *(f"rule {rule}" for rule in POLICY["rules"]),
    "min_keep",
    "retention_days",
    "max_backups",
)


class RetentionBenchError(Exception):
    """A child failed, or a plan broke one of the checked properties."""


@dataclass
class SizeResult:
    backups: int
    span_days: float
    statuses: dict[str, int]
    ties: int
    build_seconds: float
    warmup_seconds: list[float]
    seconds: list[float]  # the timed plan() calls
    gc_collections: list[int]  # per generation, during all the timed calls together
    traced_peak_bytes: int  # tracemalloc peak during one plan() call (the input is not counted)
    traced_result_bytes: int  # still allocated once it returned: the Plan (and its reasons)
    rss_start_kib: int  # VmRSS after imports
    rss_built_kib: int  # VmRSS with the backups and the policy built
    maxrss_before_kib: int  # ru_maxrss before the first plan() call
    maxrss_after_kib: int  # ru_maxrss after the last timed call (before tracing)
    hwm_after_kib: int  # VmHWM at the same moment (this program's own peak, without the fork floor)
    kept: int
    deleted: int
    kept_successes: int
    deleted_successes: int
    kept_reasons: dict[str, int]  # rule kind -> kept backups carrying a reason of that kind
    deleted_reasons: dict[str, int]  # reason kind -> deleted backups
    checks: list[str]  # the properties checked (every one passed, or the child failed)

    @property
    def median(self) -> float:
        return float(statistics.median(self.seconds))

    @property
    def per_backup_us(self) -> float:
        return self.median / self.backups * 1e6


@dataclass
class RetentionResult:
    sizes: list[SizeResult]
    runs: int
    warmup: int
    seconds: float = 0.0
    load: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    child_argv: str = ""


# ---------------------------------------------------------------------------------------------
# The parent: one child per size
# ---------------------------------------------------------------------------------------------


def measure(sizes: list[int], runs: int, warmup: int, logs: Path) -> RetentionResult:
    started = time.perf_counter()
    load = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    results = []
    for size in sizes:
        print(f"  [{size} backups] planning: {warmup} warm-up + {runs} timed runs ...", flush=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "child", str(size), str(runs), str(warmup)]
        log = logs / f"retention-{size}.log"
        with open(log, "w") as stderr:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
        if done.returncode != 0:
            tail = log.read_text().strip().splitlines()[-5:]
            raise RetentionBenchError(
                f"the {size}-backup child exited with {done.returncode}: {' / '.join(tail)} (log: {log})"
            )
        result = load_size(json.loads(done.stdout))
        results.append(result)
        print(
            f"  [{size} backups] plan() median {result.median:.3f} s "
            f"(min {min(result.seconds):.3f}, max {max(result.seconds):.3f}), "
            f"{result.per_backup_us:.2f} us/backup; traced peak {result.traced_peak_bytes / 2**20:.1f} MiB; "
            f"ru_maxrss {result.maxrss_before_kib / 1024:.1f} -> {result.maxrss_after_kib / 1024:.1f} MiB; "
            f"kept {result.kept}, deleted {result.deleted}",
            flush=True,
        )
    load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    return RetentionResult(
        sizes=results,
        runs=runs,
        warmup=warmup,
        seconds=time.perf_counter() - started,
        load=load,
        versions={"python": sys.version.split()[0]},
        child_argv=f".venv/bin/python bench/retentionbench.py child N {runs} {warmup}",
    )


def load_size(payload: dict[str, Any]) -> SizeResult:
    return SizeResult(**payload)


def save(result: RetentionResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=2))


# ---------------------------------------------------------------------------------------------
# The child: build, plan, check
# ---------------------------------------------------------------------------------------------


def build_backups(count: int) -> list[Any]:
    """``count`` backups, newest first (the catalog's order). The same seed for every size, so
    a smaller set is the newest part of a larger one (ids apart: id 1 is the oldest)."""
    from backups.retention.planner import BackupInfo

    rng = random.Random(SEED)
    backups = []
    moment = NOW
    for k in range(count):
        if k == 0:
            status = "running"  # the one in progress at NOW
        else:
            if k % TIE_EVERY != 0:  # else: the same timestamp as the newer neighbour (lower id)
                moment = NOW - k * CADENCE + timedelta(seconds=rng.randrange(31))
            draw = rng.random()
            if draw < 0.05:
                status = "failed"
            elif draw < 0.06:
                status = "skipped"
            elif draw < 0.061:
                status = "corrupt"
            elif draw < 0.0612:
                status = "running"  # stale: a worker died
            else:
                status = "success"
        verified = status == "success" and k % VERIFIED_EVERY == 7
        backups.append(BackupInfo(count - k, moment, status, verified))
    return backups


def _status_kib(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def reason_kind(reason: str) -> str:
    """The rule kind behind a reason text (``daily 3`` -> ``keep_daily``); other texts as given."""
    words = reason.split()
    head = words[0]
    counts = {"last", "hourly", "daily", "weekly", "monthly", "yearly"}
    if head in counts:
        return f"keep_{head}"
    if head == "oldest" and len(words) > 1 and words[1].lstrip("(") in counts:
        return f"keep_{words[1].lstrip('(')}"
    if head == "within" and len(words) == 2:
        return "keep_within"
    if head == "tier":
        return f"tier {words[1]}"
    if head == "rule":
        return f"rule {words[1].rstrip(':')}"
    if head == "min_keep":
        return "min_keep"
    if head == "expired:":
        return "retention_days"
    if head == "beyond":
        return "max_backups"
    if head in {"failed", "skipped", "corrupt"}:
        return f"{head} run, older than the newest success"
    return reason


def check(backups: list[Any], result: Any, policy: Any) -> list[str]:
    """The properties every plan must have; raise RetentionBenchError naming the first broken."""
    from backups.retention.planner import RUNNING, SUCCESS, plan

    def require(name: str, ok: bool) -> None:
        if not ok:
            raise RetentionBenchError(f"check failed: {name}")
        passed.append(name)

    passed: list[str] = []
    kept = {k.backup.id: k for k in result.keep}
    deleted = {d.backup.id for d in result.delete}
    newest_first = sorted(backups, key=lambda b: (b.timestamp, b.id), reverse=True)
    successes = [b for b in newest_first if b.status == SUCCESS]
    newest = next(b for b in successes if b.timestamp <= NOW)
    require(
        "the newest success is kept",
        newest.id in kept and "newest success" in kept[newest.id].reasons,
    )
    verified = next(b for b in successes if b.verified)
    require("the newest verified backup is kept", verified.id in kept)
    require(
        f"the min_keep {policy.min_keep} newest successes are kept",
        all(b.id in kept for b in successes[: policy.min_keep]),
    )
    require("running backups are kept", all(b.id in kept for b in backups if b.status == RUNNING))
    require("every kept backup has a reason", all(k.reasons for k in result.keep))
    require(
        "every backup is kept or deleted, once",
        len(kept) == len(result.keep)
        and len(deleted) == len(result.delete)
        and not kept.keys() & deleted
        and len(kept) + len(deleted) == len(backups),
    )
    require(
        f"at most max_backups {policy.max_backups} successes are kept",
        sum(k.backup.status == SUCCESS for k in result.keep) <= policy.max_backups,
    )
    require("the plan's anchor is the newest success", result.anchor == newest.timestamp)
    again = plan([k.backup for k in result.keep], policy, NOW)
    require("planning the kept backups again deletes nothing", not again.delete)
    return passed


def child(size: int, runs: int, warmup: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from backups.retention.planner import SUCCESS, plan
    from backups.retention.policy import Policy

    rss_start = _status_kib("VmRSS")
    clock = time.perf_counter()
    backups = build_backups(size)
    build_seconds = time.perf_counter() - clock
    policy = Policy.from_mapping(POLICY, TIMEZONE)
    rss_built = _status_kib("VmRSS")
    maxrss_before = _maxrss_kib()

    result: Any = None
    warmups = []
    for _ in range(warmup):
        result = None  # the previous plan is freed outside the clock
        clock = time.perf_counter()
        result = plan(backups, policy, NOW)
        warmups.append(time.perf_counter() - clock)
    gc_before = [generation["collections"] for generation in gc.get_stats()]
    times = []
    for _ in range(runs):
        result = None
        clock = time.perf_counter()
        result = plan(backups, policy, NOW)
        times.append(time.perf_counter() - clock)
    gc_after = [generation["collections"] for generation in gc.get_stats()]
    maxrss_after, hwm_after = _maxrss_kib(), _status_kib("VmHWM")

    result = None
    gc.collect()
    tracemalloc.start()
    result = plan(backups, policy, NOW)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    checks = check(backups, result, policy)
    statuses: dict[str, int] = {}
    for backup in backups:
        statuses[backup.status] = statuses.get(backup.status, 0) + 1
    kept_reasons: dict[str, int] = {}
    for kept in result.keep:
        for kind in {reason_kind(reason) for reason in kept.reasons}:
            kept_reasons[kind] = kept_reasons.get(kind, 0) + 1
    deleted_reasons: dict[str, int] = {}
    for gone in result.delete:
        kind = reason_kind(gone.reason)
        deleted_reasons[kind] = deleted_reasons.get(kind, 0) + 1
    oldest = min(backup.timestamp for backup in backups)
    return asdict(
        SizeResult(
            backups=size,
            span_days=(NOW - oldest).total_seconds() / 86400,
            statuses=dict(sorted(statuses.items(), key=lambda item: -item[1])),
            ties=sum(1 for k in range(1, size) if k % TIE_EVERY == 0),
            build_seconds=build_seconds,
            warmup_seconds=warmups,
            seconds=times,
            gc_collections=[after - before for before, after in zip(gc_before, gc_after, strict=True)],
            traced_peak_bytes=peak,
            traced_result_bytes=retained,
            rss_start_kib=rss_start,
            rss_built_kib=rss_built,
            maxrss_before_kib=maxrss_before,
            maxrss_after_kib=maxrss_after,
            hwm_after_kib=hwm_after,
            kept=len(result.keep),
            deleted=len(result.delete),
            kept_successes=sum(k.backup.status == SUCCESS for k in result.keep),
            deleted_successes=sum(d.backup.status == SUCCESS for d in result.delete),
            kept_reasons=kept_reasons,
            deleted_reasons=deleted_reasons,
            checks=checks,
        )
    )


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "child":
        size, runs, warmup = (int(value) for value in argv[1:])
        try:
            payload = child(size, runs, warmup)
        except RetentionBenchError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print(json.dumps(payload))
        return 0
    print(
        "usage: retentionbench.py child N RUNS WARMUP (run bench/run.py --engines retention)", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
