"""/metrics: who may read them (bearer token, token file, address allow-list, nobody else), the
values after real backup runs, and a query count that does not grow with the catalog."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backups import services
from backups.access.proxies import parse_networks
from backups.models import Backup, BackupCopy, BackupStatus, CopyStatus, Storage, Target
from schedules import services as schedule_services
from schedules.models import BackupSchedule

TOKEN = "metrics-token-5f0c2a9e"


def _scrape(client, **extra) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def token(settings) -> str:
    settings.BACKUPSITE_METRICS_TOKEN = TOKEN
    return TOKEN


# -- access ------------------------------------------------------------------------------------


def test_it_refuses_everyone_when_neither_a_token_nor_addresses_are_set(client, settings, db):
    settings.BACKUPSITE_METRICS_TOKEN = ""
    settings.BACKUPSITE_METRICS_ALLOW = ()
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403
    text = response.content.decode()
    assert "BACKUPSITE_METRICS_TOKEN" in text and "BACKUPSITE_METRICS_ALLOW" in text


def test_it_lets_in_the_bearer_of_the_token_only(client, token, db):
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200
    for wrong in ("", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", TOKEN):
        response = client.get("/metrics", HTTP_AUTHORIZATION=wrong)
        assert response.status_code == 403, wrong
        assert "Authorization: Bearer" in response.content.decode()
        assert TOKEN not in response.content.decode()


def test_it_lets_in_the_listed_addresses_behind_trusted_proxies(client, settings, db):
    settings.BACKUPSITE_METRICS_TOKEN = ""
    settings.BACKUPSITE_METRICS_ALLOW = parse_networks("10.0.0.0/8, ::1")
    settings.BACKUPSITE_TRUSTED_PROXIES = parse_networks("192.0.2.1")
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="198.51.100.7")
    assert refused.status_code == 403 and "BACKUPSITE_METRICS_ALLOW" in refused.content.decode()
    # Through the trusted proxy, the forwarded client counts; anyone else's header is ignored.
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 200
    assert (
        client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code
        == 403
    )
    assert (
        client.get("/metrics", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 403
    )


def test_it_reads_the_token_from_a_file_and_the_allow_list_at_start(manage, tmp_path: Path):
    token_file = tmp_path / "metrics-token"
    token_file.write_text("from-a-file-4d1b7c\n")
    code = (
        "from django.test import Client; c = Client(); "
        "print(c.get('/metrics', HTTP_AUTHORIZATION='Bearer from-a-file-4d1b7c').status_code, "
        "c.get('/metrics', HTTP_AUTHORIZATION='Bearer other').status_code)"
    )
    result = manage("shell", "-c", code, extra_env={"BACKUPSITE_METRICS_TOKEN_FILE": str(token_file)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["200", "403"]

    missing = manage("check", extra_env={"BACKUPSITE_METRICS_TOKEN_FILE": str(tmp_path / "nowhere")})
    assert missing.returncode != 0 and "BACKUPSITE_METRICS_TOKEN_FILE: cannot read" in missing.stderr
    bad = manage("check", extra_env={"BACKUPSITE_METRICS_ALLOW": "10.0.0.0/8, prometheus"})
    assert bad.returncode != 0
    assert "BACKUPSITE_METRICS_ALLOW: 'prometheus' is not an address or a network" in bad.stderr


# -- values ------------------------------------------------------------------------------------


def _shrink(path: Path) -> None:
    with sqlite3.connect(path) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            db.execute(f'DELETE FROM "{table}"')
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")


@pytest.mark.catalog
def test_it_exports_each_targets_facts_after_real_runs(
    client, token, sqlite_target, sqlite_source, local_storage, tmp_path
):
    hourly = BackupSchedule.objects.create(name="hourly", target=sqlite_target, cron_expression="0 * * * *")
    now = timezone.now()
    first = schedule_services.run_schedule(hourly.pk, now)
    second = schedule_services.run_schedule(hourly.pk, now + timedelta(hours=1))
    assert first is not None and second is not None and second.status == BackupStatus.SUCCESS
    assert services.verify_backup(first).ok
    _shrink(sqlite_source)
    shrunken = schedule_services.run_schedule(hourly.pk, now + timedelta(hours=2))
    assert shrunken is not None and shrunken.status == BackupStatus.SUCCESS

    broken = Target.objects.create(
        name="gone-db", engine="sqlite", database=str(tmp_path / "missing.sqlite3")
    )
    broken.storages.add(local_storage)
    failed = services.run_backup(broken)
    assert failed.status == BackupStatus.FAILED
    nightly = BackupSchedule.objects.create(name="nightly", target=broken, cron_expression="0 3 * * *")
    BackupSchedule.objects.filter(pk=nightly.pk).update(missed_since=now - timedelta(hours=5))
    Backup.objects.create(target=broken, backup_name="in-flight", status=BackupStatus.RUNNING, started_at=now)
    Target.objects.create(name="idle-db", engine="sqlite", database="x", is_active=False)

    for row in (first, second, shrunken, failed):
        row.refresh_from_db()
    samples = _scrape(client)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    app, gone, idle = {"target": "app-db"}, {"target": "gone-db"}, {"target": "idle-db"}
    assert shrunken.completed_at is not None and first.verified_at is not None
    assert value("backupsite_last_success_timestamp_seconds", **app) == pytest.approx(
        shrunken.completed_at.timestamp()
    )
    assert value("backupsite_backup_size_bytes", **app) == shrunken.file_size
    assert value("backupsite_last_backup_shrunken", **app) == 1
    assert value("backupsite_last_verified_timestamp_seconds", **app) == pytest.approx(
        first.verified_at.timestamp()
    )
    assert value("backupsite_backup_duration_seconds", **app) == pytest.approx(shrunken.duration_seconds)
    assert value("backupsite_backups_total", target="app-db", status="success") == 3
    assert value("backupsite_backups_total", target="app-db", status="failed") == 0
    assert value("backupsite_running_backups", **app) == 0
    assert value("backupsite_schedule_missed", target="app-db", schedule="hourly") == 0
    assert value("backupsite_target_active", **app) == 1

    assert failed.completed_at is not None
    assert value("backupsite_last_success_timestamp_seconds", **gone) is None  # never succeeded
    assert value("backupsite_last_failure_timestamp_seconds", **gone) == pytest.approx(
        failed.completed_at.timestamp()
    )
    assert value("backupsite_backup_duration_seconds", **gone) == pytest.approx(failed.duration_seconds)
    assert value("backupsite_backups_total", target="gone-db", status="failed") == 1
    assert value("backupsite_running_backups", **gone) == 1
    assert value("backupsite_schedule_missed", target="gone-db", schedule="nightly") == 1
    assert value("backupsite_last_backup_shrunken", **gone) == 0
    assert value("backupsite_target_active", **idle) == 0

    copies = BackupCopy.objects.filter(storage=local_storage, status=CopyStatus.STORED)
    stored = sum(size or 0 for size in copies.values_list("size", flat=True))
    assert stored > 0
    assert value("backupsite_storage_used_bytes", storage="local") == stored


def _catalog(targets: int, runs_each: int) -> None:
    """``targets`` targets with ``runs_each`` finished runs, a stored copy each, and a schedule."""
    storage = Storage.objects.first() or Storage.objects.create(
        name="s", kind="local", options={"path": "/tmp/x"}
    )
    now = timezone.now()
    start = Target.objects.count()
    created = Target.objects.bulk_create(
        Target(name=f"t{start + n:04}", engine="sqlite", database="/nonexistent") for n in range(targets)
    )
    rows = [
        Backup(
            target=target,
            backup_name=f"{target.name}-{n}",
            status=(BackupStatus.SUCCESS, BackupStatus.FAILED)[n % 2],
            started_at=now - timedelta(hours=n),
            completed_at=now - timedelta(hours=n) + timedelta(seconds=5),
            duration_seconds=5,
            file_size=1000,
            verified_at=now if n == 0 else None,
        )
        for target in created
        for n in range(runs_each)
    ]
    backups = Backup.objects.bulk_create(rows)
    BackupCopy.objects.bulk_create(
        BackupCopy(backup=b, target=b.target, storage=storage, path=b.backup_name, size=1000, status="stored")
        for b in backups
    )
    BackupSchedule.objects.bulk_create(
        BackupSchedule(name=f"{target.name}-daily", target=target, cron_expression="0 3 * * *")
        for target in created
    )


def _queries_of_a_scrape(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        _scrape(client)
    return len(queries)


@pytest.mark.catalog
def test_it_scrapes_in_a_fixed_number_of_queries(client, token, db):
    _catalog(targets=3, runs_each=4)
    small = _queries_of_a_scrape(client)
    _catalog(targets=37, runs_each=6)
    assert Target.objects.count() == 40
    assert _queries_of_a_scrape(client) == small
    assert small <= 6
