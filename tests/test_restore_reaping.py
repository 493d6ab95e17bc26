"""Lost restores: a restore whose worker died on this host (process gone) or anywhere (heartbeat
silent) is ended FAILED "worker lost while restoring" by the watch task (registered with the core
by the restores app) or by the next restore into its destination, announced once; a queued
restore or one whose worker is alive is left alone. (A real SIGKILL mid-restore:
tests/reliability/test_kills.py.)"""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from backups import services as backup_services
from backups.models import AuditEvent, Backup, BackupStatus, Notification, Notifier, Target
from backups.services import Heartbeat
from restores import services
from restores.models import RestoreLog, RestoreStatus
from schedules.tasks import watch

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


@pytest.fixture
def alerts(tmp_path: Path) -> Notifier:
    return Notifier.objects.create(
        name="audit", kind="audit", options={"path": str(tmp_path / "alerts.jsonl")}, is_default=True
    )


def stored_backup(target: Target) -> Backup:
    return Backup.objects.create(target=target, backup_name="b", status=BackupStatus.SUCCESS)


def restoring(backup: Backup, into: Target, worker: str, beat_age: float | None) -> RestoreLog:
    now = timezone.now()
    return RestoreLog.objects.create(
        backup=backup,
        destination=into,
        status=RestoreStatus.RUNNING,
        started_at=None if beat_age is None else now - timedelta(hours=1),
        heartbeat_at=None if beat_age is None else now - timedelta(seconds=beat_age),
        worker=worker,
        confirmed_by="web:alice",
    )


def dead_worker() -> str:
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def test_it_reaps_a_silent_heartbeat_on_another_host_once(sqlite_target, copy_target, alerts, settings):
    settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS = 120
    lost = restoring(stored_backup(sqlite_target), copy_target, "elsewhere:4242", beat_age=300)
    watch()
    watch()
    lost.refresh_from_db()
    assert lost.status == RestoreStatus.FAILED and lost.completed_at is not None
    assert lost.error_message.startswith(
        "worker lost while restoring: no heartbeat from elsewhere:4242 since "
    ) and lost.error_message.endswith("remove a temporary file left beside it")
    assert "; the destination may be partly restored; SQLite writes " in lost.error_message
    (alert,) = Notification.objects.all()
    assert (alert.event, alert.target_id) == ("restore_finished", copy_target.pk)
    (event,) = AuditEvent.objects.filter(action="restore.result")
    assert (event.outcome, event.username, event.details["status"]) == ("failure", "web:alice", "failed")


def test_it_leaves_a_queued_restore_and_a_live_worker_elsewhere_alone(
    sqlite_target, copy_target, alerts, settings
):
    settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS = 120
    backup = stored_backup(sqlite_target)
    queued = restoring(backup, copy_target, "", beat_age=None)
    RestoreLog.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(days=1))
    alive = restoring(backup, copy_target, "elsewhere:4242", beat_age=10)
    assert backup_services.reap_lost_work() == 0
    assert set(RestoreLog.objects.values_list("status", flat=True)) == {RestoreStatus.RUNNING}
    assert not Notification.objects.exists()
    assert {queued.pk, alive.pk} == set(RestoreLog.objects.values_list("pk", flat=True))


def test_it_reaps_a_dead_process_on_this_host_at_once_naming_the_files_engines_guarantee(
    files_target, alerts
):
    lost = restoring(stored_backup(files_target), files_target, dead_worker(), beat_age=1)
    assert services.reap_lost_restores() == 1
    lost.refresh_from_db()
    assert lost.error_message == (
        f"worker lost while restoring: process {lost.worker} ended without finishing the restore; the "
        "destination may be partly restored; the files engine: it restores into a staging directory "
        "(.NAME.restore-*) beside each destination directory and renames it into place only once "
        "checked, so each directory is either as it was or wholly restored (the previous one then "
        "kept as NAME.before-restore-TIME); remove a staging directory left beside it"
    )


def test_it_reaps_a_lost_restore_into_the_destination_when_the_next_one_starts(
    sqlite_target, copy_target, alerts
):
    backup = backup_services.run_backup(sqlite_target)
    lost = restoring(backup, copy_target, dead_worker(), beat_age=1)
    log = services.restore_backup(backup, copy_target, initiated_by="cli:bob")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert (log.worker, log.heartbeat_at is not None) == (backup_services.this_worker(), True)
    lost.refresh_from_db()
    assert lost.status == RestoreStatus.FAILED and lost.error_message.startswith(
        "worker lost while restoring"
    )
    assert sorted(Notification.objects.values_list("event", flat=True)) == ["restore_finished"] * 2


@pytest.mark.django_db(transaction=True)
def test_it_advances_a_restores_heartbeat_while_open_and_stops_after(sqlite_target, copy_target):
    log = restoring(stored_backup(sqlite_target), copy_target, "here:1", beat_age=600)
    before = log.heartbeat_at
    with Heartbeat(RestoreLog.objects.filter(pk=log.pk, status="running"), "restore", interval=0.05):
        time.sleep(0.4)
    during = RestoreLog.objects.get(pk=log.pk).heartbeat_at
    assert before is not None and during is not None and during > before
    time.sleep(0.2)
    assert RestoreLog.objects.get(pk=log.pk).heartbeat_at == during


def test_it_announces_once_a_restore_whose_process_stopped_before_announcing_it(
    sqlite_target, copy_target, alerts, tmp_path
):
    """Killed between saving its end and its audit event and alert: the watch says it, late."""
    ended = restoring(stored_backup(sqlite_target), copy_target, dead_worker(), beat_age=1)
    RestoreLog.objects.filter(pk=ended.pk).update(
        status=RestoreStatus.SUCCESS, completed_at=timezone.now(), announce_pending=True
    )
    alive = restoring(stored_backup(sqlite_target), copy_target, backup_services.this_worker(), beat_age=1)
    RestoreLog.objects.filter(pk=alive.pk).update(
        status=RestoreStatus.FAILED, completed_at=timezone.now(), announce_pending=True
    )  # this process: it may still be announcing it
    watch()
    watch()
    (alert,) = Notification.objects.all()
    assert alert.event == "restore_finished" and alert.fields["status"] == "success"
    assert "the process that ran it stopped first" in alert.fields["sent late"]
    (event,) = AuditEvent.objects.filter(action="restore.result")
    assert (event.object_id, event.outcome) == (str(ended.pk), "success")
    assert not RestoreLog.objects.get(pk=ended.pk).announce_pending
    assert RestoreLog.objects.get(pk=alive.pk).announce_pending


def test_it_records_no_second_audit_event_when_only_the_alert_was_lost(sqlite_target, copy_target, alerts):
    ended = restoring(stored_backup(sqlite_target), copy_target, dead_worker(), beat_age=1)
    RestoreLog.objects.filter(pk=ended.pk).update(
        status=RestoreStatus.FAILED,
        completed_at=timezone.now(),
        announce_pending=True,
        error_message="disk full",
    )
    backup_services.record_audit("restore.result", obj=ended, outcome="failure", auth_method="system")
    watch()
    assert AuditEvent.objects.filter(action="restore.result").count() == 1
    (alert,) = Notification.objects.all()
    assert alert.fields["status"] == "failed" and "disk full" in alert.text
