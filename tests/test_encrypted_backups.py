"""Encrypted backups end to end on SQLite and local storage: the run encrypts to its key and
escrow keys, the stored file decrypts with Debian's ``age``, restores and deep verification
decrypt through this host's identity, and every way a key can be missing or wrong is refused
before the destination is touched. Rotation, retirement and escrow-only restores too."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from backups import services
from backups.models import Backup, BackupStatus, EncryptionKey, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import digest, pg_target, sqlite_rows, unique_name

pytestmark = pytest.mark.django_db

AGE = shutil.which("age") or "age"


def new_key(name: str, key_dir: Path) -> EncryptionKey:
    key, _ = services.generate_key(name, key_dir / f"{name}.key")
    return key


@pytest.fixture
def encrypted_target(sqlite_target: Target, key_dir: Path) -> Target:
    new_key("prod", key_dir)
    new_key("offline", key_dir)
    sqlite_target.encryption = "prod"
    sqlite_target.escrow = ["offline"]
    sqlite_target.save()
    return sqlite_target


def stored_file(backup: Backup) -> Path:
    copy = backup.copies.get()
    return Path(copy.storage.options["path"]) / copy.path


def test_a_run_encrypts_to_its_key_and_escrow_and_age_decrypts_it(encrypted_target, key_dir, tmp_path):
    backup = services.run_backup(encrypted_target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    prod, offline = EncryptionKey.objects.get(name="prod"), EncryptionKey.objects.get(name="offline")
    assert backup.file_path.endswith(".sqlite3.gz.age")
    assert backup.encryption == "age" and backup.encryption_key_id == prod.fingerprint
    assert backup.encryption_recipients == [prod.recipient, offline.recipient]
    path = stored_file(backup)
    assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert digest(path) == backup.checksum  # the SHA-256 of the stored, encrypted bytes
    for name in ("prod", "offline"):  # every recipient decrypts: the escrow key too
        restored = tmp_path / f"by-hand-{name}.sqlite3"
        subprocess.run(
            f"{AGE} -d -i {key_dir / (name + '.key')} {path} | gunzip -c > {restored}", shell=True, check=True
        )
        assert sqlite_rows(restored) == sqlite_rows(Path(encrypted_target.database))


def test_rotation_keeps_old_backups_on_their_key_and_both_restore_while_both_identities_exist(
    encrypted_target, copy_target, key_dir
):
    first = services.run_backup(encrypted_target)
    new_key("next", key_dir)
    changed = services.rotate_key(encrypted_target, "next")
    assert changed == ["target app-db: prod -> next"]
    second = services.run_backup(Target.objects.get(pk=encrypted_target.pk))
    prod, nxt = EncryptionKey.objects.get(name="prod"), EncryptionKey.objects.get(name="next")
    assert first.encryption_key_id == prod.fingerprint and second.encryption_key_id == nxt.fingerprint
    source_rows = sqlite_rows(Path(encrypted_target.database))
    for backup in (first, second):
        log = restore_backup(backup, copy_target)
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert sqlite_rows(Path(copy_target.database)) == source_rows
    # prod's identity gone (and the escrow key's too): the old backup is refused, the new one restores
    (key_dir / "prod.key").unlink()
    (key_dir / "offline.key").unlink()
    before = digest(Path(copy_target.database))
    refused = restore_backup(first, copy_target)
    assert refused.status == RestoreStatus.FAILED
    assert "key prod" in refused.error_message and "keys.prod.identity" in refused.error_message
    assert digest(Path(copy_target.database)) == before  # not touched
    assert restore_backup(second, copy_target).status == RestoreStatus.SUCCESS


def test_retiring_a_key_live_backups_need_is_refused_with_the_count(encrypted_target, key_dir):
    backups = [services.run_backup(encrypted_target) for _ in range(2)]
    new_key("next", key_dir)
    services.rotate_key(encrypted_target, "next")
    with pytest.raises(services.ServiceError, match="needed by 2 live backup"):
        services.retire_key("prod")
    assert EncryptionKey.objects.get(name="prod").retired_at is None
    Backup.objects.filter(pk__in=[b.pk for b in backups]).update(deleted_at=timezone.now())
    assert services.retire_key("prod").retired_at is not None
    encrypted_target.refresh_from_db()
    encrypted_target.encryption = "prod"
    with pytest.raises(ValidationError, match="retired"):
        encrypted_target.full_clean()


def test_an_escrow_identity_alone_restores(encrypted_target, copy_target, key_dir):
    backup = services.run_backup(encrypted_target)
    EncryptionKey.objects.filter(name="prod").update(identity="")  # this host keeps only the escrow key
    log = restore_backup(backup, copy_target)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sqlite_rows(Path(copy_target.database)) == sqlite_rows(Path(encrypted_target.database))


def test_a_rebuilt_catalog_keeps_the_key_id_and_the_encryption(encrypted_target, copy_target, local_storage):
    backup = services.run_backup(encrypted_target)
    kept = (backup.file_path, backup.encryption_key_id, backup.encryption_recipients, backup.checksum)
    Backup.objects.filter(pk=backup.pk).delete()
    report = services.reindex_storage(local_storage)
    assert report.problems == [], report.problems
    rebuilt = Backup.objects.get(file_path=kept[0])
    assert rebuilt.encryption == "age"
    assert (
        rebuilt.file_path,
        rebuilt.encryption_key_id,
        rebuilt.encryption_recipients,
        rebuilt.checksum,
    ) == kept
    log = restore_backup(rebuilt, copy_target)
    assert log.status == RestoreStatus.SUCCESS, log.error_message


def test_a_file_encrypted_by_hand_with_age_restores_through_the_product(
    sqlite_target, copy_target, key_dir, tmp_path
):
    """Interop the other way: a plain backup, encrypted by Debian's ``age -r`` to our key's
    recipient, with a manifest written by hand, is indexed by backup_reindex and restored."""
    key = new_key("prod", key_dir)
    plain = services.run_backup(sqlite_target)
    assert plain.status == BackupStatus.SUCCESS and plain.encryption == "none"
    imported_dir = tmp_path / "imported"
    encrypted = imported_dir / (plain.file_path + ".age")
    encrypted.parent.mkdir(parents=True)
    subprocess.run([AGE, "-r", key.recipient, "-o", str(encrypted), str(stored_file(plain))], check=True)
    manifest = json.loads(
        (stored_file(plain).parent / (Path(plain.file_path).name + ".manifest.json")).read_text()
    )
    manifest["backup"].update(
        id=None,
        file_path=plain.file_path + ".age",
        checksum=digest(encrypted),
        file_size=encrypted.stat().st_size,
        encryption="age",
        encryption_key_id=key.fingerprint,
        encryption_recipients=[key.recipient],
    )
    manifest["file"] = encrypted.name
    Path(str(encrypted) + ".manifest.json").write_text(json.dumps(manifest))
    storage = Storage.objects.create(name="imported", kind="local", options={"path": str(imported_dir)})
    report = services.reindex_storage(storage)
    assert report.problems == [] and len(report.created) == 1, (report.problems, report.created)
    imported = Backup.objects.get(file_path=plain.file_path + ".age")
    assert imported.encryption == "age" and imported.encryption_key_id == key.fingerprint
    log = restore_backup(imported, copy_target)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sqlite_rows(Path(copy_target.database)) == sqlite_rows(Path(sqlite_target.database))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"encryption_recipients": []}, "must list the public keys"),
        ({"encryption_recipients": ["age1nothing"]}, "encryption_recipients[0]"),
        ({"encryption_key_id": "0123456789abcdef"}, "fingerprint of one of its recipients"),
    ],
)
def test_reindex_refuses_a_manifest_whose_encryption_fields_cannot_be_trusted(
    encrypted_target, local_storage, change, problem
):
    backup = services.run_backup(encrypted_target)
    manifest_path = Path(str(stored_file(backup)) + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["backup"].update(change)
    manifest_path.write_text(json.dumps(manifest))
    Backup.objects.filter(pk=backup.pk).delete()
    report = services.reindex_storage(local_storage)
    assert any(problem in line for line in report.skipped), report.skipped
    assert not Backup.objects.exists()


def test_an_unchanged_source_is_backed_up_again_when_its_encryption_changes(
    pg_server, local_storage, key_dir
):
    database = pg_server.create_database(unique_name("enc_quiet"))
    pg_server.execute(database, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    pg_server.execute("postgres", "CHECKPOINT")
    target = pg_target(pg_server, "enc-quiet", database, local_storage)
    target.skip_unchanged = True
    target.save()
    try:
        assert services.run_backup(target).status == BackupStatus.SUCCESS
        assert services.run_backup(target).status == BackupStatus.SKIPPED
        new_key("prod", key_dir)
        target.encryption = "prod"
        target.save()
        first = services.run_backup(target)  # the unencrypted backup does not stand in for it
        assert first.status == BackupStatus.SUCCESS and first.encryption == "age", first.error_message
        assert services.run_backup(target).status == BackupStatus.SKIPPED
        new_key("next", key_dir)
        services.rotate_key(target, "next")
        rotated = services.run_backup(Target.objects.get(pk=target.pk))
        assert rotated.status == BackupStatus.SUCCESS, rotated.error_message
        assert rotated.encryption_key_id == EncryptionKey.objects.get(name="next").fingerprint
    finally:
        pg_server.drop_database(database)


def test_the_restore_preview_names_the_keys_and_whether_this_host_can_decrypt(encrypted_target, key_dir):
    from restores.preview import preview_restore

    backup = services.run_backup(encrypted_target)
    prod = EncryptionKey.objects.get(name="prod")
    note = preview_restore(backup).encryption
    assert note == f"age, to key prod (id {prod.fingerprint}) or escrow key offline; this host can decrypt it"
    EncryptionKey.objects.update(identity="")
    assert "this host has no identity for it" in preview_restore(backup).encryption
    plain_target = Target.objects.create(name="plain", engine="sqlite", database=encrypted_target.database)
    plain_target.storages.set(encrypted_target.storages.all())
    assert preview_restore(services.run_backup(plain_target)).encryption == ""


def test_the_backup_page_says_how_it_is_encrypted(encrypted_target, admin_client):
    backup = services.run_backup(encrypted_target)
    page = admin_client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    prod = EncryptionKey.objects.get(name="prod")
    assert f"age, to key prod (id {prod.fingerprint}) or escrow key offline" in page
    assert "AGE-SECRET-KEY" not in page
