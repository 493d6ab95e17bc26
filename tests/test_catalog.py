"""The catalog rebuilt from storage (backup_reindex) and compared with it (backup_reconcile)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import catalog, services
from backups.models import Backup, BackupCopy, BackupStatus, BackupStep, CopyStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import sqlite_rows

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def lose_the_catalog() -> None:
    """What a lost application database looks like: storages configured again, nothing else."""
    BackupStep.objects.all().delete()
    BackupCopy.objects.all().delete()
    Backup.objects.all().delete()
    Target.objects.all().delete()


def run(command: str, *args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(command, *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def test_it_rebuilds_lost_rows_from_manifests_and_the_backups_restore(
    sqlite_target, local_storage, sqlite_source, tmp_path
):
    first = services.run_backup(sqlite_target)
    second = services.run_backup(sqlite_target)
    originals = {b.pk: (b.file_path, b.checksum, b.file_size, b.engine_info) for b in (first, second)}
    lose_the_catalog()

    code, output = run("backup_reindex", "--storage", "local", "--dry-run")
    assert code == 0 and "2 would create" in output and "target app-db (sqlite, inactive)" in output
    assert not Backup.objects.exists() and not Target.objects.exists()

    code, output = run("backup_reindex", "--storage", "local")
    assert code == 0 and "2 created, 0 already known" in output
    rebuilt = {b.pk: (b.file_path, b.checksum, b.file_size, b.engine_info) for b in Backup.objects.all()}
    assert rebuilt == originals  # same ids, paths, checksums, sizes, engine facts
    target = Target.objects.get(name="app-db")
    assert target.engine == "sqlite" and not target.is_active
    for backup in Backup.objects.all():
        assert backup.status == BackupStatus.SUCCESS and "backup_reindex" in backup.notes
        assert [(c.storage.name, c.status) for c in backup.copies.all()] == [("local", CopyStatus.STORED)]
        assert services.verify_backup(backup).ok

    destination = Target.objects.create(
        name="restored", engine="sqlite", database=str(tmp_path / "r.sqlite3")
    )
    log = restore_backup(Backup.objects.get(pk=second.pk), destination)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sqlite_rows(tmp_path / "r.sqlite3") == sqlite_rows(sqlite_source)

    code, output = run("backup_reindex", "--storage", "local")
    assert code == 0 and "0 created, 2 already known" in output  # idempotent


def test_it_adds_a_missing_copy_row_to_a_known_backup(sqlite_target, local_storage, tmp_path):
    backup = services.run_backup(sqlite_target)
    BackupCopy.objects.filter(backup=backup).delete()
    report = catalog.reindex_storage(local_storage)
    assert report.created == [f"copy in local of backup {backup.pk} ({backup.file_path})"]
    assert backup.copies.get().status == CopyStatus.STORED


def test_it_reports_manifests_it_cannot_trust_and_indexes_nothing_for_them(
    sqlite_target, local_storage, storage_dir: Path
):
    good, other, third = (services.run_backup(sqlite_target) for _ in range(3))
    lose_the_catalog()
    with open(storage_dir / good.file_path, "ab") as handle:
        handle.write(b"tampered")
    (storage_dir / (other.file_path + ".manifest.json")).write_text("{not json")
    (storage_dir / third.file_path).unlink()

    code, output = run("backup_reindex", "--storage", "local")
    assert code == 1
    assert (
        f"{good.file_path}: {(good.file_size or 0) + 8} bytes in storage, the manifest says {good.file_size}"
        in output
    )
    assert "not a readable Backupsite manifest" in output
    assert f"its backup file {third.file_path} is missing" in output
    assert not Backup.objects.exists()


def test_it_names_an_unknown_storage_when_reindexing(db):
    code, output = run("backup_reindex", "--storage", "nowhere")
    assert code == 2 and "no storage named 'nowhere'" in output


def test_it_reconciles_by_reporting_gone_changed_and_unknown_files_and_deleting_nothing(
    sqlite_target, local_storage, storage_dir: Path
):
    gone, changed, fine = (services.run_backup(sqlite_target) for _ in range(3))
    code, output = run("backup_reconcile")
    assert code == 0 and "storage local: 3 copies checked" in output

    (storage_dir / gone.file_path).unlink()
    with open(storage_dir / changed.file_path, "ab") as handle:
        handle.write(b"x")
    stray = storage_dir / "someone-elses" / "file.bin"
    stray.parent.mkdir()
    stray.write_bytes(b"12345")

    code, output = run("backup_reconcile", "--storage", "local", "--json")
    assert code == 1
    (report,) = json.loads(output[: output.rindex("]") + 1])
    assert report["missing"] == [f"{gone.file_path}: backup {gone.pk}'s file is gone"]
    assert report["size_differs"] == [
        f"{changed.file_path}: backup {changed.pk} is {(changed.file_size or 0) + 1} bytes here, "
        f"the catalog says {changed.file_size}"
    ]
    assert report["unknown"] == ["someone-elses/file.bin: 5 bytes, no catalog entry"]
    assert stray.exists() and (storage_dir / changed.file_path).exists()  # reports only
    assert fine.pk not in {
        int(line.split("backup ")[1].split()[0].rstrip("'s")) for line in report["missing"]
    }


def test_it_reconciles_by_reporting_files_of_deleted_backups_that_are_still_there(
    sqlite_target, local_storage, storage_dir: Path
):
    backup = services.run_backup(sqlite_target)
    BackupCopy.objects.filter(backup=backup).update(status=CopyStatus.DELETED)
    report = catalog.reconcile(Storage.objects.get(name="local"))
    assert report.unknown == [
        f"{backup.file_path}: backup {backup.pk} was deleted but the file is still here"
    ]


def test_a_postgresql_catalog_rebuilt_by_reindex_makes_its_next_backup_without_a_duplicate_id(
    pg_server, manage, tmp_path
):
    """Reindex inserts rows with their manifests' ids; on PostgreSQL the id sequence must then
    move past them, or the next backup collides with a reindexed one (duplicate key)."""
    from backups.engines.postgresql.engine import pgpass_line
    from tests.conftest import fill_sqlite
    from tests.servers.postgres import PostgresServer

    server: PostgresServer = pg_server
    source = fill_sqlite(tmp_path / "app.sqlite3", rows=5)
    stored = tmp_path / "stored"
    config = tmp_path / "site.toml"
    config.write_text(
        f'[storages.local]\nkind = "local"\npath = "{stored}"\n\n'
        f'[targets.app-db]\nengine = "sqlite"\ndatabase = "{source}"\nstorages = ["local"]\n'
    )
    # The first catalog (SQLite, the fixture's) makes three backups, ids 1-3, and is lost.
    assert manage("backup_config", "apply", str(config)).returncode == 0
    for _ in range(3):
        made = manage("backup_create", "--target", "app-db")
        assert made.returncode == 0, made.stdout + made.stderr
    # A new catalog on PostgreSQL rebuilds them from the storage, then backs up again.
    catalog_db = server.create_database("reindexed_catalog")
    passfile = tmp_path / "pgpass"
    passfile.write_text(pgpass_line(server.password))
    passfile.chmod(0o600)
    env = {
        "DATABASE_URL": f"postgres://{server.user}@{server.host}:{server.port}/{catalog_db}",
        "PGPASSFILE": str(passfile),
        "BACKUPSITE_HOME": str(tmp_path / "new-home"),
    }
    try:
        for args in (("migrate", "--noinput", "-v0"), ("backup_config", "apply", str(config))):
            result = manage(*args, extra_env=env)
            assert result.returncode == 0, result.stdout + result.stderr
        reindexed = manage("backup_reindex", "--storage", "local", "--json", extra_env=env)
        assert reindexed.returncode == 0, reindexed.stdout + reindexed.stderr
        assert server.execute(catalog_db, "SELECT id FROM backup_history ORDER BY id") == [(1,), (2,), (3,)]
        made = manage("backup_create", "--target", "app-db", "--json", extra_env=env)
        assert made.returncode == 0, made.stdout + made.stderr  # found: duplicate key on id 1
        assert [row["id"] for row in json.loads(made.stdout)] == [4]
    finally:
        server.drop_database(catalog_db)
