"""The Redis broker on a bad day (issue 18, fault suite cases 5 and 6): restarted mid-run,
restarted with tasks queued (with and without the append-only file), a task redelivered after
the visibility timeout, and a backlog after the workers were down. Whatever the broker does,
each cron slot runs at most once, and a slot that did not run is never silent: it is reported
"missed".

Real ``celery worker`` and ``celery beat`` processes, real ``redis-server`` processes of this
module's own (the suite's shared broker is never restarted), one every-minute schedule per
site. All the sites start together and their faults are injected in one pass (the fixture), so
the module waits on the same two or three minute boundaries; the tests then check what each
site recorded. The product's answers: ``claim_slot`` claims the slot of the time a delivery
runs, so a redelivered or stale message finds its slot claimed ("already ran") and a backlog
collapses into one run; a slot no delivery claimed is reported "missed" by the next claim.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.celery_site import Row, Site, minute, wait_until
from tests.config_builder import write_config
from tests.conftest import fill_sqlite
from tests.servers.redis import RedisServer, running_redis

pytestmark = pytest.mark.slow

TASK = "schedules.tasks.run_schedule"
DUPLICATE = "this slot already ran; duplicate delivery ignored"
VISIBILITY = 4  # seconds: the redelivery site's CELERY_VISIBILITY_TIMEOUT
# Seconds an unacknowledged message may wait at the mid-run site: longer than its run, so a
# redelivery there can only come from the restart (an acknowledgement the restart lost).
MIDRUN_VISIBILITY = 20
FIRST_SLOT_SECONDS = 90  # start-up, then beat's first minute boundary


@dataclass
class Seen:
    """What the fault pass recorded for the tests."""

    restarted_at: datetime | None = None
    queued_before_restart: dict[str, int] = field(default_factory=dict)
    queued_after_restart: dict[str, int] = field(default_factory=dict)
    held: dict[str, Row] = field(default_factory=dict)  # the slow runs in flight during a fault
    slot: dict[str, str] = field(default_factory=dict)  # the slot each site's fault hit
    workers_back_at: dict[str, datetime] = field(default_factory=dict)


def queued_runs(server: RedisServer, db: int) -> int:
    """Schedule firings waiting in Celery's default queue of database ``db``."""
    with contextlib.closing(server.client(db)) as client:
        bodies = client.lrange("celery", 0, -1)
    return sum(json.loads(body)["headers"]["task"] == TASK for body in bodies)


def unacked(server: RedisServer, db: int) -> int:
    with contextlib.closing(server.client(db)) as client:
        return int(client.hlen("unacked"))


def alerts(site: Site, event: str) -> list[dict[str, Any]]:
    path = site.home / "alerts.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [alert for alert in map(json.loads, lines) if alert["event"] == event]


def worker_logs(site: Site) -> str:
    return "".join(site.log(name) for name in site.processes if name.startswith("worker"))


def build_site(root: Path, template: Path, url: str, *, slow: bool, **env: str) -> Site:
    """A site with one every-minute schedule on a small SQLite database: `slow` (its source to
    be held locked by the test, so its run stays RUNNING until the lock is released) or `quick`."""
    root.mkdir()
    with sqlite3.connect(template) as source, sqlite3.connect(root / "catalog.sqlite3") as copy:
        source.backup(copy)  # the migrated catalog, without running migrate again
    source.close()
    copy.close()
    site = Site(home=root, broker_url=url, extra_env=env)
    name = "slow" if slow else "quick"
    write_config(
        root / "site.toml",
        storage_dir=root / "backups",
        notifiers={"audit": {"kind": "audit", "path": root / "alerts.jsonl", "default": True}},
        targets={
            name: {
                "engine": "sqlite",
                "database": fill_sqlite(root / "source.sqlite3", 50),
                "storages": ["local"],
            }
        },
        schedules={name: {"target": name, "cron": "* * * * *"}},
    )
    site.manage("backup_config", "apply", str(root / "site.toml"))
    return site


def hold_source(site: Site) -> None:
    """Lock the slow site's source (in the thread that will release it)."""
    site.lock = sqlite3.connect(site.home / "source.sqlite3", isolation_level=None)
    site.lock.execute("BEGIN EXCLUSIVE")


def running(site: Site, schedule: str) -> Row | None:
    return next((row for row in site.rows(schedule) if row.status == "running"), None)


@pytest.fixture(scope="module")
def brokers() -> Iterator[tuple[RedisServer, RedisServer, RedisServer]]:
    """Three brokers of this module's own: with the append-only file (the mid-run, queued and
    backlog sites, databases 0-2), without it (the lost site), and the redelivery site's."""
    with (
        running_redis(appendonly=True) as persistent,
        running_redis() as volatile,
        running_redis() as redelivering,
    ):
        yield persistent, volatile, redelivering


@pytest.fixture(scope="module")
def faults(
    brokers: tuple[RedisServer, RedisServer, RedisServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Site], Seen]]:
    persistent, volatile, redelivering = brokers
    root = tmp_path_factory.mktemp("broker")
    template = Site(home=root / "template", broker_url="filesystem://")
    template.home.mkdir()
    template.manage("migrate", "--noinput", "-v0")
    plans = {
        "midrun": (persistent.url(0), True, {"CELERY_VISIBILITY_TIMEOUT": str(MIDRUN_VISIBILITY)}),
        "queued": (persistent.url(1), False, {}),
        "backlog": (persistent.url(2), False, {}),
        "lost": (volatile.url(0), False, {}),
        "redelivery": (redelivering.url(0), True, {"CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY)}),
    }
    sites: dict[str, Site] = {}
    seen = Seen()
    # A run time between a schedule's saving and its beat's start would be one no firing claimed
    # (reported "missed" by the first claim): configure and start in the first half of a minute.
    if datetime.now(UTC).second > 30:
        time.sleep(61 - datetime.now(UTC).second)
    try:
        with ThreadPoolExecutor(max_workers=len(plans)) as pool:
            futures = {
                name: pool.submit(build_site, root / name, template.catalog, url, slow=slow, **env)
                for name, (url, slow, env) in plans.items()
            }
            sites = {name: future.result() for name, future in futures.items()}
        for name, site in sites.items():
            site.beat("beat")
            if name in ("midrun", "redelivery"):
                hold_source(site)
                site.worker("worker", concurrency=1)
        yield sites, inject(sites, seen, persistent, volatile)
    finally:
        for site in sites.values():
            site.terminate()
        for site in sites.values():
            site.stop_all()


def inject(sites: dict[str, Site], seen: Seen, persistent: RedisServer, volatile: RedisServer) -> Seen:
    """The fault pass: one restart of both restartable brokers while the mid-run site's backup
    runs and the queued and lost sites' firings wait; the redelivery site's second worker once
    the first holds its message past the visibility timeout; the backlog site's worker after two
    firings queued up."""
    midrun, redelivery = sites["midrun"], sites["redelivery"]

    def ready() -> bool:
        return bool(
            running(midrun, "slow")
            and running(redelivery, "slow")
            and queued_runs(persistent, 1)
            and queued_runs(volatile, 0)
        )

    wait_until(ready, "the first slot's runs and queued firings", FIRST_SLOT_SECONDS)
    for name in ("midrun", "redelivery"):
        held = running(sites[name], "slow")
        assert held is not None
        seen.held[name], seen.slot[name] = held, minute(held.created_at)
    seen.queued_before_restart = {"queued": queued_runs(persistent, 1), "lost": queued_runs(volatile, 0)}
    seen.slot["queued"] = seen.slot["lost"] = seen.slot["midrun"]
    persistent.restart()
    volatile.restart()
    seen.restarted_at = datetime.now(UTC)
    seen.queued_after_restart = {"queued": queued_runs(persistent, 1), "lost": queued_runs(volatile, 0)}
    for name in ("queued", "lost"):
        sites[name].worker("worker", concurrency=1)
        seen.workers_back_at[name] = datetime.now(UTC)

    # Redelivery: the message is unacknowledged for longer than the visibility timeout; a
    # worker starting now finds it (kombu restores visible messages when a consumer starts).
    held = seen.held["redelivery"]
    assert held.started_at is not None
    time.sleep(max(0.0, VISIBILITY + 1 - (datetime.now(UTC) - held.started_at).total_seconds()))
    redelivery.worker("worker2", concurrency=1)
    wait_until(lambda: DUPLICATE in redelivery.log("worker2"), "the redelivered message", 30)
    redelivery.release_lock()

    time.sleep(2)  # the mid-run site's worker reconnects while its backup still runs
    midrun.release_lock()

    # Backlog: the workers come back once two firings wait.
    wait_until(lambda: queued_runs(persistent, 2) >= 2, "two queued firings of the backlog", 75)
    seen.slot["backlog"] = minute(datetime.now(UTC))
    sites["backlog"].worker("worker", concurrency=1)
    seen.workers_back_at["backlog"] = datetime.now(UTC)

    # Anything the restart left unacknowledged at the mid-run site is delivered again to a
    # worker starting after the visibility timeout.
    wait_until(
        lambda: midrun.row("slow", seen.held["midrun"].id).status != "running", "the mid-run backup", 60
    )
    time.sleep(max(0.0, MIDRUN_VISIBILITY + 1 - (datetime.now(UTC) - seen.restarted_at).total_seconds()))
    midrun.worker("worker2", concurrency=1)
    return seen


def settled(site: Site, schedule: str) -> list[Row] | None:
    rows = site.rows(schedule)
    return None if any(row.status in ("pending", "running") for row in rows) else rows


def per_slot(rows: list[Row]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        if row.status != "skipped":
            counts[minute(row.started_at)] = counts.get(minute(row.started_at), 0) + 1
    return counts


def test_it_finishes_a_backup_the_broker_restarted_under_once_and_runs_the_next_slot(faults, brokers):
    sites, seen = faults
    site = sites["midrun"]
    held = seen.held["midrun"]
    done = site.row("slow", held.id)
    assert done.status == "success", done
    assert seen.restarted_at is not None and done.completed_at is not None
    assert done.completed_at > seen.restarted_at  # it really was running through the restart

    def next_slot() -> list[Row] | None:
        rows = settled(site, "slow")
        return rows if rows and any(minute(r.started_at) > seen.slot["midrun"] for r in rows) else None

    rows = wait_until(next_slot, "the next slot's run", 90)
    assert all(row.status == "success" for row in rows), rows
    assert max(per_slot(rows).values()) == 1, rows
    wait_until(lambda: unacked(brokers[0], 0) == 0, "every message acknowledged", 30)


def test_it_keeps_queued_firings_through_a_restart_with_appendonly_and_runs_the_slot_once(faults):
    sites, seen = faults
    assert seen.queued_after_restart["queued"] == seen.queued_before_restart["queued"] >= 1
    site = sites["queued"]
    rows = wait_until(lambda: settled(site, "quick") or None, "the queued firing's run", 60)
    assert [row.status for row in rows] == ["success"] * len(rows), rows
    assert per_slot(rows)[seen.slot["queued"]] == 1, rows
    assert max(per_slot(rows).values()) == 1, rows


def test_it_reports_a_firing_lost_with_a_broker_without_appendonly_as_missed(faults):
    sites, seen = faults
    assert seen.queued_before_restart["lost"] >= 1 and seen.queued_after_restart["lost"] == 0
    site = sites["lost"]

    def next_run() -> list[Row] | None:
        rows = settled(site, "quick")
        return rows if rows else None

    rows = wait_until(next_run, "the next slot's run", 90)
    assert seen.slot["lost"] not in per_slot(rows), rows  # the lost firing never ran ...
    missed = wait_until(lambda: alerts(site, "missed"), "the missed alert", 30)
    assert len(missed) == 1, missed  # ... and it was said, naming the slot,
    assert seen.slot["lost"][-5:] in missed[0]["text"], missed
    assert skipped_run_times(site) == [seen.slot["lost"]]  # and recorded SKIPPED
    # The run that found it passed over a run time: no recovery; the next one (on time) is.
    assert wait_until(lambda: alerts(site, "recovered"), "the recovery", 100)


def skipped_run_times(site: Site) -> list[str]:
    """The run times recorded SKIPPED because no firing ran them ("YYYY-MM-DD HH:MM")."""
    with contextlib.closing(sqlite3.connect(site.catalog, timeout=30)) as db:
        names = db.execute(
            "SELECT backup_name FROM backup_history WHERE status = 'skipped' AND notes LIKE 'skipped: run time %'"
        ).fetchall()
    stamps = sorted(datetime.strptime(name[-16:], "%Y%m%dT%H%M%SZ") for (name,) in names)
    return [stamp.strftime("%Y-%m-%d %H:%M") for stamp in stamps]


def test_it_ignores_a_message_redelivered_after_the_visibility_timeout(faults, brokers):
    sites, seen = faults
    site = sites["redelivery"]
    held = seen.held["redelivery"]
    done = wait_until(
        lambda: (row := site.row("slow", held.id)).status != "running" and row, "the held backup", 60
    )
    assert done.status == "success", done
    rows = wait_until(lambda: settled(site, "slow"), "nothing running", 60)
    assert per_slot(rows)[seen.slot["redelivery"]] == 1, rows
    assert DUPLICATE in site.log("worker2")  # the second worker got the message, and ran nothing


def test_it_runs_a_backlog_once_for_the_current_slot_and_reports_the_stale_ones_missed(faults):
    sites, seen = faults
    site = sites["backlog"]
    back = seen.workers_back_at["backlog"]
    wait_until(lambda: worker_logs(site).count(DUPLICATE) >= 1, "the stale firings to be ignored", 60)
    rows = wait_until(lambda: settled(site, "quick") or None, "the backlog's run", 60)
    ran = [row for row in rows if row.status != "skipped"]
    first = [row for row in ran if minute(row.started_at) == seen.slot["backlog"]]
    assert len(first) == 1 and first[0].status == "success", rows  # one run, not a burst
    assert all(minute(row.started_at) >= seen.slot["backlog"] for row in ran), rows
    stale = skipped_run_times(site)
    assert stale and all(run_time < seen.slot["backlog"] for run_time in stale), stale  # each recorded
    assert first[0].created_at >= back
    missed = wait_until(lambda: alerts(site, "missed"), "the missed alert", 30)
    assert len(missed) == 1, missed
