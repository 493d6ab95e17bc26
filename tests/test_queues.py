"""Worker queues per target (``Target.queue``, TOML ``queue = "eu-db"``): a target's runs, scheduled
firings, verifications and the restores into it go to its queue, so only the workers consuming it
(near its database) do its work; the rest go to the default queue, ``celery``.

The dispatches are read back from the broker the test process sends to (no worker: what is on
each queue is what a worker of that queue would get); the slow test runs a site on a real Redis
broker with two workers, one per queue, and finds each piece of work done by the right one."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.beat import Scheduler
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import ModelEntry

from backups import services
from backups.config import loader as config
from backups.models import Backup, BackupStatus, Storage, Target
from backupsite.celery import app
from restores.models import RestoreLog, RestoreStatus
from restores.refusals import confirmation_word
from schedules import services as schedule_services
from schedules import tasks as schedule_tasks
from schedules.management.commands.backupsite_run import queue_names
from schedules.models import BackupSchedule
from schedules.supervisor import site_children
from tests.celery_site import Site, migrated_site, wait_until
from tests.config_builder import toml_text, write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers.redis import RedisServer

QUEUES = ("celery", "eu-db")


# -- the queue of a target, and its checks -----------------------------------------------------


def test_it_sends_a_target_without_a_queue_to_the_default_queue():
    assert services.queue_for(Target(name="near", queue="")) == "celery" == services.DEFAULT_QUEUE
    assert services.queue_for(Target(name="far", queue="eu-db")) == "eu-db"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("eu db", "'eu db' is not a queue name: use 1-100 letters, digits"),
        ("eu/db", "'eu/db' is not a queue name"),
        ("x" * 101, "is not a queue name: use 1-100"),
        ("watch", '"watch" is the queue of the watch\'s own worker; choose another name'),
    ],
)
def test_it_refuses_a_queue_name_that_cannot_be_one(name, expected):
    assert expected in services.queue_problem(name)
    with pytest.raises(ValidationError) as caught:
        Target(name="far", engine="sqlite", database="/tmp/x.sqlite3", queue=name).clean()
    assert expected in " ".join(caught.value.message_dict["queue"])


@pytest.mark.parametrize("name", ["eu-db", "EU_db.2", "worker@eu-west-1", "x" * 100, "celery"])
def test_it_accepts_letters_digits_and_separators(name):
    assert services.queue_problem(name) == ""


@pytest.fixture
def site_text(storage_dir: Path, sqlite_source: Path) -> str:
    return toml_text(
        storage_dir=storage_dir,
        targets={
            "far": {"engine": "sqlite", "database": sqlite_source, "storages": ["local"], "queue": "eu-db"}
        },
        schedules={"nightly": {"target": "far", "cron": "0 3 * * *"}},
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"eu db"', "targets.far.queue: 'eu db' is not a queue name: use 1-100 letters, digits, '-', '_', "),
        ('"watch"', 'targets.far.queue: "watch" is the queue of the watch\'s own worker; choose another'),
        ("3", "targets.far.queue: must be a string, got int"),
    ],
)
def test_it_rejects_a_bad_queue_in_the_toml_file_naming_the_key_and_changes_nothing(
    tmp_path, site_text, value, expected
):
    path = tmp_path / "site.toml"
    path.write_text(site_text.replace('queue = "eu-db"', f"queue = {value}"))
    with pytest.raises(config.ConfigInvalid) as caught:
        config.apply(config.load(path))
    assert any(expected in error for error in caught.value.errors), caught.value.errors
    assert (
        not Target.objects.exists() and not PeriodicTask.objects.filter(name__startswith="backup-").exists()
    )


# -- beat: the schedules' periodic tasks carry the target's queue -------------------------------


def periodic_task(schedule_name: str) -> PeriodicTask:
    schedule = BackupSchedule.objects.get(name=schedule_name)
    return PeriodicTask.objects.get(name=schedule_services.periodic_task_name(schedule.pk))


@pytest.mark.django_db
def test_it_routes_the_schedules_of_a_target_to_its_queue_as_the_toml_file_changes(tmp_path, site_text):
    path = tmp_path / "site.toml"
    path.write_text(site_text)
    config.apply(config.load(path))
    task = periodic_task("nightly")
    assert (task.queue, task.exchange, task.routing_key) == ("eu-db", None, None)

    path.write_text(site_text.replace('queue = "eu-db"', 'queue = "ap-db"'))
    report = config.apply(config.load(path))
    assert "target far (queue)" in report.updated
    assert periodic_task("nightly").queue == "ap-db"

    path.write_text(site_text.replace('queue = "eu-db"\n', ""))
    config.apply(config.load(path))
    assert Target.objects.get(name="far").queue == ""
    assert periodic_task("nightly").queue == "celery"


@pytest.mark.django_db
def test_it_reroutes_the_schedules_when_the_target_is_saved_with_another_queue(sqlite_target):
    schedule = BackupSchedule.objects.create(name="hourly", target=sqlite_target, cron_expression="0 * * * *")
    schedule_services.sync_periodic_task(schedule)
    assert periodic_task("hourly").queue == "celery"
    before = PeriodicTasks.last_change()

    sqlite_target.queue = "eu-db"
    sqlite_target.save()  # what the admin's change form does
    assert periodic_task("hourly").queue == "eu-db"
    after = PeriodicTasks.last_change()
    assert after is not None and (before is None or after > before)  # beat reloads its schedule

    sqlite_target.save()  # nothing changed: nothing to tell beat
    assert PeriodicTasks.last_change() == after
    assert schedule_services.route_schedules_of(sqlite_target) == 0


@pytest.mark.django_db
def test_it_shows_the_queue_on_the_admins_target_form_and_refuses_the_watchs(client, sqlite_target):
    client.force_login(User.objects.create_superuser("root", password="x"))
    page = client.get(reverse("admin:backups_target_change", args=[sqlite_target.pk])).content.decode()
    assert 'name="queue"' in page and "the default queue, celery" in page
    with pytest.raises(ValidationError) as caught:
        Target(name="x", engine="sqlite", database=sqlite_target.database, queue="watch").full_clean()
    assert "queue" in caught.value.message_dict


# -- backupsite_run --queues ---------------------------------------------------------------------


def test_it_starts_the_sites_worker_on_the_queues_given():
    specs = site_children(
        base_dir=REPO,
        home=REPO,
        bind=None,
        concurrency=2,
        node_name="n@h",
        queues=queue_names("eu-db,celery"),
    )
    worker = next(spec for spec in specs if spec.name == "worker").argv
    assert worker[worker.index("-Q") + 1] == "eu-db,celery"
    watch = next(spec for spec in specs if spec.name == "watch").argv
    assert watch[watch.index("-Q") + 1] == "watch"
    default = site_children(base_dir=REPO, home=REPO, bind=None, concurrency=2, node_name="n@h")
    assert "celery" in next(spec for spec in default if spec.name == "worker").argv


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("eu-db,,celery", "'' is not a queue name"),
        ("eu db", "'eu db' is not a queue name"),
        ("celery,watch", '"watch" has a worker of its own'),
        ("eu-db,eu-db", "lists eu-db more than once"),
    ],
)
def test_it_refuses_a_bad_queue_list_before_starting_anything(value, expected):
    with pytest.raises(CommandError, match="argument --queues: ") as caught:
        call_command("backupsite_run", "--queues", value)
    assert expected in str(caught.value)


# -- every dispatch, read back from the broker ---------------------------------------------------


def queued(queue: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """Take every message off ``queue`` of the test process's broker: (task name, args, kwargs)."""
    found = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args, kwargs, _embed = message.decode()
            found.append((message.headers["task"], args, kwargs))
    return found


@pytest.fixture
def broker() -> Iterator[None]:
    """The test process's broker (no worker takes from it), its queues emptied before and after."""
    for queue in QUEUES:
        queued(queue)
    yield
    for queue in QUEUES:
        queued(queue)


@pytest.fixture
def far(local_storage: Storage, tmp_path: Path) -> Target:
    target = Target.objects.create(
        name="far",
        engine="sqlite",
        database=str(fill_sqlite(tmp_path / "far.sqlite3", rows=20)),
        queue="eu-db",
    )
    target.storages.add(local_storage)
    return target


def logged_in(name: str) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(name, password="x"))
    return client


@pytest.mark.django_db
def test_it_queues_each_piece_of_a_targets_work_on_its_queue(
    broker, sqlite_target, far, django_capture_on_commit_callbacks
):
    alice, bob = logged_in("alice"), logged_in("bob")
    for target in (sqlite_target, far):
        assert alice.post(reverse("backups:run-now", args=[target.pk])).status_code == 302
    # Each run's row is written PENDING first; the task carries its id for the worker to fill.
    rows = {
        target.pk: Backup.objects.get(target=target, status=BackupStatus.PENDING).pk
        for target in (sqlite_target, far)
    }
    web = {"initiated_by": "web:alice"}
    assert queued("celery") == [
        ("backups.tasks.run_target_backup", [sqlite_target.pk], {**web, "backup_id": rows[sqlite_target.pk]})
    ]
    assert queued("eu-db") == [
        ("backups.tasks.run_target_backup", [far.pk], {**web, "backup_id": rows[far.pk]})
    ]

    backup = services.run_backup(far)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert alice.post(reverse("backups:verify", args=[backup.pk]), {"deep": "1"}).status_code == 302
    assert queued("eu-db") == [("backups.tasks.verify_backup_task", [backup.pk, True, "web:alice"], {})]

    with django_capture_on_commit_callbacks(execute=True):
        restore = {"to": str(far.pk), "confirm": confirmation_word(far)[0]}
        assert alice.post(reverse("restores:restore", args=[backup.pk]), restore).status_code == 302
    log = RestoreLog.objects.get()
    assert queued("eu-db") == [("restores.tasks.restore_backup_task", [log.pk], {})]
    assert queued("celery") == []

    # Four eyes: the approval queues the restore, on the destination's queue too.
    Target.objects.filter(pk=far.pk).update(protected=True)
    with django_capture_on_commit_callbacks(execute=True):
        alice.post(reverse("restores:restore", args=[backup.pk]), {**restore, "reason": "INC-7"})
    request = RestoreLog.objects.latest("pk")
    assert request.status == RestoreStatus.AWAITING and queued("eu-db") == []  # a request queues nothing
    with django_capture_on_commit_callbacks(execute=True):
        bob.post(reverse("restores:decide", args=[request.pk]), {"decision": "approve"})
    assert queued("eu-db") == [("restores.tasks.restore_backup_task", [request.pk], {})]

    # The watch (on its own queue) sends the day's verifications to the target's queue.
    BackupSchedule.objects.create(name="daily", target=far, cron_expression="0 3 * * *", verify="daily")
    Backup.objects.filter(pk=backup.pk).update(schedule=BackupSchedule.objects.get(name="daily"))
    schedule_tasks.watch()
    assert queued("eu-db") == [("schedules.tasks.verify_backup", [backup.pk], {})]
    assert queued("celery") == []


@pytest.mark.django_db
def test_it_has_beat_send_each_schedules_firing_to_its_targets_queue(broker, sqlite_target, far):
    for name, target in (("near-hourly", sqlite_target), ("far-hourly", far)):
        schedule = BackupSchedule.objects.create(name=name, target=target, cron_expression="0 * * * *")
        schedule_services.sync_periodic_task(schedule)
    beat = Scheduler(app=app, lazy=True)
    for name in ("near-hourly", "far-hourly"):
        # What beat does with a due entry of django-celery-beat's scheduler.
        beat.apply_async(ModelEntry(periodic_task(name), app=app), advance=False)
    near_pk, far_pk = (BackupSchedule.objects.get(name=name).pk for name in ("near-hourly", "far-hourly"))
    assert queued("celery") == [("schedules.tasks.run_schedule", [], {"schedule_id": near_pk})]
    assert queued("eu-db") == [("schedules.tasks.run_schedule", [], {"schedule_id": far_pk})]


# -- a site with a worker per queue, on a real Redis broker --------------------------------------


def post_as_alice(site: Site, path: str, fields: dict[str, str]) -> None:
    """POST as the superuser alice, through Django's test client in a process of the site (its
    catalog, its broker): the view and its dispatch as the web server runs them."""
    script = (
        "from django.test.utils import setup_test_environment; setup_test_environment()\n"
        "from django.test import Client\n"
        "from django.contrib.auth.models import User\n"
        "client = Client(); client.force_login(User.objects.get(username='alice'))\n"
        f"response = client.post({path!r}, {fields!r})\n"
        "assert response.status_code == 302, (response.status_code, response.content[:500])\n"
    )
    site.manage("shell", "-c", script)


def catalog_rows(site: Site, query: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(site.catalog, timeout=30) as db:
        rows = db.execute(query, args).fetchall()
    db.close()
    return rows


def catalog_row(site: Site, query: str, *args: object) -> tuple[Any, ...] | None:
    return next(iter(catalog_rows(site, query, *args)), None)


def pool_of(main_pid: int) -> set[int]:
    """The pool processes of the Celery worker ``main_pid`` (who runs the tasks: the pid a row's
    ``worker`` records), from the process table."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == main_pid:
                children.add(int(entry.name))
    return children


def ran_by(worker: str, main_pid: int) -> bool:
    host, _, pid = worker.rpartition(":")
    return host == os.uname().nodename and int(pid) in pool_of(main_pid)


def received(site: Site, log: str, task: str) -> list[str]:
    return re.findall(rf"Task {re.escape(task)}\[[0-9a-f-]+\] received", site.log(log))


def ready(site: Site, log: str, node: str) -> bool:
    """Whether the worker named ``node`` (a pattern; not the watch's worker) logged it is ready."""
    return re.search(rf"(^|\s){node}@\S+ ready\.", site.log(log), re.MULTILINE) is not None


@pytest.fixture
def two_site_workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Site, int, int]]:
    """A site on Redis: ``backupsite_run --queues celery`` (web, its worker, the watch's, beat)
    and a second worker consuming only ``eu-db``, as a worker near that database would. Targets
    ``near`` (no queue) and ``far`` (queue eu-db, scheduled every minute). Yields the site and
    the two workers' main pids (default, eu-db)."""
    site = migrated_site(tmp_path / "home", redis_server.url(3))
    write_config(
        tmp_path / "site.toml",
        storage_dir=tmp_path / "backups",
        targets={
            "near": {
                "engine": "sqlite",
                "database": fill_sqlite(tmp_path / "near.sqlite3", 30),
                "storages": ["local"],
            },
            "far": {
                "engine": "sqlite",
                "database": fill_sqlite(tmp_path / "far.sqlite3", 30),
                "storages": ["local"],
                "queue": "eu-db",
            },
        },
        schedules={"far-minutely": {"target": "far", "cron": "* * * * *"}},
    )
    site.manage("backup_config", "apply", str(tmp_path / "site.toml"))
    site.manage(
        "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_superuser('alice')"
    )
    try:
        site.backupsite_run("--no-web", "--queues", "celery", "--concurrency", "1")
        node = f"eu-{uuid.uuid4().hex[:8]}"
        eu = site.celery("eu", "worker", "-Q", "eu-db", "-c", "1", "-n", f"{node}@%h")
        default = wait_until(lambda: site.child_pids().get("worker"), "backupsite_run's worker", 60)
        wait_until(lambda: ready(site, "backupsite_run", r"backupsite-\d+"), "the site's worker", 90)
        wait_until(lambda: ready(site, "eu", node), "the eu-db worker", 90)
        yield site, default, eu.pid
    finally:
        site.stop_all()


@pytest.mark.slow
def test_it_runs_each_targets_work_on_a_worker_of_its_queue(two_site_workers):
    site, default_worker, eu_worker = two_site_workers
    ids = dict(catalog_rows(site, "SELECT name, id FROM backups_target"))
    for name in ("near", "far"):
        post_as_alice(site, reverse("backups:run-now", args=[ids[name]]), {})

    def run_now(name: str) -> tuple[Any, ...] | None:
        row = catalog_row(
            site,
            "SELECT id, status, worker FROM backup_history WHERE target_id = ? AND initiated_by = 'web:alice'",
            ids[name],
        )
        return row if row and row[1] not in ("pending", "running") else None

    _near_id, near_status, near_worker = wait_until(lambda: run_now("near"), "near's run", 60)
    far_id, far_status, far_worker = wait_until(lambda: run_now("far"), "far's run", 60)
    assert (near_status, far_status) == ("success", "success"), site.log("eu")
    assert ran_by(near_worker, default_worker), (near_worker, site.log("backupsite_run"))
    assert ran_by(far_worker, eu_worker), (far_worker, site.log("eu"))

    post_as_alice(site, reverse("backups:verify", args=[far_id]), {})
    restore = {"to": str(ids["far"]), "confirm": "far"}
    post_as_alice(site, reverse("restores:restore", args=[far_id]), restore)

    def restored() -> tuple[Any, ...] | None:
        row = catalog_row(site, "SELECT status, worker FROM backup_restore_log WHERE backup_id = ?", far_id)
        return row if row and row[0] not in ("pending", "running") else None

    status, restore_worker = wait_until(restored, "the restore into far", 60)
    assert status == "success", site.log("eu")
    assert ran_by(restore_worker, eu_worker), (restore_worker, site.log("eu"))
    wait_until(lambda: received(site, "eu", "backups.tasks.verify_backup_task"), "far's verification", 60)

    def fired() -> tuple[Any, ...] | None:
        return catalog_row(
            site,
            "SELECT b.status, b.worker FROM backup_history b JOIN backup_schedule s ON s.id = b.schedule_id "
            "WHERE s.name = 'far-minutely' AND b.status NOT IN ('pending', 'running')",
        )

    # Beat fires `* * * * *` at the next minute boundary: at most a minute from the start.
    status, fired_worker = wait_until(fired, "beat's firing of far-minutely", 80)
    assert status == "success", site.log("eu")
    assert ran_by(fired_worker, eu_worker), (fired_worker, site.log("eu"))

    # Nothing of far's reached the default worker: it ran near's run, and only that.
    main_log = site.log("backupsite_run")
    assert len(received(site, "backupsite_run", "backups.tasks.run_target_backup")) == 1, main_log
    for task in (
        "backups.tasks.verify_backup_task",
        "restores.tasks.restore_backup_task",
        "schedules.tasks.run_schedule",
    ):
        assert not received(site, "backupsite_run", task), main_log
