"""What did not happen: the dead man's switch with controlled clocks, and shrunken backups
found on real dumps."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backups.models import Backup, BackupStatus, Target
from schedules import monitoring, services
from schedules.models import BackupSchedule
from tests.conftest import fill_sqlite

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nightly(target: Target, created: str = "2026-11-01 00:00", **fields: object) -> BackupSchedule:
    schedule = BackupSchedule.objects.create(
        name="nightly", target=target, cron_expression="0 3 * * *", **fields
    )
    BackupSchedule.objects.filter(pk=schedule.pk).update(created_at=utc(created))
    return BackupSchedule.objects.get(pk=schedule.pk)


def success_at(schedule: BackupSchedule, moment: datetime) -> Backup:
    return Backup.objects.create(
        target=schedule.target,
        schedule=schedule,
        backup_name="b",
        status=BackupStatus.SUCCESS,
        started_at=moment,
    )


def test_it_alerts_a_missed_run_once_after_the_grace_period_and_recovers_once(sqlite_target, settings):
    settings.BACKUPSITE_MISSED_GRACE_MINUTES = 60
    schedule = nightly(sqlite_target)
    success_at(schedule, utc("2026-11-20 03:00:10"))
    # The 21st's run is due at 03:00; within the grace period nothing is said.
    assert monitoring.check_missed(utc("2026-11-21 03:59")) == {"missed": 0, "recovered": 0}
    assert monitoring.check_missed(utc("2026-11-21 04:01")) == {"missed": 1, "recovered": 0}
    schedule.refresh_from_db()
    assert schedule.missed_since == utc("2026-11-21 03:00")
    # Once per outage, however often the watch runs, even when the next run is missed too.
    assert monitoring.check_missed(utc("2026-11-21 12:00"))["missed"] == 0
    assert monitoring.check_missed(utc("2026-11-22 05:00"))["missed"] == 0
    # A success for the latest due run, even a late one, ends the outage, once.
    success_at(schedule, utc("2026-11-22 05:30"))
    assert monitoring.check_missed(utc("2026-11-22 06:00")) == {"missed": 0, "recovered": 1}
    schedule.refresh_from_db()
    assert schedule.missed_since is None
    assert monitoring.check_missed(utc("2026-11-22 07:00")) == {"missed": 0, "recovered": 0}


def test_it_counts_a_failed_run_as_missed(sqlite_target, settings):
    settings.BACKUPSITE_MISSED_GRACE_MINUTES = 30
    schedule = nightly(sqlite_target)
    Backup.objects.create(
        target=sqlite_target, schedule=schedule, backup_name="b", status=BackupStatus.FAILED,
        started_at=utc("2026-11-21 03:00:02"), error_message="pg_dump: connection refused",
    )  # fmt: skip
    assert monitoring.check_missed(utc("2026-11-21 03:31"))["missed"] == 1


def test_it_does_not_miss_new_inactive_and_graceful_schedules(sqlite_target, settings):
    settings.BACKUPSITE_MISSED_GRACE_MINUTES = 60
    nightly(sqlite_target, created="2026-11-21 03:30")  # created after the due run
    assert monitoring.check_missed(utc("2026-11-21 05:00"))["missed"] == 0
    BackupSchedule.objects.all().delete()
    paused = nightly(sqlite_target, is_active=False)
    assert monitoring.check_missed(utc("2026-11-21 05:00"))["missed"] == 0
    paused.delete()
    nightly(sqlite_target, created="2026-11-20 12:00", grace_minutes=240)  # its own grace period
    assert monitoring.check_missed(utc("2026-11-21 05:00"))["missed"] == 0
    assert monitoring.check_missed(utc("2026-11-21 07:01"))["missed"] == 1


def test_it_includes_the_missed_check_in_the_watch(sqlite_target, settings):
    settings.BACKUPSITE_MISSED_GRACE_MINUTES = 10
    nightly(sqlite_target)
    assert services.watch(utc("2026-11-21 03:11")) == {
        "lost": 0,
        "lost_restores": 0,
        "lost_drills": 0,
        "alerts_resent": 0,
        "missed": 1,
        "recovered": 0,
    }


def made_at(target: Target, name: str, cron: str, moment: str) -> BackupSchedule:
    """A schedule (and its target) last changed at ``moment``: it owes nothing for time before."""
    schedule = BackupSchedule.objects.create(name=name, target=target, cron_expression=cron)
    BackupSchedule.objects.filter(pk=schedule.pk).update(created_at=utc(moment), updated_at=utc(moment))
    Target.objects.filter(pk=target.pk).update(updated_at=utc(moment))
    schedule.refresh_from_db()
    return schedule


def audit_channel(tmp_path: Path) -> Path:
    """A default audit-file channel; its file."""
    from backups.models import Notifier

    audit = tmp_path / "audit.jsonl"
    Notifier.objects.create(name="audit", kind="audit", options={"path": str(audit)}, is_default=True)
    return audit


def test_it_alerts_a_run_time_no_firing_claimed_when_the_next_one_runs(sqlite_target, tmp_path):
    """A firing lost by the broker: the watch alone takes the next run's success for it."""
    audit = audit_channel(tmp_path)
    hourly = made_at(sqlite_target, "hourly", "0 * * * *", "2026-11-21 08:30")
    assert services.run_schedule(hourly.pk, utc("2026-11-21 09:00:02")) is not None
    assert not audit.exists()
    # 10:00's firing never reaches a worker; 11:00's does: 10:00 is reported and recorded
    # SKIPPED. 11:00's success is late work (it skipped a run time): no recovery yet.
    eleven = services.run_schedule(hourly.pk, utc("2026-11-21 11:00:02"))
    assert eleven is not None and eleven.status == BackupStatus.SUCCESS
    alerts = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [alert["event"] for alert in alerts] == ["missed"]
    assert "did not back up app-db at 2026-11-21 10:00 UTC" in alerts[0]["text"], alerts[0]
    skipped = Backup.objects.get(schedule=hourly, status=BackupStatus.SKIPPED)
    assert skipped.backup_name == "app-db-full-20261121T100000Z" and skipped.started_at is None
    assert "run time 2026-11-21 10:00 UTC of schedule hourly never ran" in skipped.notes
    # Paused over 12:00 and resumed at 12:30 (saved): the paused run time is owed nothing, and
    # 13:00 runs on time: the recovery.
    BackupSchedule.objects.filter(pk=hourly.pk).update(updated_at=utc("2026-11-21 12:30"))
    assert services.run_schedule(hourly.pk, utc("2026-11-21 13:00:02")) is not None
    alerts = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [alert["event"] for alert in alerts] == ["missed", "recovered"]
    assert Backup.objects.filter(schedule=hourly, status=BackupStatus.SKIPPED).count() == 1
    # A week without a firing: one alert counting them, and a row for each.
    services.run_schedule(hourly.pk, utc("2026-11-28 13:00:02"))
    last = json.loads(audit.read_text().splitlines()[2])
    assert last["event"] == "missed" and "at 2026-11-21 14:00 UTC and 166 later run time(s)" in last["text"]
    assert Backup.objects.filter(schedule=hourly, status=BackupStatus.SKIPPED).count() == 1 + 167


def test_it_records_at_most_a_thousand_skipped_run_times_and_says_so(sqlite_target):
    minutely = made_at(sqlite_target, "minutely", "* * * * *", "2026-11-21 08:30")
    assert services.claim_slot(minutely, utc("2026-11-21 08:31:01")) is not None
    minutely.refresh_from_db()
    assert services.claim_slot(minutely, utc("2026-11-23 08:31:01")) is not None  # two days on
    rows = Backup.objects.filter(schedule=minutely, status=BackupStatus.SKIPPED).order_by("pk")
    assert rows.count() == 1000
    last = rows.last()
    assert last is not None and "every later run time before 2026-11-23 08:31 UTC, not listed" in last.notes
    assert BackupSchedule.objects.get(pk=minutely.pk).behind


def test_it_recovers_only_when_a_run_is_on_time(sqlite_target, tmp_path):
    """Workers behind: every firing waits past the next run time, so every claim skips one. One
    missed alert for the whole backlog, not a missed and a recovered alert at every run."""
    audit = audit_channel(tmp_path)
    every = made_at(sqlite_target, "every", "*/5 * * * *", "2026-11-21 08:30")
    assert services.run_schedule(every.pk, utc("2026-11-21 08:35:03")) is not None  # on time
    for late in ("08:45", "08:55", "09:05"):  # then each firing 5 min late: one run time skipped
        backup = services.run_schedule(every.pk, utc(f"2026-11-21 {late}:30"))
        assert backup is not None and backup.status == BackupStatus.SUCCESS
        assert services.watch(utc(f"2026-11-21 {late}:40"))["recovered"] == 0
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["missed"]
    assert Backup.objects.filter(schedule=every, status=BackupStatus.SKIPPED).count() == 3
    services.run_schedule(every.pk, utc("2026-11-21 09:10:03"))  # caught up
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["missed", "recovered"]


def shrink(path: Path, keep: int) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM people WHERE id > ?", (keep,))
        db.execute("DELETE FROM audit WHERE id > ?", (keep,))
    db.execute("VACUUM")
    db.close()


def test_it_flags_a_scheduled_backup_far_smaller_than_the_last(sqlite_target, sqlite_source, settings):
    settings.BACKUPSITE_SHRINK_PERCENT = 50
    fill_sqlite(sqlite_source, rows=3000)
    schedule = BackupSchedule.objects.create(name="often", target=sqlite_target, cron_expression="* * * * *")
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    first = services.run_schedule(schedule.pk, start)
    shrink(sqlite_source, keep=500)
    second = services.run_schedule(schedule.pk, start + timedelta(minutes=1))
    assert first is not None and second is not None
    assert first.raw_size and second.raw_size and second.raw_size * 2 < first.raw_size
    second.refresh_from_db()
    assert second.status == BackupStatus.SUCCESS  # the file is fine; a human judges the data
    step = second.steps.get(name="anomaly")
    assert step.status == "failed"
    assert (
        f"of the previous successful backup {first.pk}" in step.message
        and "below the 50% threshold" in step.message
    )
    assert "anomaly:" in second.notes
    # A normal-sized next backup is not flagged.
    third = services.run_schedule(schedule.pk, start + timedelta(minutes=2))
    assert third is not None and not third.steps.filter(name="anomaly").exists()
    assert not Backup.objects.get(pk=first.pk).steps.filter(name="anomaly").exists()


def test_it_runs_the_watch_on_its_own_with_backup_watch(sqlite_target, settings):
    import json
    from io import StringIO

    from django.core.management import call_command

    settings.BACKUPSITE_MISSED_GRACE_MINUTES = 1
    nightly(sqlite_target)
    out = StringIO()
    call_command("backup_watch", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "lost": 0,
        "lost_restores": 0,
        "lost_drills": 0,
        "alerts_resent": 0,
        "missed": 1,
        "recovered": 0,
    }


def test_it_sends_missed_recovered_and_anomaly_alerts_to_the_channels(
    sqlite_target, sqlite_source, settings, tmp_path
):
    from backups.models import Notification

    audit = audit_channel(tmp_path)
    settings.BACKUPSITE_MISSED_GRACE_MINUTES = 60
    schedule = nightly(sqlite_target)
    monitoring.check_missed(utc("2026-11-21 04:30"))
    success_at(schedule, utc("2026-11-21 06:00"))
    monitoring.check_missed(utc("2026-11-21 06:01"))
    # A real shrunken backup of the same target, by another schedule.
    fill_sqlite(sqlite_source, rows=3000)
    often = BackupSchedule.objects.create(name="often", target=sqlite_target, cron_expression="* * * * *")
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    services.run_schedule(often.pk, start)
    shrink(sqlite_source, keep=300)
    services.run_schedule(often.pk, start + timedelta(minutes=1))
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["missed", "recovered", "anomaly"]
    rows = Notification.objects.order_by("pk")
    assert [(n.event, n.status) for n in rows] == [
        ("missed", "sent"),
        ("recovered", "sent"),
        ("anomaly", "sent"),
    ]
    assert (
        "should have backed up app-db at 2026-11-21 03:00 UTC"
        in json.loads(audit.read_text().splitlines()[0])["text"]
    )


def test_it_sends_a_missed_alert_whose_finder_stopped_before_alerting_once(sqlite_target, tmp_path):
    """A worker SIGKILLed in its claim between opening the outage and writing the alert's rows
    (the real kill of that kind is tests/reliability/test_lost_alerts.py's, for backup_failed)."""
    audit = audit_channel(tmp_path)
    hourly = made_at(sqlite_target, "hourly", "0 * * * *", "2026-11-21 08:30")
    assert monitoring._open_episode(hourly, utc("2026-11-21 10:00"))  # ... and the process died
    found = BackupSchedule.objects.get(pk=hourly.pk).missed_alert_due
    assert found is not None
    assert monitoring.check_missed(found + timedelta(seconds=5))["missed"] == 0  # may be on its way
    assert not audit.exists()
    later = found + timedelta(minutes=1)
    assert monitoring.check_missed(later)["missed"] == 1
    (alert,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert alert["event"] == "missed" and "missed its run time 2026-11-21 10:00 UTC" in alert["text"]
    assert "stopped before alerting" in alert["fields"]["sent late"]
    assert monitoring.check_missed(later + timedelta(minutes=1))["missed"] == 0  # once
    assert BackupSchedule.objects.get(pk=hourly.pk).missed_alert_due is None
