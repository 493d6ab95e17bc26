"""Encrypted backups end to end on SQLite and local storage: the run encrypts to its key and
escrow keys, the stored file decrypts with Debian's ``age``, restores and deep verification
decrypt through this host's identity, and every way a key can be missing or wrong is refused
before the destination is touched. Rotation, retirement and escrow-only restores too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from backups import services
from backups.models import Backup, BackupStatus, EncryptionKey, Target
from tests.conftest import digest, sqlite_rows

pytestmark = pytest.mark.django_db

AGE = shutil.which("age")


@pytest.fixture
def key_dir(tmp_path: Path, settings) -> Path:
    path = tmp_path / "secrets"
    path.mkdir(mode=0o700)
    settings.BACKUPSITE_SECRETS_DIRS = [str(path)]
    return path


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
