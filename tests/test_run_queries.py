"""The catalog work of one scheduled run stays small and fixed: a bound on its queries (a
regression guard without timing: every query is a round trip and every write a commit, for each
of thousands of runs due in the same minute), and the row a success saves holds everything the
run set, though only the run's own columns are written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backups.models import Backup, BackupStatus, Notifier, Target
from schedules import services
from schedules.models import BackupSchedule

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

# One scheduled SQLite run into one local storage, no notifier, counting statements but not the
# transactions' own (BEGIN, SAVEPOINT): the firing (2), the slot (1), the row and its claim (2),
# five steps (2 each) and compression (recorded done, 1), the storages (1), the copy row (4
# writes), the run's row (2), notifications (2), shrinkage (1), retention (2). It was 35 before
# the claim stopped re-reading the row and then the target, and the run stopped looking its
# schedule up twice more to announce its outcome; 31 before a short dump stopped writing its
# progress, compression was recorded in one write and the manifest took the schedule's name
# from the run.
MAX_QUERIES = 28


def _statements(queries: CaptureQueriesContext) -> list[str]:
    transactions = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN")
    return [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(transactions)]


def _schedule(target: Target) -> BackupSchedule:
    schedule = BackupSchedule.objects.create(name="nightly", target=target, cron_expression="0 3 * * *")
    services.sync_periodic_task(schedule)
    return schedule


def _night(days: int) -> datetime:
    return datetime.now(UTC).replace(hour=3, minute=0, second=5, microsecond=0) + timedelta(days=days)


def test_it_runs_a_scheduled_backup_in_a_bounded_number_of_queries(sqlite_target: Target) -> None:
    schedule = _schedule(sqlite_target)
    assert services.run_schedule(schedule.pk, _night(1)) is not None  # the first run: nothing to compare
    with CaptureQueriesContext(connection) as queries:
        backup = services.run_schedule(schedule.pk, _night(2))
    assert backup is not None and backup.status == BackupStatus.SUCCESS, backup and backup.error_message
    statements = _statements(queries)
    assert len(statements) <= MAX_QUERIES, "\n".join(sql[:150] for sql in statements)
    schedule_reads = [sql for sql in statements if 'FROM "backup_schedule"' in sql]
    assert len(schedule_reads) <= 2  # the firing's and retention's; not the manifest's or notify's


def test_it_adds_only_the_notifiers_query_when_a_notifier_hears_successes(
    sqlite_target: Target, tmp_path
) -> None:
    audit = tmp_path / "audit.log"
    Notifier.objects.create(
        name="audit", kind="audit", options={"path": str(audit)}, events=["backup_succeeded"], is_default=True
    )
    schedule = _schedule(sqlite_target)
    services.run_schedule(schedule.pk, _night(1))
    with CaptureQueriesContext(connection) as queries:
        backup = services.run_schedule(schedule.pk, _night(2))
    assert backup is not None and backup.status == BackupStatus.SUCCESS
    # The delivery row (insert, then its outcome) and its notify step.
    statements = _statements(queries)
    assert len(statements) <= MAX_QUERIES + 3, "\n".join(sql[:150] for sql in statements)
    assert backup.schedule_id == schedule.pk
    assert "nightly" in audit.read_text()  # the schedule's name reached the message without a lookup


def test_it_saves_everything_a_successful_run_set_on_its_row(sqlite_target: Target) -> None:
    schedule = _schedule(sqlite_target)
    backup = services.run_schedule(schedule.pk, _night(1))
    assert backup is not None and backup.status == BackupStatus.SUCCESS
    stored = Backup.objects.get(pk=backup.pk)
    for field in Backup._meta.concrete_fields:
        if field.name in ("heartbeat_at", "worker"):  # the claim's; the heartbeat thread may move it on
            continue
        assert getattr(stored, field.attname) == getattr(backup, field.attname), field.name
    assert stored.proof == "stored" and stored.checksum and stored.file_size and stored.completed_at


def test_it_names_the_schedule_in_the_manifest_without_looking_it_up(sqlite_target: Target) -> None:
    from backups.services import load_manifest

    schedule = _schedule(sqlite_target)
    backup = services.run_schedule(schedule.pk, _night(1))
    assert backup is not None and backup.status == BackupStatus.SUCCESS
    assert load_manifest(backup)["backup"]["schedule"] == "nightly"
    steps = list(backup.steps.order_by("pk").values_list("name", "status"))
    assert steps == [
        ("validate", "success"), ("dump", "success"), ("compress", "success"), ("upload", "success"),
        ("verify", "success"), ("manifest", "success"),
    ]  # fmt: skip


def test_a_step_whose_success_cannot_be_saved_is_failed_and_keeps_none_of_its_writes(
    sqlite_target: Target,
) -> None:
    from backups.runs.steps import record_step

    backup = Backup.objects.create(target=sqlite_target, backup_name="b")

    def also_save() -> None:
        Backup.objects.filter(pk=backup.pk).update(notes="saved with the step")
        raise RuntimeError("the catalog refused the write")

    with pytest.raises(RuntimeError), record_step(backup, "upload", also_save=also_save) as step:
        step.bytes = 10
    step.refresh_from_db()
    assert step.status == "failed" and "the catalog refused the write" in step.message
    assert Backup.objects.get(pk=backup.pk).notes == ""  # rolled back with the step's end
