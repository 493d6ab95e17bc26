"""Lost runs: a worker that died on this host (process gone) or anywhere (heartbeat silent) has
its RUNNING backup marked FAILED "worker lost" by the periodic watch, and only then."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import Backup, BackupStatus, BackupStep, StepStatus
from backups.runs.heartbeat import Heartbeat
from schedules import services

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def running(target, worker: str, beat_age: float) -> Backup:
    now = timezone.now()
    backup = Backup.objects.create(
        target=target,
        backup_name="lost",
        status=BackupStatus.RUNNING,
        started_at=now - timedelta(hours=1),
        heartbeat_at=now - timedelta(seconds=beat_age),
        worker=worker,
    )
    BackupStep.objects.create(backup=backup, name="dump", started_at=now)
    return backup


def test_it_reaps_a_silent_heartbeat_on_another_host(sqlite_target, settings):
    settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS = 120
    lost = running(sqlite_target, "elsewhere:4242", beat_age=300)
    assert services.watch()["lost"] == 1
    lost.refresh_from_db()
    assert lost.status == BackupStatus.FAILED
    assert lost.error_message.startswith("worker lost: no heartbeat from elsewhere:4242 since ")
    assert lost.completed_at is not None
    step = lost.steps.get()
    assert step.status == StepStatus.FAILED and step.message == lost.error_message
    assert services.watch()["lost"] == 0  # once


def test_it_leaves_a_live_heartbeat_elsewhere_alone(sqlite_target, settings):
    settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS = 120
    alive = running(sqlite_target, "elsewhere:4242", beat_age=10)
    assert services.watch()["lost"] == 0
    alive.refresh_from_db()
    assert alive.status == BackupStatus.RUNNING


def test_it_reaps_a_dead_process_on_this_host_at_once(sqlite_target):
    import socket
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    gone = running(sqlite_target, f"{socket.gethostname()}:{child.pid}", beat_age=1)
    assert services.watch()["lost"] == 1
    gone.refresh_from_db()
    assert gone.error_message == f"worker lost: process {gone.worker} ended without finishing the backup"


@pytest.mark.django_db(transaction=True)
def test_it_advances_the_heartbeat_while_open_and_stops_after(sqlite_target):
    backup = running(sqlite_target, "here:1", beat_age=600)
    before = Backup.objects.get(pk=backup.pk).heartbeat_at
    with Heartbeat(Backup.objects.filter(pk=backup.pk, status="running"), "backup", interval=0.05):
        time.sleep(0.4)
    during = Backup.objects.get(pk=backup.pk).heartbeat_at
    assert before is not None and during is not None and during > before
    time.sleep(0.2)
    assert Backup.objects.get(pk=backup.pk).heartbeat_at == during
