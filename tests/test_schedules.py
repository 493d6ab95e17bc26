"""Schedules: cron validation and run times, the one PeriodicTask per schedule, and a firing
that backs up at most once per slot, then applies retention to that schedule's backups."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django_celery_beat.models import PeriodicTask

from backups import services as backup_services
from backups.models import Backup, BackupStatus, Target
from schedules import services
from schedules.cron import CronError, cron_problem, next_runs, parse_cron
from schedules.models import BackupSchedule
from schedules.tasks import run_schedule
from tests.config_builder import write_config

pytestmark = pytest.mark.catalog

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 31 2 *", "never runs"),
        ("0 0 30 2 *", "never runs"),
        ("0 0 31 4,6,9,11 *", "never runs"),
        ("0 3 * *", "expected 5 fields"),
        ("0 25 * * *", "invalid hour field '25'"),
        ("61 * * * *", "invalid minute field '61'"),
        ("* * * 13 *", "invalid month field '13'"),
        ("* * * * mon-xyz", "invalid day of week field"),
    ],
)
def test_it_rejects_bad_and_never_firing_expressions(expression, message):
    assert message in (cron_problem(expression) or "")


@pytest.mark.parametrize(
    "expression", ["* * * * *", "0 3 * * *", "0 0 29 2 *", "0 0 29 2 1", "*/15 8-18 * * mon-fri"]
)
def test_it_accepts_expressions_that_run(expression):
    assert cron_problem(expression) is None


def test_it_follows_the_timezone_and_dst_in_next_runs():
    assert next_runs("0 3 * * *", "Europe/Berlin", utc("2026-11-21 12:00"), 3) == [
        datetime(2026, 11, 22, 3, 0, tzinfo=BERLIN),
        datetime(2026, 11, 23, 3, 0, tzinfo=BERLIN),
        datetime(2026, 11, 24, 3, 0, tzinfo=BERLIN),
    ]
    # 02:30 does not exist on 2026-03-29 in Berlin: that day has no run.
    spring = next_runs("30 2 * * *", "Europe/Berlin", utc("2026-03-28 12:00"), 2)
    assert [run.date().isoformat() for run in spring] == ["2026-03-30", "2026-03-31"]
    # 02:30 happens twice on 2026-10-25: it runs once.
    autumn = next_runs("30 2 * * *", "Europe/Berlin", utc("2026-10-24 12:00"), 2)
    assert [run.date().isoformat() for run in autumn] == ["2026-10-25", "2026-10-26"]
    # Both day fields must match (Celery's rule): Friday the 13th.
    fridays = next_runs("0 0 13 * fri", "UTC", utc("2026-01-01 00:00"), 2)
    assert [run.date().isoformat() for run in fridays] == ["2026-02-13", "2026-03-13"]


def test_it_gives_the_slot_a_firing_belongs_to_as_previous_run():
    cron = parse_cron("*/15 * * * *")
    assert cron.previous_run(utc("2026-11-22 10:44:59"), ZoneInfo("UTC")) == utc("2026-11-22 10:30")
    assert cron.previous_run(utc("2026-11-22 10:45:00"), ZoneInfo("UTC")) == utc("2026-11-22 10:45")
    with pytest.raises(CronError):
        parse_cron("0 0 31 2 *")


pytestmark_db = pytest.mark.django_db


def make_schedule(target: Target, **fields: object) -> BackupSchedule:
    values: dict[str, object] = {"name": "nightly", "target": target, "cron_expression": "0 3 * * *"}
    values.update(fields)
    schedule = BackupSchedule.objects.create(**values)
    services.sync_periodic_task(schedule)
    return schedule


def admin_form(target: Target, **fields: str) -> dict[str, object]:
    """The schedule admin's form as a browser posts it."""
    form: dict[str, object] = {
        "name": "nightly", "target": target.pk, "backup_type": "full", "compression": "gzip",
        "encryption": "", "escrow": "[]", "retention": "{}", "include_files": "[]", "include_tables": "[]",
        "exclude_tables": "[]", "notify_channels": "[]", "is_active": "on", "verify": "never",
    }  # fmt: skip
    form.update(fields)
    return form


def save(schedule: BackupSchedule) -> None:
    schedule.save()
    services.sync_periodic_task(schedule)


def task_of(schedule: BackupSchedule) -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"backup-schedule:{schedule.pk}")


@pytestmark_db
def test_it_gives_each_schedule_one_periodic_task_kept_in_step(sqlite_target):
    schedule = make_schedule(sqlite_target, timezone="Europe/Berlin")
    task = task_of(schedule)
    assert task.task == "schedules.tasks.run_schedule"
    assert json.loads(task.kwargs) == {"schedule_id": schedule.pk}
    assert task.args in ("[]", "") and task.enabled
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("0", "3", "Europe/Berlin")
    schedule.refresh_from_db()
    assert schedule.next_run_at is not None and schedule.next_run_at.astimezone(BERLIN).hour == 3

    schedule.cron_expression = "15 4 * * mon"
    save(schedule)
    assert PeriodicTask.objects.filter(name__startswith="backup-schedule:").count() == 1
    task = task_of(schedule)
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("15", "4", "mon")

    schedule.is_active = False
    save(schedule)
    assert not task_of(schedule).enabled
    schedule.is_active = True
    save(schedule)
    sqlite_target.is_active = False
    sqlite_target.save()
    save(schedule)
    assert not task_of(schedule).enabled

    pk = schedule.pk
    schedule.delete()
    services.remove_periodic_task(pk)
    assert not PeriodicTask.objects.filter(name=f"backup-schedule:{pk}").exists()


@pytestmark_db
def test_it_recreates_missing_tasks_and_removes_orphans_when_reconciling(sqlite_target):
    kept = make_schedule(sqlite_target)
    gone = make_schedule(sqlite_target, name="hourly", cron_expression="0 * * * *")
    gone_pk = gone.pk
    BackupSchedule.objects.filter(pk=gone_pk).delete()  # behind the service's back
    PeriodicTask.objects.filter(name=f"backup-schedule:{kept.pk}").delete()
    assert services.sync_all_periodic_tasks() == {"synced": 1, "removed": 1}
    assert task_of(kept).enabled
    assert not PeriodicTask.objects.filter(name=f"backup-schedule:{gone_pk}").exists()


@pytestmark_db
def test_it_creates_updates_and_deletes_the_task_from_the_admin(admin_client, sqlite_target):
    form = admin_form(sqlite_target, cron_expression="0 3 * * *", timezone="UTC")
    assert admin_client.post("/admin/schedules/backupschedule/add/", form).status_code == 302
    schedule = BackupSchedule.objects.get(name="nightly")
    assert task_of(schedule).crontab.hour == "3"
    form["cron_expression"] = "30 1 * * *"
    url = f"/admin/schedules/backupschedule/{schedule.pk}/change/"
    assert admin_client.post(url, form).status_code == 302
    assert task_of(schedule).crontab.hour == "1"
    admin_client.post(f"/admin/schedules/backupschedule/{schedule.pk}/delete/", {"post": "yes"})
    assert not BackupSchedule.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="backup-schedule:").exists()


@pytestmark_db
def test_it_backs_up_once_per_slot_on_firing(sqlite_target):
    schedule = make_schedule(sqlite_target, cron_expression="*/15 * * * *")
    now = datetime.now(UTC).replace(second=5, microsecond=0)
    first = services.run_schedule(schedule.pk, now)
    assert first is not None and first.status == BackupStatus.SUCCESS, first and first.error_message
    assert first.schedule_id == schedule.pk and first.initiated_by == "schedule:nightly"
    # A second beat, or a redelivery, in the same slot: nothing more.
    assert services.run_schedule(schedule.pk, now + timedelta(seconds=20)) is None
    assert Backup.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.last_run_at == now
    assert schedule.next_run_at is not None and schedule.next_run_at > now
    # The next slot runs again.
    second = services.run_schedule(schedule.pk, now + timedelta(minutes=15))
    assert second is not None and second.status == BackupStatus.SUCCESS


@pytestmark_db
def test_it_takes_only_the_schedule_id_in_the_celery_task(sqlite_target):
    schedule = make_schedule(sqlite_target, cron_expression="* * * * *")
    result = run_schedule.apply(kwargs={"schedule_id": schedule.pk})
    assert Backup.objects.get(pk=result.get()).schedule_id == schedule.pk


@pytestmark_db
def test_it_does_nothing_for_inactive_and_deleted_schedules(sqlite_target):
    schedule = make_schedule(sqlite_target, cron_expression="* * * * *", is_active=False)
    assert services.run_schedule(schedule.pk) is None
    assert services.run_schedule(999_999) is None
    assert not Backup.objects.exists()


@pytestmark_db
def test_it_applies_a_schedules_retention_to_its_own_backups_after_success(sqlite_target):
    manual = [backup_services.run_backup(sqlite_target) for _ in range(2)]
    schedule = make_schedule(sqlite_target, cron_expression="* * * * *", retention={"keep_last": 1})
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    first = services.run_schedule(schedule.pk, start)
    second = services.run_schedule(schedule.pk, start + timedelta(minutes=1))
    assert first is not None and second is not None
    assert Backup.objects.get(pk=first.pk).is_deleted
    assert not Backup.objects.get(pk=second.pk).is_deleted
    assert not any(Backup.objects.get(pk=b.pk).is_deleted for b in manual)  # not this schedule's


def apply_site(tmp_path: Path, source: Path, **schedule_fields: object) -> None:
    """Apply a TOML file with one local storage, the SQLite target app-db and the schedule
    nightly (``cron = "0 3 * * *"`` plus ``schedule_fields``)."""
    from backups.config import loader as config

    path = write_config(
        tmp_path / "site.toml",
        storage_dir=tmp_path / "store",
        targets={"app-db": {"engine": "sqlite", "database": source, "storages": ["local"]}},
        schedules={"nightly": {"target": "app-db", "cron": "0 3 * * *", **schedule_fields}},
    )
    config.apply(config.load(path), probe=False)


@pytestmark_db
def test_it_creates_the_periodic_tasks_on_config_apply(tmp_path, sqlite_source):
    apply_site(tmp_path, sqlite_source, timezone="Europe/Berlin")
    schedule = BackupSchedule.objects.get(name="nightly")
    assert task_of(schedule).crontab.hour == "3"


@pytestmark_db
def test_it_shows_the_next_runs_in_the_admin_and_refuses_a_never_firing_cron(admin_client, sqlite_target):
    schedule = make_schedule(sqlite_target, timezone="Europe/Berlin")
    url = f"/admin/schedules/backupschedule/{schedule.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "Next three runs" in page and "03:00 CET" in page
    form = admin_form(sqlite_target, cron_expression="0 0 31 2 *", timezone="Europe/Berlin")
    page = admin_client.post(url, form).content.decode()
    assert "never runs" in page
    assert BackupSchedule.objects.get(pk=schedule.pk).cron_expression == "0 3 * * *"
    assert task_of(schedule).crontab.hour == "3"


@pytestmark_db
def test_it_verifies_each_scheduled_backup_with_verify_after_backup(sqlite_target):
    schedule = make_schedule(sqlite_target, cron_expression="* * * * *", verify="after-backup")
    backup = services.run_schedule(schedule.pk)
    assert backup is not None
    backup.refresh_from_db()
    assert backup.verified and backup.verified_at is not None
    assert backup.steps.filter(name="verify").exists()


@pytestmark_db
def test_it_claims_daily_verification_once_a_day(sqlite_target):
    schedule = make_schedule(sqlite_target, cron_expression="* * * * *", verify="daily")
    now = datetime.now(UTC)
    assert services.due_verifications(now) == []  # nothing to verify yet
    backup = services.run_schedule(schedule.pk, now)
    assert backup is not None and not Backup.objects.get(pk=backup.pk).verified
    assert services.due_verifications(now) == [backup.pk]
    assert services.due_verifications(now + timedelta(hours=1)) == []  # claimed: not queued twice
    assert services.verify_scheduled(backup.pk) is True
    assert Backup.objects.get(pk=backup.pk).verified
    later = services.run_schedule(schedule.pk, now + timedelta(hours=2))
    assert later is not None
    assert services.due_verifications(now + timedelta(hours=3)) == []  # verified within the day
    assert services.due_verifications(now + timedelta(days=1, hours=1)) == [later.pk]
    assert services.verify_scheduled(999_999) is None


@pytestmark_db
def test_it_sets_verification_and_grace_from_the_config(tmp_path, sqlite_source):
    apply_site(tmp_path, sqlite_source, verify="daily", grace_minutes=90)
    schedule = BackupSchedule.objects.get(name="nightly")
    assert (schedule.verify, schedule.grace_minutes) == ("daily", 90)


@pytestmark_db
def test_it_claims_a_slot_once_when_the_clock_went_back_though_no_backup_row_exists_yet(sqlite_target):
    """Under a clock set back a day, a slot that never ran may be claimed, but by one of two
    racing deliveries only: the second is refused before the first has made its backup row."""
    schedule = make_schedule(sqlite_target, cron_expression="0 * * * *")
    now = datetime(2030, 5, 2, 12, 0, 5, tzinfo=UTC)
    assert services.claim_slot(schedule, now) is not None
    schedule.refresh_from_db()
    behind = now - timedelta(days=1)
    assert services.claim_slot(schedule, behind) == behind.replace(second=0)
    assert services.claim_slot(schedule, behind + timedelta(seconds=20)) is None
    schedule.refresh_from_db()
    assert schedule.latest_slot == now.replace(second=0)  # never moved back
    # Back at the right time: the slot claimed before the clock went back stays claimed.
    assert services.claim_slot(schedule, now + timedelta(minutes=1)) is None
    assert services.claim_slot(schedule, now + timedelta(hours=1)) is not None


@pytestmark_db
def test_it_never_claims_again_a_slot_a_backup_was_made_in_when_the_clock_went_back(sqlite_target):
    schedule = make_schedule(sqlite_target, cron_expression="0 3 * * *")
    night = datetime.now(UTC).replace(hour=3, minute=0, second=10, microsecond=0) - timedelta(days=2)
    made = services.run_schedule(schedule.pk, night)
    assert made is not None and made.status == BackupStatus.SUCCESS
    Backup.objects.filter(pk=made.pk).update(created_at=night)  # the row as that night's clock made it
    assert services.run_schedule(schedule.pk, night + timedelta(days=1)) is not None
    # The clock set back into the first night (a delivery that claimed no slot since): still ran.
    assert services.run_schedule(schedule.pk, night + timedelta(hours=5)) is None
    assert Backup.objects.count() == 2


def test_it_makes_beat_fire_an_entry_whose_last_run_is_dated_after_now() -> None:
    """django-celery-beat waits for the clock to pass a last run dated ahead; ours takes now."""
    from django_celery_beat.models import CrontabSchedule

    from backupsite.celery import app
    from schedules.beat import ModelEntry

    crontab = CrontabSchedule(minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*")
    ahead = datetime.now(UTC) + timedelta(days=365)
    task = PeriodicTask(name="ahead", task="x", crontab=crontab, last_run_at=ahead, enabled=True)
    entry = ModelEntry(task, app=app)
    _due, next_check = entry.is_due()
    assert entry.last_run_at <= datetime.now(UTC) and task.last_run_at == entry.last_run_at
    assert next_check <= 60  # due within the minute, not in a year


# Outside a test transaction, as in beat: django-celery-beat closes old connections itself, which
# ends the test's transaction on PostgreSQL (SQLite's in-memory test catalog ignores the close).
@pytest.mark.django_db(transaction=True)
def test_it_installs_the_watch_and_the_sweep_in_beat_on_the_watch_queue_dropped_when_late() -> None:
    """What beat stores and sends for the fixed entries (settings.CELERY_BEAT_SCHEDULE): the
    watch every minute and the sweep every 6 hours, both routed to the watch's own queue and
    given an expiry (django-celery-beat keeps it only under the name ``expire_seconds``)."""
    from backupsite.celery import app
    from schedules.beat import DatabaseScheduler

    app.loader.import_default_modules()  # what a worker does at start: autodiscover the tasks
    scheduler = DatabaseScheduler(app=app)
    expected = {
        "backupsite-watch": ("schedules.tasks.watch", 60, 120),
        "backupsite-sweep": ("backups.tasks.sweep_leftovers", 6 * 3600, 6 * 3600),
        "backupsite-external-watch": ("backups.tasks.watch_external_targets", 300, 300),
    }
    for name, (task, every, expires) in expected.items():
        row = PeriodicTask.objects.get(name=name)
        assert row.enabled and row.task == task and row.interval is not None
        assert row.interval.every * {"seconds": 1, "minutes": 60, "hours": 3600}[row.interval.period] == every
        entry = scheduler.schedule[name]
        assert entry.options["expires"] == expires
        assert app.amqp.router.route(entry.options, entry.task)["queue"].name == "watch"
        assert task in app.tasks  # the name beat sends is a registered task
