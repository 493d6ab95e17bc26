"""Cleanup: retention applied to real backups in real local storage, per target and schedule,
with the safety brake, storage failures mid-delete and the audit trail."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backups import services
from backups.models import Backup, BackupStatus, BackupStep, CopyStatus, Storage, Target
from restores.models import RestoreLog
from schedules.models import BackupSchedule
from schedules.requests import info_for

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

DAY = timedelta(days=1)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def failing(*args: str) -> tuple[int, str]:
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=out)
    return caught.value.returncode, out.getvalue() + str(caught.value)


def daily_backups(target: Target, count: int, schedule: BackupSchedule | None = None) -> list[Backup]:
    """``count`` real backups, re-dated one day apart (oldest first), the newest yesterday."""
    info = info_for(schedule) if schedule is not None else None
    backups = [services.run_backup(target, schedule=info) for _ in range(count)]
    assert all(b.status == BackupStatus.SUCCESS for b in backups), [b.error_message for b in backups]
    newest = backups[-1].started_at
    assert newest is not None
    for age, backup in enumerate(reversed(backups), start=1):
        Backup.objects.filter(pk=backup.pk).update(started_at=newest - age * DAY)
        backup.refresh_from_db()
    return backups


def files_of(storage_dir: Path, backup: Backup) -> list[bool]:
    return [
        (storage_dir / backup.file_path).exists(),
        (storage_dir / f"{backup.file_path}.manifest.json").exists(),
    ]


def live(backups: list[Backup]) -> list[bool]:
    return [not Backup.objects.get(pk=b.pk).is_deleted for b in backups]


def test_it_deletes_what_the_policy_drops_with_every_file_and_a_step(sqlite_target, storage_dir):
    sqlite_target.retention = {"keep_last": 3}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 5)
    report = json.loads(run("backup_cleanup", "--json", "--force"))["targets"][0]
    assert report["deleted"] == [
        backups[0].pk,
        backups[1].pk,
    ]  # oldest first: an interruption keeps the newer
    assert {k["id"]: k["reasons"] for k in report["keep"]}[backups[4].pk] == [
        "last 1",
        "newest success",
        "min_keep 1",
    ]
    assert live(backups) == [False, False, True, True, True]
    assert files_of(storage_dir, backups[0]) == [False, False]
    assert files_of(storage_dir, backups[4]) == [True, True]
    gone = Backup.objects.get(pk=backups[0].pk)
    assert gone.copies.get().status == CopyStatus.DELETED
    step = gone.steps.get(name="cleanup")
    assert step.status == "success" and step.message == "retention: no rule keeps it"
    assert Backup.objects.filter(pk=backups[0].pk).exists()  # the row stays for audit


def test_it_prints_the_plan_on_a_dry_run_and_changes_nothing(sqlite_target, storage_dir):
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 2)
    out = run("backup_cleanup", "--dry-run")
    assert "app-db: would keep 1, would delete 1" in out
    assert f"delete  {backups[0].pk:>6} {backups[0].backup_name}: no rule keeps it" in out
    assert f"keep    {backups[1].pk:>6}" in out
    assert live(backups) == [True, True]
    assert files_of(storage_dir, backups[0]) == [True, True]
    assert not BackupStep.objects.filter(name="cleanup").exists()


def test_it_refuses_a_large_deletion_with_the_brake_until_forced(sqlite_target, storage_dir):
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 4)
    code, out = failing("backup_cleanup")
    assert code == 1
    assert (
        "refusing to delete 3 of 4 successful backups of app-db (75%, above max_delete_fraction 0.5)" in out
    )
    assert "--force" in out
    assert live(backups) == [True, True, True, True]
    assert all(files_of(storage_dir, b) == [True, True] for b in backups)
    run("backup_cleanup", "--force")
    assert live(backups) == [False, False, False, True]


def test_it_follows_max_delete_fraction_in_the_brake(sqlite_target):
    sqlite_target.retention = {"keep_last": 1, "max_delete_fraction": 0.8}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 4)
    run("backup_cleanup")
    assert live(backups) == [False, False, False, True]


def test_it_deletes_nothing_under_a_policy_without_rules(sqlite_target, storage_dir):
    backups = daily_backups(sqlite_target, 3)
    Backup.objects.filter(pk=backups[0].pk).update(started_at=backups[0].created_at - 3650 * DAY)
    report = json.loads(run("backup_cleanup", "--json"))["targets"][0]
    assert report["delete"] == []
    assert {tuple(k["reasons"]) for k in report["keep"]} == {("the policy has no rule: nothing is deleted",)}
    assert live(backups) == [True, True, True]


def test_it_plans_each_schedule_apart_with_its_own_policy(sqlite_target):
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    hourly = BackupSchedule.objects.create(
        name="hourly", target=sqlite_target, cron_expression="0 * * * *", retention={"keep_last": 2}
    )
    nightly = BackupSchedule.objects.create(name="nightly", target=sqlite_target, cron_expression="0 3 * * *")
    manual = daily_backups(sqlite_target, 2)
    from_hourly = daily_backups(sqlite_target, 3, schedule=hourly)
    from_nightly = daily_backups(sqlite_target, 2, schedule=nightly)  # no rules of its own: the target's
    plan = services.plan_cleanup(sqlite_target)
    assert [g.label for g in plan.groups] == ["manual runs", "schedule hourly", "schedule nightly"]
    assert {b.pk for b, _ in plan.delete} == {manual[0].pk, from_hourly[0].pk, from_nightly[0].pk}
    services.cleanup_target(sqlite_target)
    assert live(manual + from_hourly + from_nightly) == [False, True, False, True, True, False, True]


def test_it_fills_a_policy_without_retention_days_from_the_schedule(sqlite_target):
    schedule = BackupSchedule.objects.create(
        name="nightly", target=sqlite_target, cron_expression="0 3 * * *", retention_days=2
    )
    backups = daily_backups(sqlite_target, 4, schedule=schedule)
    policy = services.policy_for(sqlite_target, info_for(schedule))
    assert policy.retention_days == 2
    services.cleanup_target(sqlite_target)
    assert live(backups) == [False, False, True, True]  # 3 and 2 days older than the newest go


def test_it_never_counts_failed_runs_and_deletes_nothing_of_a_target_without_success(
    sqlite_target, sqlite_source
):
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    sqlite_source.unlink()
    failures = [services.run_backup(sqlite_target) for _ in range(3)]
    assert {b.status for b in failures} == {BackupStatus.FAILED}
    assert services.cleanup_target(sqlite_target).delete == []
    assert live(failures) == [True, True, True]


def test_it_keeps_the_newest_verified_backup_against_every_rule(sqlite_target):
    sqlite_target.retention = {"keep_last": 1, "max_delete_fraction": 1}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 3)
    assert services.verify_backup(backups[0]).ok
    plan = services.cleanup_target(sqlite_target)
    assert dict((b.pk, r) for b, r in plan.keep)[backups[0].pk] == ("newest verified",)
    assert live(backups) == [True, False, True]


def test_it_leaves_the_row_and_reports_it_when_a_storage_fails_mid_delete(sqlite_target, storage_dir):
    sqlite_target.retention = {"keep_last": 1, "max_delete_fraction": 1}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 4)
    # A real OS error, even for root: the object's name is now a non-empty directory.
    stuck = storage_dir / backups[1].file_path
    stuck.unlink()
    stuck.mkdir()
    (stuck / "keep").write_text("x")
    code, out = failing("backup_cleanup")
    assert code == 1
    assert f"backup {backups[1].pk}: " in out and "cannot delete" in out
    assert live(backups) == [False, True, False, True]
    row = Backup.objects.get(pk=backups[1].pk)
    assert row.copies.get().status != CopyStatus.DELETED
    assert row.steps.get(name="cleanup").status == "failed"
    # Once the storage is fixed, the next run finishes the job.
    (stuck / "keep").unlink()
    stuck.rmdir()
    run("backup_cleanup")
    assert live(backups) == [False, False, False, True]


def test_it_keeps_the_row_for_the_next_run_when_a_copy_on_a_second_storage_fails(
    sqlite_target, storage_dir, tmp_path
):
    second_dir = tmp_path / "second"
    second = Storage.objects.create(name="second", kind="local", options={"path": str(second_dir)})
    sqlite_target.storages.add(second)
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 2)
    blocked = second_dir / backups[0].file_path
    blocked.unlink()
    blocked.mkdir()
    (blocked / "x").write_text("x")
    plan = services.cleanup_target(sqlite_target)
    assert plan.deleted == [] and len(plan.errors) == 1
    statuses = {c.storage.name: c.status for c in Backup.objects.get(pk=backups[0].pk).copies.all()}
    assert statuses == {"local": CopyStatus.DELETED, "second": CopyStatus.STORED}
    assert live(backups) == [True, True]
    (blocked / "x").unlink()
    blocked.rmdir()
    assert services.cleanup_target(sqlite_target).deleted == [Backup.objects.get(pk=backups[0].pk)]


def test_it_leaves_a_backup_being_restored_for_the_next_run(sqlite_target):
    sqlite_target.retention = {"keep_last": 1}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 2)
    RestoreLog.objects.create(backup=backups[0], destination=sqlite_target, status="running")
    plan = services.cleanup_target(sqlite_target)
    assert "being restored" in plan.errors[0]
    assert live(backups) == [True, True]


def test_it_deletes_nothing_under_an_invalid_stored_policy_and_says_why(sqlite_target):
    backups = daily_backups(sqlite_target, 3)
    Target.objects.filter(pk=sqlite_target.pk).update(retention={"keep_within": "3m"})
    code, out = failing("backup_cleanup")
    assert code == 1
    assert "manual runs: retention.keep_within: '3m': 'm' is ambiguous" in out
    assert live(backups) == [True, True, True]


def test_it_never_ages_out_everything_of_a_stopped_schedule(sqlite_target):
    sqlite_target.retention = {"keep_within": "2d", "retention_days": 3}
    sqlite_target.save()
    backups = daily_backups(sqlite_target, 4)
    now = datetime.now().astimezone() + 400 * DAY  # the schedule stopped a year ago
    plan = services.plan_cleanup(sqlite_target, now)
    assert [b.pk for b, _ in plan.keep] == [backups[3].pk, backups[2].pk]
    assert plan.refused == ""


def test_it_reports_an_invalid_stored_policy_in_a_system_check(sqlite_target):
    from django.core.checks import run_checks

    Target.objects.filter(pk=sqlite_target.pk).update(retention={"keep_daily": 0})
    problems = [p for p in run_checks() if p.id == "backups.E004"]
    assert len(problems) == 1
    assert "target 'app-db' has an invalid retention policy: keep_daily: must be" in problems[0].msg


def test_it_counts_retention_from_a_backup_dated_a_moment_after_now(sqlite_target):
    # A backup stamped by a clock a second ahead (another host's, or this one stepped back a
    # moment) is the newest success: retention_days counts from it, as it will a second later.
    # Planned at a "now" before it, the old backups' age was counted from the one before it and
    # the plan changed with the millisecond (the flaky year-ahead clock test, fixed).
    sqlite_target.retention = {"keep_daily": 7, "retention_days": 60, "max_delete_fraction": 1}
    sqlite_target.save()
    old = daily_backups(sqlite_target, 5)
    now = timezone.now()
    for backup in old:
        assert backup.started_at is not None
        Backup.objects.filter(pk=backup.pk).update(started_at=backup.started_at - timedelta(days=365))
    ahead = services.run_backup(sqlite_target)
    Backup.objects.filter(pk=ahead.pk).update(started_at=now + timedelta(seconds=1))
    plan = services.plan_cleanup(sqlite_target, now)
    assert sorted(backup.pk for backup, _ in plan.delete) == sorted(backup.pk for backup in old)
    assert all(reason.startswith("expired: retention_days 60") for _, reason in plan.delete)
    # Beyond the tolerance it is a clock that ran ahead: kept, counted toward no rule.
    Backup.objects.filter(pk=ahead.pk).update(started_at=now + timedelta(hours=1))
    plan = services.plan_cleanup(sqlite_target, now)
    assert not plan.delete
