"""Load: many schedules due in the same minute, run by real Celery worker processes.

A throwaway BACKUPSITE_HOME with a SQLite catalog file, a Redis broker (Debian's ``redis-server``
on a free loopback port), ``COUNT`` small SQLite source databases and as many targets and
schedules (``M H * * *`` for one minute a little ahead, UTC) applied with ``backup_config apply``.
``WORKERS`` worker processes (``--concurrency 1`` each) and one beat (DatabaseScheduler) run the
slot; the catalog is polled read-only until every schedule's backup is terminal, while every
worker process tree's RSS (VmRSS of the main process and its pool children) is sampled 4 times a
second. Each size in ``--sizes`` (run.py's ``--schedule-sizes``) is a load of its own.

Per-run overhead, two ways: from the catalog (each backup's claim, each BackupStep, the end of
the run after its last step, and the gap between one run's end and the next run on the same
worker process: the firing's lookups, the slot claim, notifications, monitoring, retention and
Celery's own work), and in-process after the load (``schedule_profile.py``: ``PROFILE_RUNS``
firings with every catalog query and millisecond attributed to its phase).

    .venv/bin/python bench/schedulebench.py [--sizes 200,2000] [--profile-runs 30]
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from measure import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.redis import running_redis

COUNT = 200
WORKERS = 2
TIMEOUT_SECONDS = 600
SETTLE_SECONDS = 15  # after the last completion: time for a duplicate delivery to show up
LEAD_SECONDS = 50  # at least this long between the TOML apply and the slot ...
LEAD_PER_TARGET = 0.06  # ... or this per target, if longer (the apply of 2,000 takes ~40-55 s)
PROFILE_RUNS = 30  # in-process firings after the load, for the queries and phases of one run
DEFAULT_SIZES = (COUNT,)
SAMPLE_SECONDS = 0.25  # RSS sampling interval (the catalog is read once a second)
SOURCE_ROWS = 300  # x ~1 KiB rows: ~330 KiB per source database
TERMINAL = {"success", "failed", "skipped", "corrupt"}


class ScheduleBenchError(Exception):
    pass


@dataclass
class WorkerResult:
    name: str
    pid: int
    pids_seen: list[int]
    backups_run: int
    rss_start_kib: int  # the first sample after the slot started
    rss_first_completion_kib: int
    rss_last_completion_kib: int
    rss_end_kib: int
    peak_rss_kib: int
    main_peak_rss_kib: int  # the worker's main process alone
    pool_peak_rss_kib: int  # its pool child(ren) alone, where the backups run
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds from the slot, KiB)


@dataclass
class Spread:
    """Milliseconds of one part of a run, over the runs that had it."""

    runs: int
    median_ms: float
    p90_ms: float
    max_ms: float


@dataclass
class ScheduleResult:
    count: int
    workers: list[WorkerResult]
    slot: str
    statuses: dict[str, int]
    schedules_with_backup: int
    duplicates: int  # schedules with more than one backup in the slot
    lost: int  # schedules without a terminal backup
    not_terminal: int
    first_start_s: float
    first_completion_s: float
    last_completion_s: float
    source_kib: float
    unattributed: int
    errors: list[str]
    setup_seconds: float
    seconds: float
    versions: dict[str, str]
    load: list[str]
    argv: list[str]
    # Per run, from the catalog: "claim" (created -> started), each step by name, "finish" (the
    # last step's end -> completed_at), "between runs" (a worker's previous completed_at -> this
    # run's created_at), "run" (created -> completed) and "outside the dump" (all but the dump).
    overhead: dict[str, Spread] = field(default_factory=dict)
    profile: dict[str, Any] | None = None  # schedule_profile.py's JSON, or None when it failed
    profile_error: str = ""


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _fill_source(path: Path) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, payload BLOB)")
        db.executemany(
            "INSERT INTO items (name, payload) VALUES (?, ?)",
            [(f"item {i}", os.urandom(1000)) for i in range(SOURCE_ROWS)],
        )
    db.close()


def _toml(home: Path, sources: list[Path], slot: datetime) -> str:
    parts = [f'[storages.local]\nkind = "local"\npath = "{home / "backups"}"\n']
    for index, source in enumerate(sources):
        name = f"load{index:03d}"
        parts.append(
            f'[targets.{name}]\nengine = "sqlite"\ndatabase = "{source}"\nstorages = ["local"]\n\n'
            f'[schedules.{name}]\ntarget = "{name}"\ncron = "{slot.minute} {slot.hour} * * *"\n'
            'timezone = "UTC"\n'
        )
    return "\n".join(parts)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(entry.path, "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


class Processes:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "celery", "-A", "backupsite", *args, "-l", "warning"]
        with open(self.home / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.started[name] = process
        return process

    def stop_all(self) -> None:
        for process in self.started.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.started.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ScheduleBenchError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _utc(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


def _rows(catalog: Path, slot: datetime) -> list[tuple[int, int, str, datetime | None, datetime | None, str]]:
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=30)
    try:
        found = db.execute(
            "SELECT id, schedule_id, status, started_at, completed_at, worker FROM backup_history "
            "WHERE schedule_id IS NOT NULL AND created_at >= ?",
            ((slot - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S"),),
        ).fetchall()
    finally:
        db.close()
    return [(pk, sid, status, _utc(s), _utc(c), worker) for pk, sid, status, s, c, worker in found]


def _spread(values_ms: list[float]) -> Spread:
    ordered = sorted(values_ms)
    if not ordered:
        return Spread(0, 0.0, 0.0, 0.0)
    return Spread(
        runs=len(ordered),
        median_ms=statistics.median(ordered),
        p90_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        max_ms=ordered[-1],
    )


def overhead(catalog: Path, slot: datetime) -> dict[str, Spread]:
    """Each run's parts in milliseconds, from the slot's backups and their steps (see
    ScheduleResult.overhead)."""
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=30)
    since = (slot - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
    try:
        backups = db.execute(
            "SELECT id, created_at, started_at, completed_at, worker FROM backup_history "
            "WHERE schedule_id IS NOT NULL AND created_at >= ? AND status = 'success'",
            (since,),
        ).fetchall()
        steps = db.execute(
            "SELECT s.backup_id, s.name, s.started_at, s.completed_at FROM backups_backupstep s "
            "JOIN backup_history b ON b.id = s.backup_id "
            "WHERE b.schedule_id IS NOT NULL AND b.created_at >= ? AND s.completed_at IS NOT NULL",
            (since,),
        ).fetchall()
    finally:
        db.close()
    by_backup: dict[int, dict[str, float]] = {}
    last_step_end: dict[int, datetime] = {}
    for backup_id, name, started, completed in steps:
        begin, end = _utc(started), _utc(completed)
        assert begin is not None and end is not None
        parts = by_backup.setdefault(backup_id, {})
        parts[name] = parts.get(name, 0.0) + (end - begin).total_seconds() * 1000
        if name != "notify":
            last_step_end[backup_id] = max(end, last_step_end.get(backup_id, end))
    values: dict[str, list[float]] = {}
    by_worker: dict[str, list[tuple[datetime, datetime]]] = {}
    for pk, created_text, started_text, completed_text, worker in backups:
        created, started, completed = _utc(created_text), _utc(started_text), _utc(completed_text)
        if created is None or started is None or completed is None:
            continue
        parts = dict(by_backup.get(pk, {}))
        parts["claim"] = (started - created).total_seconds() * 1000
        if pk in last_step_end:
            parts["finish"] = (completed - last_step_end[pk]).total_seconds() * 1000
        parts["run"] = (completed - created).total_seconds() * 1000
        parts["outside the dump"] = parts["run"] - parts.get("dump", 0.0)
        for name, value in parts.items():
            values.setdefault(name, []).append(value)
        by_worker.setdefault(worker, []).append((created, completed))
    for runs in by_worker.values():
        runs.sort()
        for (_, previous_end), (created, _) in itertools.pairwise(runs):
            values.setdefault("between runs", []).append((created - previous_end).total_seconds() * 1000)
    return {name: _spread(found) for name, found in values.items()}


def _profile(env: dict[str, str], runs: int) -> tuple[dict[str, Any] | None, str]:
    """schedule_profile.py in a child with the load's environment (its workers stopped)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "schedule_profile.py"), str(runs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1]
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError) as exc:
        return None, f"unreadable output: {exc}"


def _nearest(samples: list[tuple[float, int]], at: float) -> int:
    if not samples:
        return 0
    return min(samples, key=lambda sample: abs(sample[0] - at))[1]


def measure_sizes(
    work: Path,
    logs: Path,
    sizes: list[int] | tuple[int, ...] = DEFAULT_SIZES,
    profile_runs: int = PROFILE_RUNS,
) -> list[ScheduleResult]:
    """One load per size, smallest first, each in a home of its own."""
    return [measure(work, logs, count, profile_runs=profile_runs) for count in sorted(sizes)]


def measure(
    work: Path, logs: Path, count: int = COUNT, workers: int = WORKERS, profile_runs: int = PROFILE_RUNS
) -> ScheduleResult:
    import celery

    started = time.monotonic()
    load = [_load()]
    work.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="schedules-", dir=work))
    processes: Processes | None = None
    try:
        with running_redis() as redis:
            catalog = home / "catalog.sqlite3"
            env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
            env.update(
                BACKUPSITE_HOME=str(home), DATABASE_URL=f"sqlite:///{catalog}",
                DJANGO_SETTINGS_MODULE="backupsite.settings", CELERY_BROKER_URL=redis.url(),
                LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
            )  # fmt: skip
            print(f"  schedules: migrating a catalog under {home} ...", flush=True)
            _manage(env, "migrate", "--noinput", "-v0")
            sources_dir = home / "sources"
            sources_dir.mkdir()
            _fill_source(sources_dir / "template.sqlite3")
            sources = []
            for index in range(count):
                source = sources_dir / f"load{index:03d}.sqlite3"
                shutil.copyfile(sources_dir / "template.sqlite3", source)
                sources.append(source)
            source_kib = (sources_dir / "template.sqlite3").stat().st_size / 1024
            now = datetime.now(UTC)
            lead = max(LEAD_SECONDS, LEAD_PER_TARGET * count)
            slot = (now + timedelta(seconds=lead + 60)).replace(second=0, microsecond=0)
            (home / "load.toml").write_text(_toml(home, sources, slot))
            print(
                f"  schedules: applying {count} targets + schedules due at {slot:%H:%M} UTC ...", flush=True
            )
            _manage(env, "backup_config", "apply", str(home / "load.toml"))
            processes = Processes(home, env)
            names = [f"w{i + 1}" for i in range(workers)]
            for name in names:
                processes.start(name, "worker", "--concurrency", "1", "-n", f"{name}@%h")
            processes.start(
                "beat", "beat", "--pidfile", str(home / "beat.pid"), "-s", str(home / "beat-schedule")
            )
            setup_seconds = time.monotonic() - started
            if datetime.now(UTC) > slot - timedelta(seconds=10):
                raise ScheduleBenchError(f"setup took too long: the {slot:%H:%M} slot is too close")
            print(
                f"  schedules: {workers} workers and beat started; waiting for {slot:%H:%M:%S} ...",
                flush=True,
            )
            samples: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
            pids_seen: dict[str, set[int]] = {name: set() for name in names}
            main_peak = dict.fromkeys(names, 0)
            pool_peak = dict.fromkeys(names, 0)
            deadline = slot + timedelta(seconds=TIMEOUT_SECONDS)
            done_at: datetime | None = None
            rows: list[tuple[int, int, str, datetime | None, datetime | None, str]] = []
            last_print = last_read = 0.0
            while True:
                for name, process in processes.started.items():
                    if process.poll() is not None:
                        raise ScheduleBenchError(f"{name} exited with {process.returncode}; see {home}")
                children = _children()
                now = datetime.now(UTC)
                offset = (now - slot).total_seconds()
                for name in names:
                    tree = _tree(processes.started[name].pid, children)
                    pids_seen[name].update(tree)
                    rss = {pid: _rss_kib(pid) for pid in tree}
                    main = processes.started[name].pid
                    main_peak[name] = max(main_peak[name], rss[main])
                    pool_peak[name] = max(pool_peak[name], sum(rss.values()) - rss[main])
                    samples[name].append((offset, sum(rss.values())))
                if offset >= 0 and time.monotonic() - last_read >= 1.0:
                    last_read = time.monotonic()
                    rows = _rows(catalog, slot)
                    terminal = {r[1] for r in rows if r[2] in TERMINAL}
                    if time.monotonic() - last_print > 10:
                        last_print = time.monotonic()
                        print(f"  schedules: +{offset:.0f} s: {len(terminal)}/{count} terminal", flush=True)
                    if done_at is None and len(terminal) >= count and all(r[2] in TERMINAL for r in rows):
                        done_at = now
                    if done_at is not None and now >= done_at + timedelta(seconds=SETTLE_SECONDS):
                        break
                if now > deadline:
                    break
                time.sleep(SAMPLE_SECONDS)
            rows = _rows(catalog, slot)
            load.append(_load())
            parts = overhead(catalog, slot)
            processes.stop_all()  # the profile runs alone, on the catalog the load left
            profile, profile_error = _profile(env, min(profile_runs, count)) if profile_runs else (None, "")
    finally:
        if processes is not None:
            processes.stop_all()
            for name in processes.started:
                with contextlib.suppress(OSError):
                    shutil.copyfile(home / f"{name}.log", logs / f"schedules-{name}.log")
        shutil.rmtree(home, ignore_errors=True)

    statuses: dict[str, int] = {}
    per_schedule: dict[int, int] = {}
    for _pk, sid, status, _s, _c, _w in rows:
        statuses[status] = statuses.get(status, 0) + 1
        per_schedule[sid] = per_schedule.get(sid, 0) + 1
    terminal_schedules = {r[1] for r in rows if r[2] in TERMINAL}
    completions = sorted((r[4] - slot).total_seconds() for r in rows if r[4] is not None)
    starts = sorted((r[3] - slot).total_seconds() for r in rows if r[3] is not None)
    first_done = completions[0] if completions else 0.0
    last_done = completions[-1] if completions else 0.0
    by_pid = {pid: name for name, pids in pids_seen.items() for pid in pids}
    ran = {name: 0 for name in names}
    unattributed = 0
    for row in rows:
        with contextlib.suppress(ValueError):
            owner = by_pid.get(int(row[5].rsplit(":", 1)[1]))
            if owner is not None:
                ran[owner] += 1
                continue
        unattributed += 1
    worker_results = []
    for name in names:
        during = [s for s in samples[name] if s[0] >= 0] or samples[name]
        worker_results.append(
            WorkerResult(
                name=name,
                pid=processes.started[name].pid if processes else 0,
                pids_seen=sorted(pids_seen[name]),
                backups_run=ran[name],
                rss_start_kib=during[0][1] if during else 0,
                rss_first_completion_kib=_nearest(samples[name], first_done),
                rss_last_completion_kib=_nearest(samples[name], last_done),
                rss_end_kib=during[-1][1] if during else 0,
                peak_rss_kib=max((s[1] for s in samples[name]), default=0),
                main_peak_rss_kib=main_peak[name],
                pool_peak_rss_kib=pool_peak[name],
                samples=samples[name],
            )
        )
    errors = []
    if len(terminal_schedules) < count:
        errors.append(f"{count - len(terminal_schedules)} schedules have no terminal backup")
    return ScheduleResult(
        count=count,
        workers=worker_results,
        slot=slot.isoformat(),
        statuses=statuses,
        schedules_with_backup=len(per_schedule),
        duplicates=sum(1 for n in per_schedule.values() if n > 1),
        lost=count - len(terminal_schedules),
        not_terminal=sum(1 for r in rows if r[2] not in TERMINAL),
        first_start_s=starts[0] if starts else 0.0,
        first_completion_s=first_done,
        last_completion_s=last_done,
        source_kib=source_kib,
        unattributed=unattributed,
        errors=errors,
        setup_seconds=setup_seconds,
        seconds=time.monotonic() - started,
        versions={"python": sys.version.split()[0], "celery": celery.__version__},
        load=load,
        argv=[f"{sys.executable} -m celery -A backupsite worker --concurrency 1 -n wN@%h -l warning"],
        overhead=parts,
        profile=profile,
        profile_error=profile_error,
    )


def save(result: ScheduleResult | list[ScheduleResult], path: Path) -> None:
    results = result if isinstance(result, list) else [result]
    path.write_text(json.dumps([asdict(one) for one in results], indent=2, default=str))


def main(argv: list[str]) -> int:
    import argparse

    import report_schedules

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="targets due at once, per load"
    )
    parser.add_argument(
        "--profile-runs", type=int, default=PROFILE_RUNS, help="in-process firings after a load"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work", help="where homes and logs go")
    args = parser.parse_args(argv)
    sizes = sorted({int(part) for part in args.sizes.split(",") if part.strip()})
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        results = measure_sizes(args.work / "schedules", logs, sizes, args.profile_runs)
    except ScheduleBenchError as exc:
        print(f"schedule bench failed: {exc}", file=sys.stderr)
        return 1
    save(results, args.work / "results-schedules.json")
    print(report_schedules.console_table(results))
    return 0 if all(report_schedules.passed(result) for result in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
