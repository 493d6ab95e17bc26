"""Real Celery processes for the tests: a Site is one installation (its own BACKUPSITE_HOME,
catalog file and broker) and the workers, beats and ``backupsite_run`` started for it, each in a
session of its own so a whole process group can be killed. Used by tests/test_celery_processes.py
and the broker faults in tests/reliability/test_broker.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest

from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite

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


def kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> None:
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
    #: More environment for every process of the site (e.g. CELERY_VISIBILITY_TIMEOUT).
    extra_env: dict[str, str] = field(default_factory=dict)

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
        env.update(self.extra_env)
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

    def worker(self, name: str = "worker", concurrency: int = 2) -> subprocess.Popen[bytes]:
        node = f"{name}-{uuid.uuid4().hex[:8]}@%h"
        return self.celery(name, "worker", "-c", str(concurrency), "-n", node)

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
        kill_group(process.pid)
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
            kill_group(pgid)
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


def migrated_site(home: Path, broker_url: str) -> Site:
    """A new site in ``home`` (created) with its catalog migrated and nothing declared."""
    site = Site(home=home, broker_url=broker_url)
    site.home.mkdir()
    site.manage("migrate", "--noinput", "-v0")
    return site


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


def beat_sends(site: Site, beat: str, task_name: str) -> set[str]:
    """The minutes (``YYYY-mm-dd HH:MM``) in which ``beat`` sent ``task_name``."""
    stamp = r"\[(\d{4}-\d\d-\d\d \d\d:\d\d):\d\d,\d+: INFO/MainProcess\]"
    return set(re.findall(rf"{stamp} Scheduler: Sending due task {re.escape(task_name)} ", site.log(beat)))


def minute(moment: datetime | None) -> str:
    assert moment is not None
    return moment.strftime("%Y-%m-%d %H:%M")
