"""Encrypted restores that must fail, and fail before the destination is touched: a missing or
wrong identity, a file encrypted to another key, ciphertext damaged or cut short by someone who
also rewrote the catalog (PostgreSQL, SQLite and files on real servers and trees), an
incremental chain whose first link's key is gone; deep verification without the key; and the
escrow key as the way back.

"Not touched" is checked on the destination itself: a PostgreSQL database's rows, a SQLite
file's bytes, a directory tree, and what lies beside them (no staging or kept-aside leftovers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import execute_from_command_line

from backups import services
from backups.engines import EngineError, get_engine
from backups.engines.base import RestoreOptions
from backups.models import Backup, BackupCopy, BackupStatus, EncryptionKey, Storage, Target
from backups.resources import connection_for, restore_manifest, scratch_dir
from backups.streaming.encryption import EncryptionError
from backups.verification import feed_copy
from restores.models import RestoreLog, RestoreStatus
from restores.services import restore_backup
from tests.conftest import fill_sqlite, pg_target, sqlite_rows, unique_name
from tests.servers.postgres import PostgresServer
from tests.test_engine_contract import tree

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

AGE = shutil.which("age") or "/usr/bin/age"
MIB = 1024 * 1024
AGE_CHUNK = 64 * 1024 + 16  # a payload chunk as stored: 64 KiB of ciphertext and its tag
#: A source target, a destination target, and the check that the destination is as it was.
DamageCase = tuple[Target, Target, Callable[[], None]]


@pytest.fixture
def new_key(key_dir: Path) -> Callable[[str], EncryptionKey]:
    def make(name: str) -> EncryptionKey:
        return services.generate_key(name, key_dir / f"{name}.key")[0]

    return make


def encrypt_to(target: Target, key: str, *escrow: str) -> Target:
    target.encryption, target.escrow = key, list(escrow)
    target.save()
    return target


def backed_up(target: Target, **options: object) -> Backup:
    backup = services.run_backup(target, **options)  # type: ignore[arg-type]
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.encryption == "age"
    return backup


def stored_path(backup: Backup) -> Path:
    copy = backup.copies.get()
    return Path(copy.storage.options["path"]) / copy.path


def rewrite_stored(backup: Backup, data: bytes) -> None:
    """Someone who can write both the storage and the catalog: the stored file becomes ``data``,
    and the row, its copy and the manifest beside the file describe it, so the catalog's size
    and SHA-256 checks (and the manifest check) pass."""
    path = stored_path(backup)
    path.write_bytes(data)
    checksum = hashlib.sha256(data).hexdigest()
    Backup.objects.filter(pk=backup.pk).update(checksum=checksum, file_size=len(data))
    BackupCopy.objects.filter(backup=backup).update(size=len(data))
    manifest_path = path.with_name(path.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["backup"].update(checksum=checksum, file_size=len(data))
    manifest_path.write_text(json.dumps(manifest))
    backup.refresh_from_db()
    services.check_copy_digest(backup, backup.copies.get())  # the catalog's own checks pass
    services.check_manifest(backup, backup.copies.get())


def payload_start(data: bytes) -> int:
    """Where the age payload's first chunk starts: after the header's MAC line and the 16-byte
    nonce."""
    return data.index(b"\n", data.index(b"\n--- ") + 1) + 1 + 16


def damaged(data: bytes, how: str) -> bytes:
    """``data`` with one byte flipped deep inside (many chunks after the first) or in the first
    chunk (caught before the engine starts), or cut short at a chunk boundary (every remaining
    chunk authenticates; only the missing last one tells)."""
    start = payload_start(data)
    chunks = (len(data) - start) // AGE_CHUNK
    assert chunks >= 16, "the backup must span many age chunks"
    if how == "truncated":
        return data[: start + (chunks // 2) * AGE_CHUNK]
    changed = bytearray(data)
    changed[start + (0 if how == "flipped-first-chunk" else chunks * 3 // 4) * AGE_CHUNK + 1000] ^= 0x01
    return bytes(changed)


def failed_log(backup: Backup) -> RestoreLog:
    log = RestoreLog.objects.filter(backup=backup).latest("pk")
    assert log.status == RestoreStatus.FAILED
    assert log.completed_at is not None
    return log


def beside(path: Path) -> list[str]:
    """What the directory holding ``path`` contains (staging files, kept-aside copies...)."""
    return sorted(os.listdir(path.parent))


def restore_command(*args: str) -> int:
    """The status ``manage.py backup_restore ARGS`` exits with when it fails, run in this
    process the way a shell runs it (``sys.exit`` with the command's return code)."""
    with pytest.raises(SystemExit) as stopped:
        execute_from_command_line(["manage.py", "backup_restore", *args])
    assert isinstance(stopped.value.code, int), stopped.value.code
    return stopped.value.code


# -- a missing or wrong identity ------------------------------------------------------------------


@pytest.fixture
def prod_backup(sqlite_target: Target, new_key: Callable[[str], EncryptionKey]) -> Backup:
    new_key("prod")
    return backed_up(encrypt_to(sqlite_target, "prod"))


@pytest.fixture
def untouched_copy(copy_target: Target) -> Callable[[], None]:
    """An assertion that ``copy_target``'s file and its directory are as they are now."""
    path = Path(copy_target.database)
    before, listing = path.read_bytes(), beside(path)

    def check() -> None:
        assert path.read_bytes() == before
        assert beside(path) == listing

    return check


# Committed, as in a shell: the command closes every connection as it ends (run_from_argv), which
# ends a test's transaction on PostgreSQL (SQLite's in-memory test catalog ignores the close).
@pytest.mark.django_db(transaction=True)
def test_it_fails_naming_the_key_when_the_identity_file_is_gone_and_the_command_exits_1(
    prod_backup, copy_target, untouched_copy, key_dir, capsys
):
    (key_dir / "prod.key").unlink()
    code = restore_command("--id", str(prod_backup.pk), "--to", copy_target.name, "--yes")
    assert code == 1
    out = capsys.readouterr()
    log = failed_log(prod_backup)
    assert log.error_message in out.out
    assert f"encrypted to key prod (id {prod_backup.encryption_key_id})" in log.error_message
    assert f"keys.prod.identity: secret file {key_dir / 'prod.key'} does not exist" in log.error_message
    assert "run this on a host that has the key" in log.error_message
    untouched_copy()


def test_it_fails_with_the_setting_to_add_when_the_key_has_no_identity(
    prod_backup, copy_target, untouched_copy
):
    EncryptionKey.objects.filter(name="prod").update(identity="")
    log = restore_backup(prod_backup, copy_target)
    assert log.status == RestoreStatus.FAILED and log == failed_log(prod_backup)
    assert "this host has no identity for key prod" in log.error_message
    assert 'set identity = "${file:/run/secrets/prod.key}"' in log.error_message
    assert "[keys.prod]" in log.error_message
    untouched_copy()


def test_it_fails_when_the_identity_reference_holds_another_keys_identity(
    prod_backup, copy_target, untouched_copy, new_key, key_dir
):
    other = new_key("other")
    EncryptionKey.objects.filter(name="prod").update(identity="${file:" + str(key_dir / "other.key") + "}")
    log = restore_backup(prod_backup, copy_target)
    assert log.status == RestoreStatus.FAILED and log == failed_log(prod_backup)
    prod = EncryptionKey.objects.get(name="prod")
    assert (
        f"keys.prod.identity: the file holds the identity of another key ({other.recipient}), "
        f"not of {prod.recipient}"
    ) in log.error_message
    assert "AGE-SECRET-KEY" not in log.error_message
    untouched_copy()


def test_it_refuses_a_file_encrypted_to_another_recipient_before_touching_the_destination(
    prod_backup, copy_target, untouched_copy, new_key, key_dir
):
    """The catalog names prod and this host holds prod's identity, but the stored file (with
    the catalog fixed up to match it) was encrypted to another key."""
    other = new_key("other")
    plain = subprocess.run(
        [AGE, "-d", "-i", str(key_dir / "prod.key"), str(stored_path(prod_backup))],
        check=True,
        capture_output=True,
    ).stdout
    swapped = subprocess.run(
        [AGE, "-r", other.recipient], input=plain, check=True, capture_output=True
    ).stdout
    rewrite_stored(prod_backup, swapped)

    log = restore_backup(prod_backup, copy_target)
    assert log.status == RestoreStatus.FAILED and log == failed_log(prod_backup)
    assert (
        f"backup {prod_backup.pk} (local) cannot be decrypted with the identity this host has for key prod"
    ) in log.error_message
    assert "no identity here matches this backup's recipients" in log.error_message
    untouched_copy()


def test_it_restores_with_the_escrow_identity_alone(sqlite_target, copy_target, new_key, key_dir):
    new_key("prod")
    new_key("offline")
    backup = backed_up(encrypt_to(sqlite_target, "prod", "offline"))
    (key_dir / "prod.key").unlink()
    EncryptionKey.objects.filter(name="prod").update(identity="")

    log = restore_backup(backup, copy_target)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sqlite_rows(Path(copy_target.database)) == sqlite_rows(Path(sqlite_target.database))


# -- verification without the key -----------------------------------------------------------------


# Committed, as in a shell: the command closes every connection as it ends (run_from_argv), which
# ends a test's transaction on PostgreSQL (SQLite's in-memory test catalog ignores the close).
@pytest.mark.django_db(transaction=True)
def test_it_refuses_deep_verification_without_the_key_marking_nothing_while_a_plain_one_passes(
    prod_backup, key_dir, capsys
):
    steps = list(prod_backup.steps.values_list("name", "status"))
    (key_dir / "prod.key").unlink()
    with pytest.raises(SystemExit) as stopped:
        execute_from_command_line(["manage.py", "backup_verify", "--id", str(prod_backup.pk), "--deep"])
    err = capsys.readouterr().err
    # A key this host lacks is a refusal (exit 2, like every verification that cannot run),
    # not a failed verification: nothing about the backup was learned.
    assert stopped.value.code == 2
    assert "cannot verify --deep" in err and "key prod" in err and "prod.key does not exist" in err
    backup = Backup.objects.get(pk=prod_backup.pk)
    assert backup.status == BackupStatus.SUCCESS and not backup.verified
    assert list(backup.steps.values_list("name", "status")) == steps  # refused before any step

    execute_from_command_line(["manage.py", "backup_verify", "--id", str(prod_backup.pk)])
    out = capsys.readouterr().out
    assert f"backup {prod_backup.pk} verified" in out
    assert "size and sha256 match; encrypted to key prod" in out and "not decrypted" in out
    backup.refresh_from_db()
    assert backup.status == BackupStatus.SUCCESS


# -- damaged or truncated ciphertext that passes the (rewritten) catalog ---------------------------


def incompressible_sqlite(path: Path) -> Path:
    fill_sqlite(path, rows=10)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE blobs (data BLOB)")
        db.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(128 * 1024),) for _ in range(32)])
        db.commit()
    return path


def sqlite_damage_case(request: pytest.FixtureRequest, tmp_path: Path) -> DamageCase:
    storage: Storage = request.getfixturevalue("local_storage")
    source = Target.objects.create(
        name="big-db", engine="sqlite", database=str(incompressible_sqlite(tmp_path / "big.sqlite3"))
    )
    source.storages.add(storage)
    (tmp_path / "live").mkdir()
    destination_path = fill_sqlite(tmp_path / "live" / "app.sqlite3", rows=3)
    destination = Target.objects.create(name="live-db", engine="sqlite", database=str(destination_path))
    before, listing = destination_path.read_bytes(), beside(destination_path)

    def untouched() -> None:
        assert destination_path.read_bytes() == before  # byte for byte
        assert beside(destination_path) == listing  # no staged file left, nothing kept aside

    return source, destination, untouched


def files_damage_case(request: pytest.FixtureRequest, tmp_path: Path) -> DamageCase:
    storage: Storage = request.getfixturevalue("local_storage")
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    for number in range(4):
        (root / "sub" / f"big-{number}.bin").write_bytes(os.urandom(MIB))
    source = Target.objects.create(name="media", engine="files", paths=[str(root)])
    source.storages.add(storage)
    live = tmp_path / "live" / "media"
    (live / "old").mkdir(parents=True)
    (live / "old" / "keep.txt").write_text("what the restore must not touch\n")
    (live / "a.txt").write_text("the live version\n")
    destination = Target.objects.create(name="media-live", engine="files", paths=[str(live)])
    before, listing = tree(live), beside(live)

    def untouched() -> None:
        assert tree(live) == before
        assert beside(live) == listing  # no staging directory left, nothing kept aside

    return source, destination, untouched


def postgresql_damage_case(request: pytest.FixtureRequest, tmp_path: Path) -> DamageCase:
    server: PostgresServer = request.getfixturevalue("pg_server")
    storage: Storage = request.getfixturevalue("local_storage")
    source_db = server.create_database(unique_name("enc_src"))
    # 4 MiB that gzip cannot shrink: 64 rows of 64 KiB of md5 output taken as bytes.
    server.execute(
        source_db,
        """CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
           INSERT INTO blobs
             SELECT r, (SELECT decode(string_agg(md5(random()::text || r || g), ''), 'hex')
                        FROM generate_series(1, 4096) g)
             FROM generate_series(1, 64) r;""",
    )
    destination_db = server.create_database(unique_name("enc_live"))
    server.execute(
        destination_db,
        """CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
           INSERT INTO blobs VALUES (1, 'live row'::bytea);
           CREATE TABLE orders (id int PRIMARY KEY, note text);
           INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 25) g;""",
    )

    def drop() -> None:
        server.drop_database(source_db)
        server.drop_database(destination_db)

    request.addfinalizer(drop)
    source = pg_target(server, source_db.replace("_", "-"), source_db, storage)
    destination = pg_target(server, destination_db.replace("_", "-"), destination_db)

    def contents() -> dict[str, object]:
        tables = server.execute(
            destination_db,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        )
        return {
            "tables": tables,
            "blobs": server.execute(destination_db, "SELECT id, data FROM blobs ORDER BY id"),
            "orders": server.execute(destination_db, "SELECT * FROM orders ORDER BY id"),
        }

    before = contents()
    assert before["blobs"] == [(1, b"live row")]

    def untouched() -> None:
        assert contents() == before

    return source, destination, untouched


DAMAGE_CASES = {
    "postgresql": postgresql_damage_case,
    "sqlite": sqlite_damage_case,
    "files": files_damage_case,
}


@pytest.mark.parametrize("how", ["flipped", "truncated", "flipped-first-chunk"])
@pytest.mark.parametrize("engine", sorted(DAMAGE_CASES))
def test_it_applies_nothing_when_the_ciphertext_fails_authentication_midway(
    engine: str, how: str, new_key, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    new_key("prod")
    source, destination, untouched = DAMAGE_CASES[engine](request, tmp_path)
    backup = backed_up(encrypt_to(source, "prod"), compression="gzip")
    assert (backup.file_size or 0) > 3 * MIB
    rewrite_stored(backup, damaged(stored_path(backup).read_bytes(), how))

    # The restore authenticates every chunk while it checks the copy: the engine never starts.
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.FAILED and log == failed_log(backup)
    assert "no intact copy to restore from; the destination was not touched" in log.error_message
    assert "local: the encrypted stream is damaged or truncated" in log.error_message
    untouched()
    if how == "flipped-first-chunk":
        return
    # A copy that changes after that check (the worst day: a storage serving other bytes on the
    # second read) reaches the engine, which must stop with nothing applied: the stream fed
    # straight into the engine's restore, the way a restore feeds a checked copy.
    restorer = get_engine(destination.engine)

    def apply(stream) -> str:
        options = RestoreOptions(scratch_dir=scratch_dir(), manifest=restore_manifest(backup))
        return restorer.restore(connection_for(destination), stream, options).message

    with pytest.raises((EngineError, EncryptionError)) as stopped:
        feed_copy(backup, backup.copies.get(), apply)
    assert "damaged or truncated" in str(stopped.value)
    untouched()


# -- an incremental chain whose links are encrypted to different keys ------------------------------


def test_it_restores_a_chain_across_a_key_rotation_only_with_both_keys_naming_the_missing_one(
    local_storage, new_key, key_dir, tmp_path
):
    new_key("key-a")
    new_key("key-b")
    source = tmp_path / "data"
    (source / "docs").mkdir(parents=True)
    (source / "docs" / "a.txt").write_text("alpha\n")
    (source / "b.bin").write_bytes(os.urandom(50_000))
    target = Target.objects.create(name="data", engine="files", paths=[str(source)])
    target.storages.add(local_storage)
    first = backed_up(encrypt_to(target, "key-a"))
    services.rotate_key(target, "key-b")
    (source / "docs" / "a.txt").write_text("alpha, edited\n")
    (source / "new.txt").write_text("created\n")
    second = backed_up(target, backup_type="incremental")
    assert second.base_id == first.pk
    key_a, key_b = EncryptionKey.objects.get(name="key-a"), EncryptionKey.objects.get(name="key-b")
    assert (first.encryption_key_id, second.encryption_key_id) == (key_a.fingerprint, key_b.fingerprint)

    restored = tmp_path / "restored"
    destination = Target.objects.create(name="data-restored", engine="files", paths=[str(restored)])
    log = restore_backup(second, destination)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert "chain of 2 backups" in log.notes
    assert tree(restored) == tree(source)

    live = tmp_path / "live"
    (live / "kept").mkdir(parents=True)
    (live / "kept" / "x.txt").write_text("live\n")
    into = Target.objects.create(name="data-live", engine="files", paths=[str(live)])
    before, listing = tree(live), beside(live)
    (key_dir / "key-a.key").unlink()
    log = restore_backup(second, into)
    assert log.status == RestoreStatus.FAILED and log == failed_log(second)
    assert log.error_message.startswith(
        f"link 1 of 2 in the chain: backup {first.pk} is encrypted to key key-a"
    )
    assert "key-a.key does not exist" in log.error_message
    assert tree(live) == before and beside(live) == listing


def test_it_says_what_mariadb_left_when_a_copy_that_changed_after_its_check_breaks_off(
    mariadb_server, local_storage, new_key, monkeypatch, tmp_path
):
    """MariaDB cannot roll back DDL: a stream that fails authentication half way (a copy that
    changed after its check) leaves tables behind, and the failure must say so and which."""
    from tests.test_engine_mysql import PASSWORD_ENV, make_target

    monkeypatch.setenv(PASSWORD_ENV, mariadb_server.password)
    new_key("prod")
    source_db = mariadb_server.create_database(unique_name("enc_maria_src"))
    destination_db = mariadb_server.create_database(unique_name("enc_maria_live"))
    try:
        for table in ("a_first", "b_second"):
            mariadb_server.execute(source_db, f"CREATE TABLE {table} (id int PRIMARY KEY, data longblob)")
            for row in range(24):
                mariadb_server.execute(
                    source_db, f"INSERT INTO {table} VALUES (%s, %s)", (row, os.urandom(96 * 1024))
                )
        source = encrypt_to(make_target(mariadb_server, "mariadb", source_db, local_storage), "prod")
        destination = make_target(mariadb_server, "mariadb", destination_db)
        backup = backed_up(source, compression="gzip")
        rewrite_stored(backup, damaged(stored_path(backup).read_bytes(), "flipped"))
        restorer = get_engine(destination.engine)

        def apply(stream) -> str:
            options = RestoreOptions(scratch_dir=scratch_dir(), manifest=restore_manifest(backup))
            return restorer.restore(connection_for(destination), stream, options).message

        with pytest.raises(EngineError) as stopped:
            feed_copy(backup, backup.copies.get(), apply)
        message = str(stopped.value)
        assert "the backup stopped reading half way" in message and "damaged or truncated" in message
        assert "may be partially restored" in message
    finally:
        mariadb_server.drop_database(source_db)
        mariadb_server.drop_database(destination_db)
