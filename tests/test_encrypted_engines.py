"""Encrypted backups of every engine on real servers, through local storage and S3 (moto): the
run encrypts to its key and escrow key, deep verification and a restore decrypt through this
host's identity and give back the source, and the stored file decrypts by hand with Debian's
``age`` into the engine's compressed format. Configuration backups too.

The cases are tests/test_engine_contract.py's (its guard fails while an engine has none); only
gzip runs on local storage and zstd on S3, so every engine meets both codecs once.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backups import services
from backups.engines import engine_keys, get_engine
from backups.models import Backup, BackupStatus, EncryptionKey, Storage, Target
from backups.streaming.codecs import EXTENSIONS
from restores.models import RestoreStatus
from restores.services import restore_to_directory
from tests.servers.s3 import S3Server
from tests.test_engine_contract import contract_case, tree, verify_deeply_and_restore

pytestmark = pytest.mark.django_db

AGE = shutil.which("age") or "/usr/bin/age"
S3_PREFIX = "site"
#: Each storage kind with the codec its cases use.
COMPRESSION = {"local": "gzip", "s3": "zstd"}
ACCESS_ENV, SECRET_ENV = "TEST_S3_ACCESS_KEY", "TEST_S3_SECRET_KEY"


@pytest.fixture
def keys(key_dir: Path) -> dict[str, EncryptionKey]:
    """``prod``, the targets' key, and ``offline``, their escrow key, each with its key file."""
    return {name: services.generate_key(name, key_dir / f"{name}.key")[0] for name in ("prod", "offline")}


@pytest.fixture
def s3_row(s3_server: S3Server, s3_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> Storage:
    """An s3 Storage row on a fresh bucket of the suite's moto server, secrets as references."""
    monkeypatch.setenv(ACCESS_ENV, s3_server.access_key)
    monkeypatch.setenv(SECRET_ENV, s3_server.secret_key)
    options = s3_server.options(
        s3_bucket(), access_key="${" + ACCESS_ENV + "}", secret_key="${" + SECRET_ENV + "}"
    )
    return Storage.objects.create(name="offsite", kind="s3", options=options, prefix=S3_PREFIX)


def encrypt(target: Target, kind: str, request: pytest.FixtureRequest) -> None:
    """Turn encryption on for ``target`` and, for ``kind`` s3, store its backups only in S3."""
    target.encryption, target.escrow = "prod", ["offline"]
    target.save()
    if kind == "s3":
        target.storages.set([request.getfixturevalue("s3_row")])


def stored_bytes(backup: Backup, s3_server: S3Server | None) -> bytes:
    """The stored (encrypted) file of ``backup``'s one copy, read straight from its storage."""
    copy = backup.copies.get()
    if copy.storage.kind == "local":
        return (Path(copy.storage.options["path"]) / copy.path).read_bytes()
    assert s3_server is not None
    response = s3_server.client().get_object(
        Bucket=copy.storage.options["bucket"], Key=f"{S3_PREFIX}/{copy.path}"
    )
    return response["Body"].read()


def assert_encrypted(backup: Backup, keys: dict[str, EncryptionKey], s3_server: S3Server | None) -> bytes:
    """The catalog, the manifest and the stored bytes say "age, to prod and offline"; returns
    the stored bytes."""
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.file_path.endswith(EXTENSIONS[backup.compression] + ".age")
    assert backup.encryption == "age" and backup.encryption_key_id == keys["prod"].fingerprint
    assert backup.encryption_recipients == [keys["prod"].recipient, keys["offline"].recipient]
    data = stored_bytes(backup, s3_server)
    assert data.startswith(b"age-encryption.org/v1\n")
    assert len(data) == backup.file_size
    manifest = services.load_manifest(backup)
    assert manifest["encryption"]["key_id"] == keys["prod"].fingerprint
    assert [r["key"] for r in manifest["encryption"]["recipients"]] == ["prod", "offline"]
    assert "AGE-SECRET-KEY" not in json.dumps(manifest)
    return data


def decrypt_by_hand(data: bytes, backup: Backup, key_file: Path, scratch: Path) -> None:
    """``age -d -i KEYFILE`` gives the engine's compressed stream: the codec's own tool accepts
    it, and it decompresses to the dump's size."""
    scratch.mkdir(exist_ok=True)
    encrypted, plain = scratch / Path(backup.file_path).name, scratch / "plain"
    encrypted.write_bytes(data)
    subprocess.run([AGE, "-d", "-i", str(key_file), "-o", str(plain), str(encrypted)], check=True)
    if backup.compression == "gzip":
        subprocess.run(["gzip", "-t", str(plain)], check=True)
        assert len(gzip.decompress(plain.read_bytes())) == backup.raw_size
    else:
        subprocess.run(["zstd", "-q", "-t", str(plain)], check=True)
        raw = subprocess.run(["zstd", "-q", "-dc", str(plain)], check=True, capture_output=True).stdout
        assert len(raw) == backup.raw_size


@pytest.mark.parametrize("kind", ["local", "s3"])
@pytest.mark.parametrize("key", [key for key in engine_keys() if get_engine(key).supported_types])
def test_it_encrypts_verifies_and_restores_every_engine(
    key: str,
    kind: str,
    keys: dict[str, EncryptionKey],
    key_dir: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    source, destination, compare = contract_case(key, request, tmp_path)
    encrypt(source, kind, request)
    s3_server = request.getfixturevalue("s3_server") if kind == "s3" else None

    backup = services.run_backup(source, compression=COMPRESSION[kind])
    data = assert_encrypted(backup, keys, s3_server)
    assert backup.file_path.endswith(get_engine(key).file_extension + EXTENSIONS[COMPRESSION[kind]] + ".age")
    assert backup.copies.get().storage.kind == kind

    verify_deeply_and_restore(backup, destination, compare)

    # Either recipient decrypts by hand: the escrow key is a real way back.
    for name in ("prod", "offline"):
        decrypt_by_hand(data, backup, key_dir / f"{name}.key", tmp_path / f"by-hand-{name}")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_it_encrypts_verifies_and_restores_a_configuration_backup(
    kind: str,
    keys: dict[str, EncryptionKey],
    key_dir: Path,
    sqlite_target: Target,
    files_tree: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    sqlite_target.config_paths = [str(files_tree)]
    sqlite_target.save()
    encrypt(sqlite_target, kind, request)
    s3_server = request.getfixturevalue("s3_server") if kind == "s3" else None

    backup = services.run_backup(sqlite_target, backup_type="configuration", compression=COMPRESSION[kind])
    data = assert_encrypted(backup, keys, s3_server)
    assert backup.file_path.endswith(".config.tar" + EXTENSIONS[COMPRESSION[kind]] + ".age")

    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages

    into = tmp_path / "restored-config"
    log = restore_to_directory(backup, into, initiated_by="encrypted-engines")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert tree(into / str(files_tree).lstrip("/")) == tree(files_tree)

    decrypt_by_hand(data, backup, key_dir / "prod.key", tmp_path / "by-hand")
