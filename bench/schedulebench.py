"""Load: many schedules due in the same minute, run by real Celery worker processes.

A throwaway BACKUPSITE_HOME with a SQLite catalog file, a Redis broker (Debian's ``redis-server``
on a free loopback port), ``COUNT`` small SQLite source databases and as many targets and
schedules (``M H * * *`` for one minute a little ahead, UTC) applied with ``backup_config apply``.
``WORKERS`` worker processes (``--concurrency 1`` each) and one beat (DatabaseScheduler) run the
slot; the catalog is polled read-only until every schedule's backup is terminal, while every
worker process tree's RSS (VmRSS of the main process and its pool children) is sampled 4 times a
second.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from measure import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.redis import running_redis

COUNT = 200
WORKERS = 2
TIMEOUT_SECONDS = 600
SETTLE_SECONDS = 15  # after the last completion: time for a duplicate delivery to show up
LEAD_SECONDS = 50  # at least this long between the TOML apply and the slot
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


def _nearest(samples: list[tuple[float, int]], at: float) -> int:
    if not samples:
        return 0
    return min(samples, key=lambda sample: abs(sample[0] - at))[1]


def measure(work: Path, logs: Path, count: int = COUNT, workers: int = WORKERS) -> ScheduleResult:
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
            slot = (now + timedelta(seconds=LEAD_SECONDS + 60)).replace(second=0, microsecond=0)
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
    )


def save(result: ScheduleResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=2, default=str))
