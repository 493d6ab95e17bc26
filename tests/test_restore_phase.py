"""A restore's phase: where its engine says it is (pg_restore's tables loaded), written to the
RestoreLog row with the bytes at most once an interval and only from the restoring thread, and
shown on the restore page, the dashboard's running work and ``backup_restore``'s progress line.
The real PostgreSQL restores that set it are in ``test_pg_restore_jobs.py``."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from backups import services
from backups.cli import ProgressLine
from backups.models import Target
from restores.management.commands.backup_restore import PhasedLine
from restores.models import PHASE_LENGTH, RestoreLog, RestoreStatus
from restores.progress import RestoreProgress
from restores.services import running_restores

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

INTERVAL = 0.3


@pytest.fixture
def log(sqlite_target: Target, settings: Any) -> RestoreLog:
    settings.BACKUPSITE_PROGRESS_INTERVAL = INTERVAL
    backup = services.run_backup(sqlite_target)
    return RestoreLog.objects.create(backup=backup, destination=sqlite_target, status=RestoreStatus.RUNNING)


def stored(log: RestoreLog) -> tuple[int, str]:
    row = RestoreLog.objects.get(pk=log.pk)
    return row.progress, row.phase


def test_it_writes_the_phase_at_most_once_an_interval_and_only_when_it_changed(log: RestoreLog) -> None:
    shown: list[str] = []
    tracker = RestoreProgress(log.pk, show_phase=shown.append)
    tracker.phase("pg_restore: data for 1 of 3 tables loaded")
    tracker.phase("pg_restore: data for 1 of 3 tables loaded")
    assert shown == ["pg_restore: data for 1 of 3 tables loaded"]  # each change shown once
    assert stored(log) == (0, "")  # within the first interval: not written
    time.sleep(INTERVAL + 0.05)
    tracker.phase("pg_restore: data for 2 of 3 tables loaded")
    assert stored(log) == (0, "pg_restore: data for 2 of 3 tables loaded")
    time.sleep(INTERVAL + 0.05)
    with CaptureQueriesContext(connection) as queries:
        tracker.phase("pg_restore: data for 2 of 3 tables loaded")  # the engine's next tick
    assert len(queries) == 0  # nothing changed: nothing written
    with tracker.reading(10) as report:
        report(10)  # bytes and phase are written together
    assert stored(log) == (10, "pg_restore: data for 2 of 3 tables loaded")


def test_it_never_writes_the_row_from_another_thread(log: RestoreLog) -> None:
    tracker = RestoreProgress(log.pk)
    time.sleep(INTERVAL + 0.05)
    elsewhere = threading.Thread(target=tracker.phase, args=("from a thread of the engine",))
    elsewhere.start()
    elsewhere.join()
    assert stored(log) == (0, "")
    assert tracker.phase_text == "from a thread of the engine"
    tracker.phase("from a thread of the engine")  # the restoring thread's next hand-on writes it
    assert stored(log) == (0, "from a thread of the engine")


def test_it_cuts_a_long_phase_to_the_field(log: RestoreLog) -> None:
    tracker = RestoreProgress(log.pk)
    time.sleep(INTERVAL + 0.05)
    tracker.phase("x" * 500)
    assert stored(log) == (0, "x" * PHASE_LENGTH)


def test_it_shows_the_phase_on_the_restore_page_and_the_dashboard(
    log: RestoreLog, admin_client: Client
) -> None:
    RestoreLog.objects.filter(pk=log.pk).update(
        phase="pg_restore --jobs=4: data for 37 of 200 tables loaded",
        started_at=log.created_at,
    )
    page = admin_client.get(reverse("admin:restores_restorelog_change", args=[log.pk]))
    html = page.content.decode()
    assert "<strong>Now:</strong> pg_restore --jobs=4: data for 37 of 200 tables loaded" in html
    [work] = running_restores()
    assert work.label == (
        f"restore of backup {log.backup_id} into app-db (pg_restore --jobs=4: data for 37 of 200 tables loaded)"
    )
    RestoreLog.objects.filter(pk=log.pk).update(status=RestoreStatus.SUCCESS)
    html = admin_client.get(reverse("admin:restores_restorelog_change", args=[log.pk])).content.decode()
    assert "<strong>Last step:</strong> pg_restore --jobs=4" in html


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_it_puts_the_phase_on_the_command_progress_line() -> None:
    out = Terminal()
    line = PhasedLine(ProgressLine(out, "restore 7", 2048))
    line(2048)
    line.phase("pg_restore: data for 37 of 200 tables loaded")
    last = out.getvalue().split("\r\x1b[2K")[-1]
    assert last.startswith("restore 7 (pg_restore: data for 37 of 200 tables loaded): 2.0 KiB, ")
    line.phase("pg_restore: data for 38 of 200 tables loaded")
    assert out.getvalue().split("\r\x1b[2K")[-1].startswith("restore 7 (pg_restore: data for 38 of")
