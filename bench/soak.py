"""The soak (issue 18): ``make soak``, not part of ``make test``.

    .venv/bin/python bench/soak.py [--targets 200] [--minutes 20] [--outage-start 4.5]
        [--outage-minutes 10] [--kill-every 3] [--quiet-minutes 3] [--workers 2] [--concurrency 2]
        [--grace-minutes 3] [--keep 5] [--seed N] [--no-write]

A throwaway BACKUPSITE_HOME under bench/work/soak/ with a PostgreSQL catalog (the test suite's
throwaway cluster, ``tests/servers/postgres.py``), a Redis broker (``tests/servers/redis.py``),
``--targets`` small SQLite databases, each a target stored in a local storage and in a required
S3 storage (moto, ``tests/servers/s3.py``) reached through the suite's TCP proxy
(``tests/servers/proxy.py``), each with a ``* * * * *`` schedule (grace ``--grace-minutes``,
retention ``max_backups = --keep``) and an audit-file notifier that hears every alert. All of it
is applied with ``backup_config apply``. Then ``--workers`` real Celery workers (``--concurrency``
each, the default queue only: ``-Q celery``), the watch's own worker (``-Q watch -c 1``, as
``backupsite_run`` starts it; never killed) and one beat (DatabaseScheduler: the schedules plus
the product's own ``backupsite-watch`` every minute, routed to the watch queue) run ``--minutes``
minute slots. Meanwhile:

- the storage goes away: the proxy stops listening (``down()``) ``--outage-start`` minutes in,
  for ``--outage-minutes`` minutes, then listens again (``allow()``);
- a random worker is SIGKILLed (its whole process group) at random times about every
  ``--kill-every`` minutes (uniformly 0.5x-1.5x apart) and started again 5 s later, as a
  supervisor would; none in the last minute of slots;
- every worker's RSS (VmRSS of its main process plus its pool children, /proc) is sampled every
  ``--sample-seconds``, the broker's queue every 5 s.

Then the quiet period: beat is stopped 30 s into the last slot, the watch task is sent to the
watch queue every minute (``schedules.tasks.watch``, what beat would fire), for at least
``--quiet-minutes`` and until the queue is empty and nothing is pending or running (at most 6
minutes more). The workers get SIGTERM; ``backup_reconcile`` runs; the evidence is collected,
with the product's own sweep of upload leftovers run once as if the day had passed (multipart
uploads an outage or a kill left open are the sweep's to remove); the invariants are checked on
the catalog, the alert file, both storages and the logs (``soak_report.py``), a summary printed
and the "## Soak" section of bench/RESULTS.md rewritten. Exit status 1 when an invariant is
broken, 2 when the soak could not run.

Takes ``--minutes`` + the quiet period + about 2 minutes of set-up and checks: ~30 minutes with
the defaults. Raw results in bench/work/results-soak.json, logs in bench/work/logs/soak/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import soak_report
from soak_report import ROOT, Incarnation, Phase, SoakRun

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.servers

from tests.config_builder import write_config
from tests.servers.postgres import PostgresServer, running_postgres
from tests.servers.proxy import CuttableProxy, cuttable_proxy
from tests.servers.redis import RedisServer, running_redis
from tests.servers.s3 import S3Server, running_s3

WORK = ROOT / "bench" / "work"
LOGS = WORK / "logs" / "soak"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
RESULTS_JSON = WORK / "results-soak.json"
EVIDENCE = WORK / "soak-evidence.pickle"
RESTART_SECONDS = 5  # a killed worker is started again this long after (a supervisor's delay)
QUEUE_SECONDS = 5  # the broker's queue length is read this often
MAX_EXTRA_QUIET_MINUTES = 6
SLOT_MARGIN_SECONDS = 20  # at least this long between the fleet being ready and the first slot
BUCKET = "soak"
SOURCE_ROWS = 40  # x ~500 bytes: ~28 KiB per source database
BEAT_SCHEDULER = "schedules.beat:DatabaseScheduler"  # the product's (backupsite.settings)


class SoakError(Exception):
    """The soak could not be set up or run (not an invariant: those are reported)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=200, help="targets, each with a * * * * * schedule")
    parser.add_argument("--minutes", type=int, default=20, help="minute slots beat fires (the load phase)")
    parser.add_argument("--outage-start", type=float, default=4.5, help="minutes into the load phase")
    parser.add_argument("--outage-minutes", type=float, default=10, help="how long the S3 storage is down")
    parser.add_argument(
        "--kill-every", type=float, default=3, help="minutes between worker SIGKILLs, on average (0: none)"
    )
    parser.add_argument("--quiet-minutes", type=float, default=3, help="at least this long after beat stops")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--grace-minutes", type=int, default=3, help="the schedules' missed-alert grace")
    parser.add_argument("--keep", type=int, default=5, help="retention: max_backups per target")
    parser.add_argument("--sample-seconds", type=float, default=30, help="worker RSS sampling interval")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the kills (default: time)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument(
        "--reanalyse",
        action="store_true",
        help="check the evidence the last soak saved (bench/work/soak-evidence.pickle) again; run nothing",
    )
    args = parser.parse_args(argv)
    args.command = shlex.join(
        [".venv/bin/python", "bench/soak.py", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.seed is None:
        args.seed = int(time.time())
    if args.targets < 1 or args.minutes < 2 or args.workers < 1 or args.concurrency < 1:
        parser.error("--targets, --workers and --concurrency must be >= 1, --minutes >= 2")
    if (
        args.outage_minutes < 0
        or args.outage_start < 0
        or args.outage_start + args.outage_minutes > args.minutes
    ):
        parser.error("the outage (--outage-start + --outage-minutes) must fit in --minutes")
    if args.kill_every < 0 or args.quiet_minutes < 1 or args.sample_seconds < 1 or args.grace_minutes < 1:
        parser.error("--kill-every >= 0, --quiet-minutes >= 1, --sample-seconds >= 1, --grace-minutes >= 1")
    return args


# -- processes -------------------------------------------------------------------------------------


def children_by_parent() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(tree.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pytest_processes() -> int:
    """How many pytest processes run on the machine (other helpers' tests): load context."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"pytest" in Path(entry.path, "cmdline").read_bytes():
                    count += 1
    return count


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Fleet:
    """The Celery processes of the soak, each in a session of its own (a kill takes its group)."""

    home: Path
    tree: Path  # the copy of the working tree the processes run from
    env: dict[str, str]
    concurrency: int
    started: float  # time.time() the soak's clock counts from (the first slot)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    incarnations: list[Incarnation] = field(default_factory=list)
    watch: subprocess.Popen[bytes] | None = None  # the watch's own worker, never killed
    watch_starts: int = 0
    beat: subprocess.Popen[bytes] | None = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "celery", "-A", "backupsite", *args, "-l", "info"]
        with open(self.home / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                argv, cwd=self.tree, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def start_worker(self, worker: str) -> Incarnation:
        number = sum(1 for i in self.incarnations if i.worker == worker) + 1
        name = f"{worker}-{number}"
        process = self._spawn(
            name, ["worker", "-Q", "celery", "-c", str(self.concurrency), "-n", f"{name}@%h"]
        )
        self.workers[worker] = process
        incarnation = Incarnation(name=name, worker=worker, pid=process.pid, started=self.now())
        self.incarnations.append(incarnation)
        return incarnation

    def start_watch(self) -> None:
        """The watch's own worker, as ``backupsite_run`` starts it: one process on the watch queue."""
        self.watch_starts += 1
        name = f"watch-{self.watch_starts}"
        self.watch = self._spawn("watch", ["worker", "-Q", "watch", "-c", "1", "-n", f"{name}@%h"])

    def start_beat(self) -> None:
        self.beat = self._spawn(
            "beat",
            ["beat", "-S", BEAT_SCHEDULER, "--pidfile", str(self.home / "beat.pid"),
             "-s", str(self.home / "celerybeat-schedule")],
        )  # fmt: skip

    def now(self) -> float:
        return time.time() - self.started

    def current(self, worker: str) -> Incarnation:
        return next(i for i in reversed(self.incarnations) if i.worker == worker)

    def pids(self, worker: str) -> list[int]:
        process = self.workers[worker]
        return [process.pid, *descendants(process.pid, children_by_parent())]

    def kill(self, worker: str, how: str = "killed") -> None:
        process = self.workers[worker]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the pool children too
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        incarnation = self.current(worker)
        incarnation.ended, incarnation.end = self.now(), how

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 60) -> int | None:
        """SIGTERM to the group (a warm shutdown), then SIGKILL; the exit status."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=30)

    def stop_all(self) -> None:
        for worker, process in self.workers.items():
            status = self.stop(process)
            incarnation = self.current(worker)
            if incarnation.ended is None:
                incarnation.ended, incarnation.end = self.now(), f"stopped (exit status {status})"
        if self.watch is not None:
            self.stop(self.watch)
        if self.beat is not None:
            self.stop(self.beat)

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ready(self) -> bool:
        workers = all(" ready." in self.log(self.current(w).name) for w in self.workers)
        return workers and " ready." in self.log("watch") and "beat: Starting..." in self.log("beat")


# -- the site --------------------------------------------------------------------------------------


@dataclass
class Site:
    home: Path
    tree: Path
    env: dict[str, str]
    catalog_url: str
    postgres: PostgresServer
    redis: RedisServer
    s3: S3Server
    proxy: CuttableProxy
    local_dir: Path
    alerts: Path

    def manage(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, str(self.tree / "manage.py"), *args],
            cwd=self.tree, env=self.env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode not in ok:
            raise SoakError(
                f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.catalog_url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def queue(self) -> tuple[int, int]:
        """(messages waiting in the ``celery`` queue, messages delivered and not yet acknowledged)."""
        client = self.redis.client()
        try:
            return int(client.llen("celery")), int(client.hlen("unacked"))
        finally:
            client.close()


def fill_source(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, payload BLOB)")
        db.executemany(
            "INSERT INTO items (name, payload) VALUES (?, ?)",
            [(f"item {i}", os.urandom(500)) for i in range(SOURCE_ROWS)],
        )
        db.commit()


def snapshot(destination: Path) -> Path:
    """A copy of the working tree as it is now (tracked and untracked files, not ignored ones):
    the soak's processes run from it, so edits made to the tree meanwhile (a restarted worker
    importing newer code than the one it replaces) never mix versions within one soak."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@contextlib.contextmanager
def running_site(home: Path, args: argparse.Namespace) -> Iterator[Site]:
    """PostgreSQL, Redis, moto behind the proxy; a migrated catalog with the targets applied."""
    with (
        running_postgres() as postgres,
        running_redis() as redis,
        running_s3() as s3,
        cuttable_proxy(s3.host, s3.port) as proxy,
    ):
        postgres.execute("postgres", "CREATE ROLE soak LOGIN PASSWORD 'soak'")
        postgres.execute("postgres", "CREATE DATABASE soak OWNER soak")
        catalog_url = f"postgres://soak:soak@{postgres.host}:{postgres.port}/soak"
        s3.client().create_bucket(Bucket=BUCKET)
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        env.update(
            BACKUPSITE_HOME=str(home / "home"), DATABASE_URL=catalog_url,
            DJANGO_SETTINGS_MODULE="backupsite.settings", CELERY_BROKER_URL=redis.url(),
            LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
            SOAK_S3_ACCESS_KEY=s3.access_key, SOAK_S3_SECRET_KEY=s3.secret_key,
        )  # fmt: skip
        site = Site(
            home=home, tree=snapshot(home / "tree"), env=env, catalog_url=catalog_url, postgres=postgres, redis=redis, s3=s3,
            proxy=proxy, local_dir=home / "backups", alerts=home / "alerts.jsonl",
        )  # fmt: skip
        print(f"soak: migrating a PostgreSQL catalog, {args.targets} targets under {home} ...", flush=True)
        # A tree caught between a model change and its migration would fail every task.
        site.manage("makemigrations", "--check", "--dry-run")
        site.manage("migrate", "--noinput", "-v0")
        sources = home / "sources"
        sources.mkdir()
        fill_source(sources / "template.sqlite3")
        targets: dict[str, dict[str, Any]] = {}
        schedules: dict[str, dict[str, Any]] = {}
        for index in range(args.targets):
            name = f"t{index:03d}"
            shutil.copyfile(sources / "template.sqlite3", sources / f"{name}.sqlite3")
            targets[name] = {
                "engine": "sqlite",
                "database": sources / f"{name}.sqlite3",
                "storages": ["local", "offsite"],
                "retention": {"max_backups": args.keep},
            }
            schedules[f"s{index:03d}"] = {
                "target": name,
                "cron": "* * * * *",
                "grace_minutes": args.grace_minutes,
            }
        offsite = {
            "kind": "s3", "bucket": BUCKET, "endpoint_url": f"http://{proxy.host}:{proxy.port}",
            "region": s3.region, "addressing_style": "path", "access_key": "${SOAK_S3_ACCESS_KEY}",
            "secret_key": "${SOAK_S3_SECRET_KEY}", "required": True,
        }  # fmt: skip
        config = write_config(
            home / "soak.toml",
            storage_dir=site.local_dir,
            storages={"offsite": offsite},
            notifiers={"alerts": {"kind": "audit", "path": site.alerts, "default": True}},
            targets=targets,
            schedules=schedules,
        )
        site.manage("backup_config", "apply", str(config))
        yield site


# -- the run ---------------------------------------------------------------------------------------


def kill_plan(args: argparse.Namespace, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the first slot, worker) for each SIGKILL; none in the last minute of slots."""
    if args.kill_every <= 0:
        return []
    every, plan = args.kill_every * 60, []
    at = rng.uniform(0.5, 1.0) * every
    while at < (args.minutes - 1) * 60:
        plan.append((at, f"w{rng.randrange(args.workers) + 1}"))
        at += rng.uniform(0.5, 1.5) * every
    return plan


def next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def soak(site: Site, args: argparse.Namespace, run: SoakRun, fleet: Fleet) -> None:
    rng = random.Random(args.seed)
    workers = [f"w{i + 1}" for i in range(args.workers)]
    for worker in workers:
        fleet.start_worker(worker)
    fleet.start_watch()
    run.watch_worker = True
    fleet.start_beat()
    deadline = time.monotonic() + 120
    while not fleet.ready():
        if time.monotonic() > deadline:
            raise SoakError(f"the workers and beat did not start within 120 s; see {site.home}")
        time.sleep(0.5)
    first_slot = next_minute(datetime.now(UTC) + timedelta(seconds=SLOT_MARGIN_SECONDS))
    fleet.started = first_slot.timestamp()
    for incarnation in fleet.incarnations:
        incarnation.started = fleet.now()
    run.first_slot = first_slot
    run.slots = args.minutes
    outage = (args.outage_start * 60, (args.outage_start + args.outage_minutes) * 60)
    run.phases = [
        Phase("before the outage", 0, outage[0]),
        Phase("outage", outage[0], outage[1]),
        Phase("after the outage", outage[1], args.minutes * 60),
    ]
    kills = kill_plan(args, rng)
    beat_stop = args.minutes * 60 - 30
    print(
        f"soak: ready; first slot {first_slot:%H:%M} UTC, {args.minutes} slots, storage down "
        f"+{outage[0] / 60:g}..+{outage[1] / 60:g} min, {len(kills)} kills planned, beat stops "
        f"at +{beat_stop / 60:.1f} min",
        flush=True,
    )
    restarts: dict[str, float] = {}
    down = False
    last_sample = last_queue = last_print = last_watch = -1e9
    quiet_started: float | None = None
    while True:
        now = fleet.now()
        if not down and outage[0] <= now < outage[1] and args.outage_minutes > 0:
            site.proxy.down()
            down = True
            run.event(now, "storage down (the proxy stops listening)")
        elif down and now >= outage[1]:
            site.proxy.allow()
            down = False
            run.event(now, "storage back (the proxy listens again)")
        while kills and now >= kills[0][0]:
            _, worker = kills.pop(0)
            if worker in restarts:
                continue  # already down: that kill is skipped
            incarnation = fleet.current(worker)
            pids = fleet.pids(worker)
            running = site.query("SELECT id, worker FROM backup_history WHERE status = 'running'")
            incarnation.running_at_kill = sorted(
                pk for pk, host_pid in running if host_pid.rpartition(":")[2].isdigit()
                and int(host_pid.rpartition(":")[2]) in pids
            )  # fmt: skip
            fleet.kill(worker)
            restarts[worker] = now + RESTART_SECONDS
            run.event(
                now, f"SIGKILL {incarnation.name} (running backups {incarnation.running_at_kill or 'none'})"
            )
        for worker, at in list(restarts.items()):
            if now >= at:
                del restarts[worker]
                started = fleet.start_worker(worker)
                run.event(now, f"started {started.name}")
        for worker, process in fleet.workers.items():
            if process.poll() is not None and worker not in restarts:
                incarnation = fleet.current(worker)
                incarnation.ended, incarnation.end = now, f"exited by itself ({process.returncode})"
                run.event(now, f"{incarnation.name} exited by itself with {process.returncode}; restarting")
                fleet.start_worker(worker)
        if fleet.watch is not None and fleet.watch.poll() is not None:
            run.event(now, f"the watch worker exited by itself with {fleet.watch.returncode}; restarting")
            fleet.start_watch()
        if quiet_started is None and fleet.beat is not None and fleet.beat.poll() is not None:
            run.event(now, f"beat exited by itself with {fleet.beat.returncode}; restarting")
            fleet.start_beat()
        if now - last_sample >= args.sample_seconds:
            last_sample = now
            tree = children_by_parent()
            for worker, process in fleet.workers.items():
                if worker in restarts or process.poll() is not None:
                    continue
                pool = descendants(process.pid, tree)
                fleet.current(worker).samples.append(
                    (round(now, 1), rss_kib(process.pid), sum(rss_kib(pid) for pid in pool))
                )
            run.load.append((round(now, 1), loadavg(), pytest_processes()))
        if now - last_queue >= QUEUE_SECONDS:
            last_queue = now
            waiting, unacked = site.queue()
            run.queue.append((round(now, 1), waiting, unacked))
        if now - last_print >= 60:
            last_print = now
            counts = dict(
                site.query("SELECT status, count(*) FROM backup_history GROUP BY status ORDER BY status")
            )
            waiting, unacked = run.queue[-1][1:] if run.queue else (0, 0)
            print(
                f"soak: {now / 60:+6.1f} min  queue {waiting} (+{unacked} unacked)  rows {counts}  "
                f"load {loadavg()}",
                flush=True,
            )
        if quiet_started is None and now >= beat_stop:
            assert fleet.beat is not None
            fleet.stop(fleet.beat)
            quiet_started = now
            run.event(now, "beat stopped; the quiet period begins (watch sent every minute)")
        if quiet_started is not None:
            if now - last_watch >= 60:
                last_watch = now
                send_watch(site)
            if now - quiet_started >= args.quiet_minutes * 60 and quiet_done(site):
                break
            if now - quiet_started >= (args.quiet_minutes + MAX_EXTRA_QUIET_MINUTES) * 60:
                run.event(now, "the quiet period timed out with work left")
                break
        time.sleep(0.5)
    send_watch(site)  # one last pass, then let it run
    time.sleep(15)
    run.event(fleet.now(), "quiet period over; stopping the workers")
    fleet.stop_all()
    run.quiet_seconds = fleet.now() - (quiet_started or fleet.now())


def send_watch(site: Site) -> None:
    """Queue the watch task as beat's ``backupsite-watch`` entry does (backupsite.settings: routed
    to the watch queue, which only the watch's own worker consumes here; expires after 120 s)."""
    from celery import Celery

    app = Celery(broker=site.redis.url())
    try:
        app.send_task("schedules.tasks.watch", queue="watch", expires=120)
    finally:
        app.close()


# The product's sweep of upload leftovers (what beat's ``backupsite-sweep`` runs through
# backups.tasks.sweep_leftovers), but with older_than=0: the day a leftover must age is simulated.
SWEEP = (
    "import json; from datetime import timedelta; from backups import services; "
    "print(json.dumps(services.sweep_storages(timedelta(0))))"
)


def sweep_leftovers(site: Site) -> tuple[list[str], list[str]]:
    """Run the product's sweep once in the soak's tree (every process has stopped, so no upload
    is in flight); (what it removed, its errors). A sweep that crashed is an error to report,
    not a reason to lose the soak's evidence."""
    done = site.manage("shell", "-v0", "-c", SWEEP, ok=(0, 1))
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no message"]
        return [], [f"the sweep could not run (manage.py shell exited {done.returncode}): {last[0]}"]
    removed, errors = json.loads(done.stdout.strip().splitlines()[-1])
    return list(removed), list(errors)


def quiet_done(site: Site) -> bool:
    waiting, _ = site.queue()
    busy = site.query("SELECT count(*) FROM backup_history WHERE status IN ('pending', 'running')")[0][0]
    return waiting == 0 and busy == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reanalyse:
        with open(EVIDENCE, "rb") as raw:
            run, evidence = pickle.load(raw)
        return report(soak_report.analyse(run, evidence), no_write=args.no_write)
    for tool in ("redis-server",):
        if shutil.which(tool) is None:
            print(f"soak: {tool} is missing (make setup installs it)", file=sys.stderr)
            return 2
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "soak").mkdir(exist_ok=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="soak-", dir=WORK / "soak"))
    run = SoakRun(args=vars(args).copy(), started_at=datetime.now(UTC))
    run.load.append((0.0, loadavg(), pytest_processes()))
    try:
        with running_site(home, args) as site:
            run.setup_seconds = time.monotonic() - started
            fleet = Fleet(
                home=home, tree=site.tree, env=site.env, concurrency=args.concurrency, started=time.time()
            )
            try:
                soak(site, args, run, fleet)
            finally:
                fleet.stop_all()
            run.incarnations = fleet.incarnations
            reconcile = site.manage("backup_reconcile", "--json", ok=(0, 1))
            run.reconcile_exit = reconcile.returncode
            run.reconcile_output = reconcile.stdout
            run.load.append((fleet.now(), loadavg(), pytest_processes()))
            print("soak: checking the invariants ...", flush=True)
            logs = {path.stem: path.read_text(errors="replace") for path in sorted(home.glob("*.log"))}
            for path in home.glob("*.log"):
                shutil.copyfile(path, LOGS / path.name)
            run.seconds = time.monotonic() - started
            evidence = soak_report.Evidence.collect(
                site.query, site.s3.client(), BUCKET, site.local_dir, site.alerts, logs,
                sweep=lambda: sweep_leftovers(site),
            )  # fmt: skip
            with open(EVIDENCE, "wb") as raw:  # to analyse again if the checks fail
                pickle.dump((run, evidence), raw)
            result = soak_report.analyse(run, evidence)
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return report(result, no_write=args.no_write)


def report(result: soak_report.SoakResult, *, no_write: bool) -> int:
    soak_report.save(result, RESULTS_JSON)
    text = soak_report.markdown(result)
    print(text)
    if not no_write:
        soak_report.write_section(RESULTS_MD, text)
        print(f"soak: wrote the Soak section of {RESULTS_MD.relative_to(ROOT)}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
