"""The dashboard (the admin index), a target's health page and the progress JSON, on real
backups of real SQLite targets; the status rules on timelines, in several time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backups import services
from backups.health.status import FAILING, MISSED, NEVER_RUN, OK, PAUSED, RUNNING, Facts, target_status
from backups.humanize import human_bytes, human_duration, relative_time
from backups.models import Backup, BackupCopy, BackupStatus, Storage, Target
from schedules.models import BackupSchedule

pytestmark = pytest.mark.catalog

NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


def facts(**changes: object) -> Facts:
    base: dict[str, object] = {
        "is_active": True,
        "running": False,
        "last_success_at": NOW - timedelta(hours=3),
        "last_finished_status": "success",
    }
    return Facts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, OK),
        ({"is_active": False, "running": True}, PAUSED),
        ({"schedules": 2, "active_schedules": 0}, PAUSED),
        ({"schedules": 2, "active_schedules": 1}, OK),
        ({"running": True, "last_finished_status": "failed"}, RUNNING),
        ({"last_finished_status": "failed"}, FAILING),
        ({"last_finished_status": "corrupt"}, FAILING),
        ({"last_finished_status": "failed", "missed_since": NOW - timedelta(hours=1)}, FAILING),
        ({"missed_since": NOW - timedelta(hours=1)}, MISSED),
        ({"missed_since": NOW - timedelta(hours=5)}, OK),  # a success since the missed slot
        ({"last_success_at": None, "last_finished_status": None}, NEVER_RUN),
        ({"last_success_at": None, "last_finished_status": None, "missed_since": NOW}, MISSED),
        ({"last_success_at": None, "last_finished_status": "failed"}, FAILING),
    ],
)
def test_it_picks_the_badge_by_the_rules(changes, status):
    assert target_status(facts(**changes)) == status


def test_it_compares_missed_slots_and_successes_across_time_zones():
    berlin = ZoneInfo("Europe/Berlin")
    # 03:00 in Berlin (summer time) is 01:00 UTC: a success at 01:30 UTC came after the missed slot.
    slot = datetime(2026, 6, 1, 3, 0, tzinfo=berlin)
    assert (
        target_status(facts(missed_since=slot, last_success_at=datetime(2026, 6, 1, 1, 30, tzinfo=UTC))) == OK
    )
    assert (
        target_status(facts(missed_since=slot, last_success_at=datetime(2026, 6, 1, 0, 30, tzinfo=UTC)))
        == MISSED
    )


def test_it_writes_sizes_durations_and_times_for_people():
    assert human_bytes(14816) == "14.5 KiB"
    assert human_duration(0.02269) == "0.02 s"
    assert human_duration(4.25) == "4.2 s"
    assert human_duration(72) == "1 min 12 s"
    assert human_duration(7500) == "2 h 5 min"
    assert relative_time(NOW - timedelta(hours=3), NOW) == "3 h ago"
    assert relative_time(NOW + timedelta(minutes=42, seconds=10), NOW) == "in 42 min"
    assert relative_time(None, NOW) == "never"


def add_backup(target: Target, status: str, started: datetime, **fields: object) -> Backup:
    return Backup.objects.create(
        target=target, backup_name=f"{target.name}-{status}", status=status, started_at=started, **fields
    )


def test_it_shows_every_target_with_its_badge_and_facts(
    admin_client, sqlite_target, files_target, sqlite_source
):
    assert services.run_backup(sqlite_target).status == BackupStatus.SUCCESS
    sqlite_source.unlink()
    failed = services.run_backup(sqlite_target)
    assert failed.status == BackupStatus.FAILED
    quiet = Target.objects.create(name="quiet", engine="sqlite", database="/nowhere.sqlite3", is_active=False)

    page = admin_client.get("/admin/").content.decode()

    assert f'data-target="{sqlite_target.pk}" data-status="FAILING"' in page
    assert f'data-target="{files_target.pk}" data-status="NEVER RUN"' in page
    assert f'data-target="{quiet.pk}" data-status="PAUSED"' in page
    assert "50%" in page  # one success, one failure in 30 days
    assert 'class="strip"' in page and '<i class="success"' in page and '<i class="failed"' in page
    assert "just now</span>" in page and 'title="20' in page  # relative times, the absolute on hover
    assert failed.error_message.splitlines()[0][:60] in page
    assert "<progress" not in page  # nothing runs


def test_it_counts_totals_per_storage(admin_client, sqlite_target):
    backup = services.run_backup(sqlite_target)
    page = admin_client.get("/admin/").content.decode()
    assert f"stored in {Storage.objects.get().name}" in page
    assert human_bytes(backup.file_size) in page


def test_it_keeps_the_query_count_flat_as_targets_and_backups_grow(admin_client, local_storage):
    def build(count: int) -> None:
        for index in range(count):
            target = Target.objects.create(name=f"t{count}-{index}", engine="sqlite", database=f"/d{index}")
            for age in range(count):
                add_backup(
                    target,
                    BackupStatus.SUCCESS if age % 3 else BackupStatus.FAILED,
                    NOW - timedelta(days=age),
                )

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/").status_code == 200
        return len(captured)

    build(2)
    small = queries()
    build(12)
    assert queries() == small


def test_it_shows_a_running_backup_with_rate_and_eta(admin_client, sqlite_target):
    now = timezone.now()
    add_backup(sqlite_target, BackupStatus.SUCCESS, now - timedelta(days=1), raw_size=1000 * 1024 * 1024)
    running = add_backup(
        sqlite_target, BackupStatus.RUNNING, now - timedelta(seconds=10), progress=250 * 1024 * 1024
    )

    data = admin_client.get("/backups/progress.json").json()

    [item] = data["running"]
    assert item["key"] == f"backup-{running.pk}" and item["target_id"] == sqlite_target.pk
    assert item["percent"] == pytest.approx(25, abs=1)
    assert 20 < item["eta_seconds"] < 40
    assert "250.0 MiB of about 1000.0 MiB" in item["text"] and "left" in item["text"]
    page = admin_client.get("/admin/").content.decode()
    assert 'data-status="RUNNING"' in page and "<progress" in page


def test_it_draws_a_targets_history_as_svg(admin_client, sqlite_target):
    for _ in range(2):
        services.run_backup(sqlite_target)
    page = admin_client.get(f"/backups/targets/{sqlite_target.pk}/health/").content.decode()
    assert page.count('<svg class="history-chart"') == 2
    assert page.count("<rect") == 4 and "Stored size, last 2 runs" in page


def test_it_shows_the_next_run_and_a_missed_schedule(admin_client, sqlite_target):
    services.run_backup(sqlite_target)
    BackupSchedule.objects.create(
        name="nightly",
        target=sqlite_target,
        cron_expression="0 3 * * *",
        next_run_at=timezone.now() + timedelta(minutes=42, seconds=30),
        missed_since=timezone.now() + timedelta(minutes=1),  # due after the last success
    )
    page = admin_client.get("/admin/").content.decode()
    assert "in 42 min" in page
    assert f'data-target="{sqlite_target.pk}" data-status="MISSED"' in page


def test_it_hides_celery_beat_from_staff_and_files_it_under_advanced_for_superusers(admin_client, client):
    assert "<h2>Advanced</h2>" in admin_client.get("/admin/").content.decode()
    staff = User.objects.create_user("ops", password="pw-123456789", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="django_celery_beat"))
    client.force_login(staff)
    page = client.get("/admin/").content.decode()
    assert "Advanced" not in page and "Crontabs" not in page


def test_it_sends_anonymous_users_to_the_login_page(client, sqlite_target):
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    assert client.get("/backups/progress.json")["Location"].startswith("/admin/login/")


def summary_of(board: services.Dashboard, target: Target) -> services.TargetSummary:
    return next(summary for summary in board.targets if summary.target.pk == target.pk)


def test_it_reads_each_targets_figures_from_its_newest_runs(db):
    now = timezone.now()
    target = Target.objects.create(name="busy", engine="sqlite", database="/busy")
    other = Target.objects.create(name="other", engine="sqlite", database="/other")
    old = add_backup(target, BackupStatus.SUCCESS, now - timedelta(days=40))
    old.verified_at = now - timedelta(hours=1)  # re-verified lately: the newest verification
    old.save()
    add_backup(target, BackupStatus.SUCCESS, now - timedelta(days=2))
    add_backup(target, BackupStatus.SUCCESS, now - timedelta(hours=3), verified_at=now - timedelta(hours=2))
    add_backup(
        target,
        BackupStatus.FAILED,
        now - timedelta(hours=1),
        completed_at=now - timedelta(minutes=59),
        error_message="pg_dump: connection refused\nmore detail",
    )
    add_backup(target, BackupStatus.SKIPPED, now - timedelta(minutes=30))  # not a finished run
    add_backup(other, BackupStatus.SUCCESS, now - timedelta(hours=5))

    board = services.dashboard(now)

    busy = summary_of(board, target)
    assert busy.last_success_at == now - timedelta(hours=3)
    assert busy.last_verified_at == now - timedelta(hours=1)
    assert busy.last_failure_at == now - timedelta(minutes=59)
    assert busy.last_failure_message == "pg_dump: connection refused"
    assert (busy.runs_30d, busy.successes_30d) == (3, 2)
    assert busy.status == FAILING  # the newest finished run failed; the skip after it is not one
    assert board.backups_24h == 2  # successes started in the last 24 h, every target


def test_it_draws_the_strip_from_the_last_20_runs_with_never_started_ones_oldest(db):
    now = timezone.now()
    short = Target.objects.create(name="short", engine="sqlite", database="/short")
    for hours, status in ((3, BackupStatus.SUCCESS), (2, BackupStatus.FAILED), (1, BackupStatus.SUCCESS)):
        add_backup(short, status, now - timedelta(hours=hours))
    # Skipped while another run held the target: never started, drawn before every started run.
    Backup.objects.create(target=short, backup_name="short-skipped", status=BackupStatus.SKIPPED)
    add_backup(short, BackupStatus.RUNNING, now)
    Backup.objects.create(target=short, backup_name="short-queued", status=BackupStatus.PENDING)
    long = Target.objects.create(name="long", engine="sqlite", database="/long")
    for hours in range(25, 0, -1):
        add_backup(
            long, BackupStatus.FAILED if hours == 20 else BackupStatus.SUCCESS, now - timedelta(hours=hours)
        )
    Backup.objects.create(target=long, backup_name="long-skipped", status=BackupStatus.SKIPPED)

    board = services.dashboard(now)

    assert summary_of(board, short).strip == ["skipped", "success", "failed", "success"]
    assert summary_of(board, long).strip == ["failed", *["success"] * 19]  # the 20 newest, oldest first


def test_it_sums_stored_copies_per_target_and_per_storage(db, local_storage):
    offsite = Storage.objects.create(name="offsite", kind="local", options={"path": "/srv/offsite"})
    first = Target.objects.create(name="first", engine="sqlite", database="/first")
    second = Target.objects.create(name="second", engine="sqlite", database="/second")
    now = timezone.now()

    def stored(target: Target, *copies: tuple[Storage, int, str], deleted: bool = False) -> None:
        backup = add_backup(target, BackupStatus.SUCCESS, now, deleted_at=now if deleted else None)
        for storage, size, status in copies:
            BackupCopy.objects.create(
                backup=backup, storage=storage, path=f"p/{backup.pk}", size=size, status=status
            )

    stored(first, (local_storage, 100, "stored"), (offsite, 100, "stored"))
    stored(first, (local_storage, 7, "failed"), (offsite, 10, "stored"))
    # Retention deletes every copy before it marks the backup deleted.
    stored(first, (local_storage, 1000, "deleted"), deleted=True)
    stored(second, (local_storage, 5, "stored"), (offsite, 6, "deleted"))

    board = services.dashboard(now)

    assert {summary.target.name: summary.stored_bytes for summary in board.targets} == {
        "first": 210,
        "second": 5,
    }
    assert board.stored_by_storage == [("local", 105), ("offsite", 110)]


def test_it_opens_a_targets_history_and_the_failures_at_a_constant_query_count(admin_client, local_storage):
    target = Target.objects.create(name="history", engine="sqlite", database="/history")
    now = timezone.now()
    urls = [
        f"/admin/backups/backup/?target__id__exact={target.pk}",
        "/admin/backups/backup/?status__exact=failed",
        "/admin/backups/backup/?" + urlencode({"created_at__gte": (now - timedelta(days=7)).isoformat()}),
    ]

    def build(count: int) -> None:
        for age in range(count):
            backup = add_backup(
                target, BackupStatus.FAILED if age % 2 else BackupStatus.SUCCESS, now - timedelta(hours=age)
            )
            BackupCopy.objects.create(
                backup=backup, storage=local_storage, path=f"p/{backup.pk}", status="stored"
            )

    def queries() -> list[int]:
        counts = []
        for url in urls:
            with CaptureQueriesContext(connection) as captured:
                response = admin_client.get(url)
            assert response.status_code == 200 and "?e=1" not in response.get("Location", "")
            counts.append(len(captured))
        return counts

    build(2)
    few = queries()
    build(9)
    assert queries() == few
    page = admin_client.get(urls[1]).content.decode()
    assert (
        page.count('<strong style="color:#c62828">Failed</strong>') == 5
    )  # 1 of the first 2, 4 of the next 9


def test_it_sums_stored_bytes_from_the_partial_index_of_stored_copies(db, local_storage):
    # SQLite uses a partial index only when the query's own text implies its condition: the
    # status must be written into the SQL, not bound (240 ms instead of 16 ms on a million copies).
    target = Target.objects.create(name="indexed", engine="sqlite", database="/indexed")
    backup = add_backup(target, BackupStatus.SUCCESS, timezone.now())
    BackupCopy.objects.create(backup=backup, storage=local_storage, path="p", size=3, status="stored")
    with CaptureQueriesContext(connection) as captured:
        services.dashboard()
    [sql] = [query["sql"] for query in captured.captured_queries if "SUM(" in query["sql"]]
    assert "= 'stored'" in sql
    if connection.vendor == "postgresql":
        # PostgreSQL matches the predicate however the status is sent; ask whether it may use the
        # index at all (a table this small is otherwise scanned: the planner's cheaper choice).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # until the test's transaction ends
            cursor.execute(f"EXPLAIN {sql}")
            plan = " ".join(str(row) for row in cursor.fetchall())
        assert "backupcopy_stored_idx" in plan, plan
        return
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "USING COVERING INDEX backupcopy_stored_idx" in plan or "USING INDEX backupcopy_stored_idx" in plan
