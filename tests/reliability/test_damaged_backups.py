"""Fault suite case 8, the parts engine-independent: a stored file swapped for another backup's
of the same target (same size, so only the SHA-256 can tell), and a manifest whose checksum or
size was edited. Verify marks the backup CORRUPT naming the reason, a restore refuses before the
destination is touched, and backup_reindex (after the catalog is lost) skips the tampered one
with its reason and indexes the rest. SQLite backups in a local storage: the checks are the
same for every engine."""

from __future__ import annotations

import json
import shutil
import sqlite3
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.models import Backup, BackupCopy, BackupStatus, BackupStep, Target
from restores.models import RestoreLog, RestoreStatus
from restores.services import RestoreRefused, restore_backup
from tests.conftest import digest

pytestmark = pytest.mark.django_db


def reindex() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("backup_reindex", "--storage", "local", stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def lose_the_catalog() -> None:
    RestoreLog.objects.all().delete()
    BackupStep.objects.all().delete()
    BackupCopy.objects.all().delete()
    Backup.objects.all().delete()
    Target.objects.all().delete()


def two_backups_of_one_size(target: Target) -> tuple[Backup, Backup]:
    """Two uncompressed backups of ``target`` that differ only in one row's text, so their files
    have the same size and different SHA-256 digests."""
    first = services.run_backup(target, compression="none")
    with sqlite3.connect(target.database) as db:
        db.execute("UPDATE audit SET event = 'EVENT 0' WHERE id = 1")  # same length as 'event 0'
    second = services.run_backup(target, compression="none")
    assert first.status == second.status == BackupStatus.SUCCESS
    assert first.file_size == second.file_size and first.checksum != second.checksum
    return first, second


def test_it_catches_a_file_swapped_for_another_backup_of_the_same_size(
    sqlite_target: Target, copy_target: Target, storage_dir: Path
) -> None:
    first, second = two_backups_of_one_size(sqlite_target)
    shutil.copyfile(storage_dir / second.file_path, storage_dir / first.file_path)  # sizes match
    destination = Path(copy_target.database)
    before = digest(destination)

    # A restore reads the whole copy before it touches the destination.
    log = restore_backup(first, copy_target, initiated_by="test")
    assert log.status == RestoreStatus.FAILED
    assert "no intact copy to restore from; the destination was not touched" in log.error_message
    assert f"checksum mismatch for {first.file_path}: sha256 {second.checksum}" in log.error_message
    assert digest(destination) == before

    outcome = services.verify_backup(first)
    first.refresh_from_db()
    assert not outcome.ok and first.status == BackupStatus.CORRUPT
    assert f"checksum mismatch for {first.file_path}: sha256 {second.checksum} but the catalog says" in (
        first.error_message
    )
    with pytest.raises(RestoreRefused, match="is corrupt; only successful backups can be restored"):
        restore_backup(first, copy_target, initiated_by="test")
    assert digest(destination) == before
    assert services.verify_backup(second).ok  # the other backup is untouched

    lose_the_catalog()
    code, output = reindex()
    assert code == 1, output
    assert (
        f"skipped: {first.file_path}.manifest.json: {first.file_path}: its SHA-256 is {second.checksum}, "
        f"the manifest says {first.checksum} (the file or the manifest was changed)"
    ) in output
    assert list(Backup.objects.values_list("file_path", "checksum")) == [(second.file_path, second.checksum)]


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (
            "checksum",
            "its SHA-256 is {checksum}, the manifest says {forged} (the file or the manifest was changed)",
        ),
        ("file_size", "{size} bytes in storage, the manifest says {forged}"),
    ],
    ids=["checksum", "size"],
)
def test_it_catches_a_manifest_whose_checksum_or_size_was_edited(
    sqlite_target: Target, copy_target: Target, storage_dir: Path, field: str, reason: str
) -> None:
    first, second = two_backups_of_one_size(sqlite_target)
    manifest_path = storage_dir / f"{first.file_path}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert first.file_size is not None
    forged = second.checksum if field == "checksum" else first.file_size + 1
    manifest["backup"][field] = forged
    manifest_path.write_text(json.dumps(manifest, indent=2))
    destination = Path(copy_target.database)
    before = digest(destination)

    outcome = services.verify_backup(first)
    first.refresh_from_db()
    assert not outcome.ok and first.status == BackupStatus.CORRUPT
    assert (
        f"local: the manifest {first.file_path}.manifest.json does not describe this backup: it gives "
        f"{field} {forged!r} (the catalog says {getattr(first, field)!r})"
    ) in first.error_message
    with pytest.raises(RestoreRefused, match="is corrupt; only successful backups can be restored"):
        restore_backup(first, copy_target, initiated_by="test")
    assert digest(destination) == before
    assert services.verify_backup(second).ok

    lose_the_catalog()
    code, output = reindex()
    assert code == 1, output
    why = reason.format(checksum=first.checksum, forged=forged, size=first.file_size)
    assert f"skipped: {first.file_path}.manifest.json: {first.file_path}: {why}" in output
    assert list(Backup.objects.values_list("file_path", flat=True)) == [second.file_path]


def test_it_refuses_to_restore_from_a_copy_whose_manifest_was_edited_before_any_verify(
    sqlite_target: Target, copy_target: Target, storage_dir: Path
) -> None:
    first, _second = two_backups_of_one_size(sqlite_target)
    manifest_path = storage_dir / f"{first.file_path}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["backup"]["checksum"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest, indent=2))
    destination = Path(copy_target.database)
    before = digest(destination)

    log = restore_backup(first, copy_target, initiated_by="test")
    assert log.status == "failed"
    assert (
        "no intact copy to restore from; the destination was not touched: local: the manifest"
        in log.error_message
    )
    assert "unexpected error" not in log.error_message
    assert digest(destination) == before
