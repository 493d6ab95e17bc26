"""Real Celery processes: workers and beats (and ``manage.py backupsite_run``, what ``make run``
serves) against a real catalog file, with a real Redis broker and with the embedded filesystem
transport. Each site is a BACKUPSITE_HOME of its own; the sites of this module start together,
so their every-minute schedules share the waiting."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest

from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers import free_port, wait_for
from tests.servers.redis import RedisServer

BROKERS = ["redis", "filesystem"]
# Beat fires a `* * * * *` schedule at the next minute boundary; allow for start-up and the run.
FIRST_RUN_SECONDS = 75
T = TypeVar("T")


class Row(NamedTuple):
    id: int
    status: str
    error_message: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker: str


def _time(text: str | None) -> datetime | None:
    return _utc(text) if text else None


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)  # Django stores UTC in SQLite


def wait_until(check: Callable[[], T | None], what: str, timeout: float) -> T:
    """Poll ``check`` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def _kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_gone(pgid: int) -> bool:
    return not group_alive(pgid)


@dataclass
class Site:
    """One installation: its own BACKUPSITE_HOME, catalog file and broker, and the processes
    started for it (each in a session of its own, so a whole process group can be killed)."""

    home: Path
    broker_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    lock: sqlite3.Connection | None = None
    web_port: int = 0

    @property
    def catalog(self) -> Path:
        return self.home / "catalog.sqlite3"

    @property
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        env.update(
            BACKUPSITE_HOME=str(self.home),
            DATABASE_URL=f"sqlite:///{self.catalog}",
            DJANGO_SETTINGS_MODULE="backupsite.settings",
            CELERY_BROKER_URL=self.broker_url,
            # A killed worker's run goes silent at once; the watch reaps it after 5 s.
            BACKUPSITE_HEARTBEAT_SECONDS="1",
            BACKUPSITE_HEARTBEAT_STALE_SECONDS="5",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.home / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def celery(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-m", "celery", "-A", "backupsite", *args, "-l", "info"])

    def worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        return self.celery(name, "worker", "-c", "2", "-n", f"{name}-{uuid.uuid4().hex[:8]}@%h")

    def beat(self, name: str) -> subprocess.Popen[bytes]:
        pidfile, schedule = self.home / f"{name}.pid", self.home / f"{name}-schedule"
        return self.celery(name, "beat", "--pidfile", str(pidfile), "-s", str(schedule))

    def backupsite_run(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start(
            "backupsite_run", [sys.executable, str(REPO / "manage.py"), "backupsite_run", *args]
        )

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def child_pids(self) -> dict[str, int]:
        """The children ``backupsite_run`` reported starting, by name."""
        found = re.findall(r"started (\w+) \(pid (\d+)\)", self.log("backupsite_run"))
        return {name: int(pid) for name, pid in found}

    def kill(self, name: str) -> None:
        process = self.processes[name]
        _kill_group(process.pid)
        process.wait(timeout=30)

    def terminate(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def stop_all(self) -> None:
        """Stop everything this site started, whatever state it is in."""
        self.terminate()
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for pgid in [p.pid for p in self.processes.values()] + list(self.child_pids().values()):
            _kill_group(pgid)
        for process in self.processes.values():
            process.wait(timeout=30)
        self.release_lock()

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.rollback()
            self.lock.close()
            self.lock = None

    def rows(self, schedule: str) -> list[Row]:
        with sqlite3.connect(self.catalog, timeout=30) as db:
            found = db.execute(
                "SELECT b.id, b.status, b.error_message, b.created_at, b.started_at, b.completed_at, "
                "b.worker FROM backup_history b JOIN backup_schedule s ON s.id = b.schedule_id "
                "WHERE s.name = ? ORDER BY b.id",
                (schedule,),
            ).fetchall()
        db.close()
        return [
            Row(pk, status, error, _utc(created), _time(started), _time(completed), worker)
            for pk, status, error, created, started, completed, worker in found
        ]

    def row(self, schedule: str, pk: int) -> Row:
        return next(row for row in self.rows(schedule) if row.id == pk)

    def task_name(self, schedule: str) -> str:
        with sqlite3.connect(self.catalog, timeout=30) as db:
            (pk,) = db.execute("SELECT id FROM backup_schedule WHERE name = ?", (schedule,)).fetchone()
        db.close()
        return f"backup-schedule:{pk}"


def make_site(root: Path, broker_url: str, *, slow: bool) -> Site:
    """A migrated site with a `quick` schedule every minute (a small SQLite database) and, when
    ``slow``, a `slow` one whose source this test holds locked: its runs stay RUNNING (waiting
    for the lock, as a dump waits on a busy database) until the lock is released."""
    site = Site(home=root, broker_url=broker_url)
    site.manage("migrate", "--noinput", "-v0")
    targets = {
        "quick": {
            "engine": "sqlite",
            "database": fill_sqlite(root / "quick.sqlite3", rows=50),
            "storages": ["local"],
        }
    }
    schedules = {"quick": {"target": "quick", "cron": "* * * * *"}}
    if slow:
        targets["slow"] = {
            "engine": "sqlite",
            "database": fill_sqlite(root / "slow.sqlite3", rows=50),
            "storages": ["local"],
        }
        schedules["slow"] = {"target": "slow", "cron": "* * * * *"}
    write_config(
        root / "site.toml",
        storage_dir=root / "backups",
        notifiers={"audit": {"kind": "audit", "path": root / "alerts.jsonl", "default": True}},
        targets=targets,
        schedules=schedules,
    )
    site.manage("backup_config", "apply", str(root / "site.toml"))
    if slow:
        site.lock = sqlite3.connect(root / "slow.sqlite3", isolation_level=None)
        site.lock.execute("BEGIN EXCLUSIVE")
    return site


@pytest.fixture(scope="module")
def sites(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    """Three sites started at once: Redis and filesystem broker, each with one worker and two
    beats started directly, and a filesystem site run by ``backupsite_run`` (web included)."""
    made: dict[str, Site] = {}
    try:
        for broker, url in (("redis", redis_server.url(0)), ("filesystem", "filesystem://")):
            made[broker] = make_site(tmp_path_factory.mktemp(f"site-{broker}"), url, slow=True)
        made["supervised"] = make_site(tmp_path_factory.mktemp("site-run"), "filesystem://", slow=False)
        for broker in BROKERS:
            site = made[broker]
            site.started_at = datetime.now(UTC)
            site.worker()
            site.beat("beat1")
            site.beat("beat2")
        supervised = made["supervised"]
        supervised.started_at = datetime.now(UTC)
        supervised.web_port = free_port()
        supervised.backupsite_run("--bind", f"127.0.0.1:{supervised.web_port}")
        yield made
    finally:
        for site in made.values():
            site.terminate()  # all at once: a worker's warm shutdown takes seconds
        for site in made.values():
            site.stop_all()


def only_slow_running(site: Site) -> Row | None:
    """The slow target's RUNNING backup, once the quick target's backup of the same minute has
    finished (killing the worker would take that one down too)."""
    slow = next((row for row in site.rows("slow") if row.status == "running"), None)
    quick = site.rows("quick")
    if slow is None or not quick or any(row.status in ("pending", "running") for row in quick):
        return None
    return slow if minute(quick[-1].created_at) >= minute(slow.created_at) else None


def first_success(site: Site, schedule: str) -> Row | None:
    return next((row for row in site.rows(schedule) if row.status == "success"), None)


@pytest.fixture(scope="module")
def killed_mid_backup(sites: dict[str, Site]) -> dict[str, tuple[Row, datetime]]:
    """On both directly started sites (so both within the first minute): wait for the slow
    target's run to be RUNNING, SIGKILL its worker's whole process group, let the source go
    and start a new worker. Returns the killed run and when it was killed."""
    killed = {}
    for broker in BROKERS:
        site = sites[broker]
        running = wait_until(
            partial(only_slow_running, site), "a RUNNING backup of the slow target alone", FIRST_RUN_SECONDS
        )
        pool_pid = int(running.worker.rpartition(":")[2])
        worker = site.processes["worker"]
        assert os.getpgid(pool_pid) == worker.pid  # the run is in the worker's pool
        site.kill("worker")
        killed_at = datetime.now(UTC)
        wait_for(partial(group_gone, worker.pid), "the killed worker's pool to go", 10)
        site.release_lock()
        site.worker("worker2")
        killed[broker] = (running, killed_at)
    return killed


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
def test_it_reaps_a_worker_killed_mid_backup_as_worker_lost_and_the_next_run_succeeds(
    sites, killed_mid_backup, broker
):
    site = sites[broker]
    running, killed_at = killed_mid_backup[broker]
    lost = wait_until(
        lambda: (row := site.row("slow", running.id)).status != "running" and row,
        "the killed run to be reaped",
        75,
    )
    assert lost.status == "failed"
    assert lost.error_message.startswith("worker lost"), lost.error_message

    # ... and a human hears about it: the default channel got the failure.
    def alerted() -> list[dict[str, object]] | None:
        path = site.home / "alerts.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        found = [a for a in lines if a["event"] == "backup_failed" and "worker lost" in str(a["text"])]
        return found or None

    assert wait_until(alerted, "the worker-lost alert", 30)

    def next_run() -> Row | None:
        later = [r for r in site.rows("slow") if r.created_at > killed_at]
        return later[0] if later and later[0].status not in ("pending", "running") else None

    after = wait_until(next_run, "the next scheduled run of the slow target", 80)
    assert after.status == "success", after
    assert after.worker != running.worker


def beat_sends(site: Site, beat: str, task_name: str) -> set[str]:
    """The minutes (``YYYY-mm-dd HH:MM``) in which ``beat`` sent ``task_name``."""
    stamp = r"\[(\d{4}-\d\d-\d\d \d\d:\d\d):\d\d,\d+: INFO/MainProcess\]"
    return set(re.findall(rf"{stamp} Scheduler: Sending due task {re.escape(task_name)} ", site.log(beat)))


def minute(moment: datetime | None) -> str:
    assert moment is not None
    return moment.strftime("%Y-%m-%d %H:%M")


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
def test_it_backs_up_every_minute_once_per_slot_though_two_beats_fire(sites, broker):
    site = sites[broker]
    first = wait_until(partial(first_success, site, "quick"), "the first scheduled backup", FIRST_RUN_SECONDS)
    assert first.completed_at is not None
    assert (first.completed_at - site.started_at).total_seconds() < FIRST_RUN_SECONDS

    task = site.task_name("quick")

    def minutes_both_beats_fired() -> set[str]:
        both = beat_sends(site, "beat1", task) & beat_sends(site, "beat2", task)
        done = {minute(r.started_at) for r in site.rows("quick") if r.status == "success"}
        return both & done

    slots = wait_until(minutes_both_beats_fired, "a minute in which both beats fired", 70)
    time.sleep(2)  # the duplicate delivery of that minute has long been handled by now
    rows = site.rows("quick")
    assert all(r.status == "success" for r in rows), rows
    for slot in slots:
        assert [minute(r.started_at) for r in rows].count(slot) == 1, (slot, rows)
    assert len({minute(r.started_at) for r in rows}) == len(rows), rows  # never two in one minute
    assert "duplicate delivery ignored" in site.log("worker") + site.log("worker2")
    # The slow target's first run was stuck on its source meanwhile: it held nothing up.
    stuck = site.rows("slow")[0]
    assert (first.completed_at - first.created_at).total_seconds() < 15
    assert stuck.completed_at is None or stuck.completed_at > first.completed_at


@pytest.mark.slow
def test_it_serves_the_admin_and_runs_the_schedules_under_backupsite_run(sites):
    site = sites["supervised"]
    first = wait_until(
        partial(first_success, site, "quick"), "a backup under backupsite_run", FIRST_RUN_SECONDS
    )
    assert first.completed_at is not None
    assert (first.completed_at - site.started_at).total_seconds() < FIRST_RUN_SECONDS
    url = f"http://127.0.0.1:{site.web_port}/admin/login/"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    log = site.log("backupsite_run")
    assert set(site.child_pids()) == {"web", "worker", "beat"}
    for name in ("web", "worker", "beat"):
        assert re.search(rf"^{name} +\| ", log, re.MULTILINE), f"no output of {name}:\n{log}"
    assert site.processes["backupsite_run"].poll() is None, log


@pytest.fixture
def bare_site(tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Site]:
    """A migrated site with nothing declared; the broker named by the test's parameter."""
    url = redis_server.url(1) if getattr(request, "param", "filesystem") == "redis" else "filesystem://"
    site = Site(home=tmp_path / "home", broker_url=url)
    site.home.mkdir()
    site.manage("migrate", "--noinput", "-v0")
    try:
        yield site
    finally:
        site.stop_all()


def wait_until_up(site: Site) -> dict[str, int]:
    """Wait for backupsite_run's worker to be ready and its beat to start; their pids."""

    def up() -> bool:
        log = site.log("backupsite_run")
        return bool(re.search(r"^worker +\| .* ready\.$", log, re.MULTILINE)) and "beat: Starting..." in log

    wait_until(up, "the worker and beat to start", 60)
    return site.child_pids()


@pytest.mark.slow
def test_it_stops_backupsite_run_and_all_its_children_on_ctrl_c(bare_site):
    supervisor = bare_site.backupsite_run("--no-web")
    children = wait_until_up(bare_site)
    assert set(children) == {"worker", "beat"}
    os.killpg(supervisor.pid, signal.SIGINT)  # what the terminal does: its foreground group
    started = time.monotonic()
    assert supervisor.wait(timeout=30) == 0, bare_site.log("backupsite_run")
    assert time.monotonic() - started < 15
    assert not [name for name, pid in children.items() if group_alive(pid)]
    log = bare_site.log("backupsite_run")
    assert "worker stopped (exit status 0)" in log and "beat stopped (exit status 0)" in log, log


@pytest.mark.slow
@pytest.mark.parametrize("bare_site", ["redis"], indirect=True)
def test_it_stops_everything_and_fails_backupsite_run_when_a_child_dies(bare_site):
    supervisor = bare_site.backupsite_run("--no-web")
    children = wait_until_up(bare_site)
    _kill_group(children["worker"])
    assert supervisor.wait(timeout=30) == 1, bare_site.log("backupsite_run")
    assert not group_alive(children["beat"])
    log = bare_site.log("backupsite_run")
    assert (
        f"worker (pid {children['worker']}) exited unexpectedly with signal SIGKILL; stopped beat" in log
    ), log


def test_it_runs_backup_create_inline_with_no_broker_at_all(manage, sqlite_source, toml_config):
    nowhere = {"CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens there
    config = toml_config(
        "site.toml",
        targets={"app-db": {"engine": "sqlite", "database": sqlite_source, "storages": ["local"]}},
    )
    assert manage("backup_config", "apply", str(config), extra_env=nowhere).returncode == 0
    started = time.monotonic()
    result = manage("backup_create", "--json", extra_env=nowhere)
    assert result.returncode == 0, result.stderr
    assert [record["status"] for record in json.loads(result.stdout)] == ["success"]
    assert time.monotonic() - started < 30
