"""Proof levels recorded where they are earned (stored at the run's end, verified by a re-read,
trial by the engine's trial restore, drilled by a sandbox restore whose counts match) and shown
on the backup page, in backup_list --json, on the dashboard and in /metrics."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backups import catalog, services
from backups.models import (
    Backup,
    BackupCopy,
    BackupStatus,
    BackupStep,
    Drill,
    DrillStatus,
    Proof,
    Storage,
    Target,
)
from tests.conftest import pg_target, unique_name
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.django_db


def test_it_records_stored_when_a_run_ends_success(sqlite_target: Target) -> None:
    backup = services.run_backup(sqlite_target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    backup.refresh_from_db()
    assert backup.proof == Proof.STORED
    assert backup.proof_at == backup.completed_at


def test_it_records_nothing_for_a_failed_run(local_storage: Storage, tmp_path: Path) -> None:
    target = Target.objects.create(name="gone", engine="sqlite", database=str(tmp_path / "missing.sqlite3"))
    target.storages.add(local_storage)
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    backup.refresh_from_db()
    assert backup.proof == "" and backup.proof_at is None


def test_it_raises_the_proof_to_verified_then_trial_and_never_lowers_it(sqlite_target: Target) -> None:
    backup = services.run_backup(sqlite_target)

    outcome = services.verify_backup(backup)
    assert outcome.ok and outcome.proof == Proof.VERIFIED
    backup.refresh_from_db()
    assert backup.proof == Proof.VERIFIED and backup.proof_at == backup.verified_at

    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok and outcome.proof == Proof.TRIAL, outcome.messages
    backup.refresh_from_db()
    assert backup.proof == Proof.TRIAL
    trial_at = backup.proof_at

    outcome = services.verify_backup(backup)  # a weaker proof later changes nothing
    assert outcome.ok
    backup.refresh_from_db()
    assert backup.proof == Proof.TRIAL and backup.proof_at == trial_at


def test_it_keeps_the_proof_of_a_backup_whose_verify_fails(sqlite_target: Target, storage_dir: Path) -> None:
    backup = services.run_backup(sqlite_target)
    services.verify_backup(backup)
    backup.refresh_from_db()
    proven_at = backup.proof_at
    with open(storage_dir / backup.file_path, "ab") as handle:
        handle.write(b"damage")

    outcome = services.verify_backup(backup, deep=True)
    assert not outcome.ok and outcome.proof is None
    backup.refresh_from_db()
    assert backup.status == BackupStatus.CORRUPT
    assert backup.proof == Proof.VERIFIED and backup.proof_at == proven_at


def test_it_gives_reindexed_successes_stored(sqlite_target: Target, local_storage: Storage) -> None:
    backup = services.run_backup(sqlite_target)
    BackupStep.objects.all().delete()
    BackupCopy.objects.all().delete()
    Backup.objects.all().delete()

    catalog.reindex_storage(local_storage)
    rebuilt = Backup.objects.get(pk=backup.pk)
    assert rebuilt.status == BackupStatus.SUCCESS
    assert rebuilt.proof == Proof.STORED and rebuilt.proof_at == rebuilt.completed_at


def test_it_records_drilled_when_a_sandbox_restore_matches_the_counts(
    pg_server: PostgresServer, local_storage: Storage
) -> None:
    database = pg_server.create_database(unique_name("proven"))
    pg_server.execute(database, "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 7)")
    sandbox = pg_target(pg_server, unique_name("sandbox").replace("_", "-"), "postgres")
    source = pg_target(
        pg_server, unique_name("src").replace("_", "-"), database, local_storage, sandbox=sandbox
    )
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message

    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok and outcome.proof == Proof.DRILLED, outcome.messages
    backup.refresh_from_db()
    assert backup.proof == Proof.DRILLED

    # A sandbox restore whose counts disagree fails, and leaves the proof it had.
    Backup.objects.filter(pk=backup.pk).update(
        engine_info={**backup.engine_info, "row_counts": {"public.items": 6}}
    )
    backup.refresh_from_db()
    assert not services.verify_backup(backup, deep=True).ok
    backup.refresh_from_db()
    assert backup.status == BackupStatus.CORRUPT and backup.proof == Proof.DRILLED
    pg_server.drop_database(database)


# -- shown ---------------------------------------------------------------------------------------


def proven(target: Target, level: Proof, days_ago: float) -> Backup:
    backup = services.run_backup(target)
    Backup.objects.filter(pk=backup.pk).update(
        proof=level, proof_at=timezone.now() - timedelta(days=days_ago)
    )
    backup.refresh_from_db()
    return backup


def test_it_lists_the_proof_in_backup_list_json(sqlite_target: Target) -> None:
    backup = proven(sqlite_target, Proof.DRILLED, 2)
    out = StringIO()
    call_command("backup_list", "--json", stdout=out)
    rows = json.loads(out.getvalue())
    row = next(r for r in (rows if isinstance(rows, list) else rows["backups"]) if r["id"] == backup.pk)
    assert row["proof"] == "drilled"
    assert backup.proof_at is not None and row["proof_at"] == backup.proof_at.isoformat()

    out = StringIO()
    call_command("backup_list", stdout=out)
    assert "drilled" in out.getvalue()


def drilled_in(
    target: Target, backup: Backup, *, passed: bool, restore_seconds: float, hours_ago: float
) -> Drill:
    started = timezone.now() - timedelta(hours=hours_ago)
    return Drill.objects.create(
        target=target,
        backup=backup,
        status=DrillStatus.PASSED if passed else DrillStatus.FAILED,
        started_at=started,
        finished_at=started + timedelta(seconds=restore_seconds + 1),
        restore_seconds=restore_seconds,
    )


def test_it_shows_the_proof_on_the_backup_page(admin_client, sqlite_target: Target) -> None:
    backup = proven(sqlite_target, Proof.DRILLED, 2)
    page = admin_client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert "drilled, <time" in page and ">2 d ago</time>" in page
    assert "Drilled (restored into a sandbox and checked)" in page


def test_it_shows_proof_restore_time_and_worst_data_age_on_the_dashboard(
    admin_client, sqlite_target: Target
) -> None:
    backup = proven(sqlite_target, Proof.DRILLED, 2)
    drilled_in(sqlite_target, backup, passed=True, restore_seconds=4.2, hours_ago=48)
    older = timezone.now() - timedelta(days=5)
    Backup.objects.filter(pk=services.run_backup(sqlite_target).pk).update(started_at=older)

    page = admin_client.get("/admin/").content.decode()
    assert ">Proven</th>" in page and "drilled, <span" in page and "2 d ago</span>" in page
    assert "restore took 4.2 s" in page
    assert "worst data age, 30 d: 5 d" in page

    summary = services.dashboard(target_ids=[sqlite_target.pk]).targets[0]
    assert summary.proof == Proof.DRILLED and summary.last_drill_restore_seconds == 4.2
    assert summary.worst_data_age_seconds is not None
    assert 5 * 86400 - 120 < summary.worst_data_age_seconds < 5 * 86400 + 120  # the gap before the newest
    health = admin_client.get(reverse("backups:target-health", args=[sqlite_target.pk]))
    assert health.status_code == 200
    text = health.content.decode()
    assert "Last proven restorable" in text and "restore took 4.2 s" in text and "5 d" in text


def test_it_keeps_the_dashboards_query_count_flat_with_proofs_and_drills(admin_client, local_storage) -> None:
    def build(count: int) -> None:
        for index in range(count):
            target = Target.objects.create(name=f"p{count}-{index}", engine="sqlite", database=f"/d{index}")
            for age in range(count):
                backup = Backup.objects.create(
                    target=target,
                    status=BackupStatus.SUCCESS,
                    started_at=timezone.now() - timedelta(days=age),
                    proof=Proof.VERIFIED,
                    proof_at=timezone.now(),
                )
                drilled_in(target, backup, passed=bool(age % 2), restore_seconds=age, hours_ago=age)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/").status_code == 200
        return len(captured)

    build(2)
    small = queries()
    build(9)
    assert queries() == small


def test_it_exports_proofs_and_drills_in_metrics(client, settings, sqlite_target: Target) -> None:
    settings.BACKUPSITE_METRICS_TOKEN = "proof-token-1"
    trial = proven(sqlite_target, Proof.TRIAL, 1)
    drilled_in(sqlite_target, trial, passed=True, restore_seconds=3.5, hours_ago=30)
    drilled_in(sqlite_target, trial, passed=False, restore_seconds=7.0, hours_ago=2)
    newest = Drill.objects.order_by("-started_at").first()
    assert newest is not None and newest.finished_at is not None

    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer proof-token-1")
    assert response.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    name = sqlite_target.name
    for level in ("stored", "verified", "trial"):
        key = ("backupsite_last_proven_timestamp_seconds", (("level", level), ("target", name)))
        assert trial.proof_at is not None and samples[key] == pytest.approx(trial.proof_at.timestamp())
    assert (
        "backupsite_last_proven_timestamp_seconds",
        (("level", "drilled"), ("target", name)),
    ) not in samples
    target = (("target", name),)
    assert samples[("backupsite_last_drill_timestamp_seconds", target)] == pytest.approx(
        newest.finished_at.timestamp()
    )
    assert samples[("backupsite_last_drill_restore_seconds", target)] == 7.0
    assert samples[("backupsite_last_drill_passed", target)] == 0
