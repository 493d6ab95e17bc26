"""Real Celery processes: workers and beats (and ``manage.py backupsite_run``, what ``make run``
serves) against a real catalog file, with a real Redis broker and with the embedded filesystem
transport. Each site is a BACKUPSITE_HOME of its own; the sites of this module start together,
so their every-minute schedules share the waiting."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from tests.celery_site import (
    Row,
    Site,
    beat_sends,
    group_alive,
    group_gone,
    kill_group,
    make_site,
    migrated_site,
    minute,
    wait_until,
)
from tests.servers import free_port, wait_for
from tests.servers.redis import RedisServer

BROKERS = ["redis", "filesystem"]
# Beat fires a `* * * * *` schedule at the next minute boundary; allow for start-up and the run.
FIRST_RUN_SECONDS = 75


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
    assert set(site.child_pids()) == {"web", "worker", "watch", "beat"}
    for name in ("web", "worker", "watch", "beat"):
        assert re.search(rf"^{name} +\| ", log, re.MULTILINE), f"no output of {name}:\n{log}"
    assert site.processes["backupsite_run"].poll() is None, log

    # Beat's every-minute watch goes to the watch's own worker, never to the backups' worker.
    def watched() -> bool:
        done = r"^watch +\| .*Task schedules\.tasks\.watch\[\S+\] succeeded"
        return bool(re.search(done, site.log("backupsite_run"), re.MULTILINE))

    wait_until(watched, "the watch to run on the watch worker", 75)
    log = site.log("backupsite_run")
    assert not re.search(r"^worker +\| .*schedules\.tasks\.watch\[", log, re.MULTILINE), log


@pytest.fixture
def bare_site(tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Site]:
    """A migrated site with nothing declared; the broker named by the test's parameter."""
    url = redis_server.url(1) if getattr(request, "param", "filesystem") == "redis" else "filesystem://"
    site = migrated_site(tmp_path / "home", url)
    try:
        yield site
    finally:
        site.stop_all()


def wait_until_up(site: Site) -> dict[str, int]:
    """Wait for backupsite_run's two workers to be ready and its beat to start; their pids."""

    def up() -> bool:
        log = site.log("backupsite_run")
        ready = all(re.search(rf"^{name} +\| .* ready\.$", log, re.MULTILINE) for name in ("worker", "watch"))
        return ready and "beat: Starting..." in log

    wait_until(up, "the workers and beat to start", 60)
    return site.child_pids()


@pytest.mark.slow
def test_it_stops_backupsite_run_and_all_its_children_on_ctrl_c(bare_site):
    supervisor = bare_site.backupsite_run("--no-web")
    children = wait_until_up(bare_site)
    assert set(children) == {"worker", "watch", "beat"}
    os.killpg(supervisor.pid, signal.SIGINT)  # what the terminal does: its foreground group
    started = time.monotonic()
    assert supervisor.wait(timeout=30) == 0, bare_site.log("backupsite_run")
    assert time.monotonic() - started < 15
    assert not [name for name, pid in children.items() if group_alive(pid)]
    log = bare_site.log("backupsite_run")
    for name in ("worker", "watch", "beat"):
        assert f"{name} stopped (exit status 0)" in log, log


@pytest.mark.slow
def test_it_stops_beat_on_ctrl_c_while_beat_is_still_building_its_scheduler(bare_site):
    # The first tenth of a second after "beat: Starting..." is when beat builds its scheduler
    # from the catalog. Before the fix, a signal in it was swallowed in about a run in four (the
    # handler built a second scheduler on the interrupted connection) and beat ran on.
    for attempt in range(8):
        name = f"beat{attempt}"
        beat = bare_site.beat(name)
        wait_until(lambda: "beat: Starting..." in bare_site.log(name), "beat to start", 60)  # noqa: B023
        time.sleep(attempt * 0.012)
        beat.send_signal(signal.SIGINT)
        try:
            status = beat.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_group(beat.pid)
            beat.wait(timeout=30)
            pytest.fail(f"beat ran on after SIGINT (attempt {attempt}):\n{bare_site.log(name)}")
        assert status == 0, bare_site.log(name)


@pytest.mark.slow
@pytest.mark.parametrize("bare_site", ["redis"], indirect=True)
def test_it_stops_everything_and_fails_backupsite_run_when_a_child_dies(bare_site):
    supervisor = bare_site.backupsite_run("--no-web")
    children = wait_until_up(bare_site)
    kill_group(children["worker"])
    assert supervisor.wait(timeout=30) == 1, bare_site.log("backupsite_run")
    assert not group_alive(children["watch"]) and not group_alive(children["beat"])
    log = bare_site.log("backupsite_run")
    assert (
        f"worker (pid {children['worker']}) exited unexpectedly with signal SIGKILL; stopped watch, beat"
        in log
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
