"""Backups with a remote copy (moto's S3 server) next to a local one: a link cut mid-upload, a
retry that succeeds once the link is back, a worker killed mid-upload, signed-URL downloads,
verification of every copy and the catalog rebuilt from the bucket."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from backups import services
from backups.models import Backup, BackupCopy, BackupStatus, CopyStatus, Storage, Target
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers.proxy import CuttableProxy, cuttable_proxy
from tests.servers.s3 import S3Server
from tests.servers.sshd import SSHServer

pytestmark = pytest.mark.django_db
MIB = 1024 * 1024


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """~12 MiB of incompressible rows: more than two 5 MiB parts after gzip."""
    path = fill_sqlite(tmp_path / "big.sqlite3", rows=10)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE blobs (data BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(256 * 1024),) for _ in range(48)])
        conn.commit()
    return path


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("TEST_S3_SECRET_KEY", s3_server.secret_key)


@pytest.fixture
def s3_storage(
    s3_server: S3Server, s3_bucket: Callable[..., str], s3_env: None
) -> Callable[..., tuple[Storage, str]]:
    """A Storage row on a fresh bucket (secrets as references), optionally through a proxy."""

    def make(required: bool = True, proxy: CuttableProxy | None = None) -> tuple[Storage, str]:
        bucket = s3_bucket()
        options = s3_server.options(
            bucket,
            access_key="${TEST_S3_ACCESS_KEY}",
            secret_key="${TEST_S3_SECRET_KEY}",
            part_size_mib=5,
        )
        if proxy is not None:
            options["endpoint_url"] = f"http://{proxy.host}:{proxy.port}"
        row = Storage.objects.create(
            name="offsite", kind="s3", options=options, prefix="site", required=required
        )
        return row, bucket

    return make


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[CuttableProxy]:
    with cuttable_proxy(s3_server.host, s3_server.port) as link:
        yield link


def objects(server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def uploads(server: S3Server, bucket: str) -> list[str]:
    return [u["Key"] for u in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def files_in(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def make_target(source: Path, *storages: Storage) -> Target:
    target = Target.objects.create(name="app-db", engine="sqlite", database=str(source))
    target.storages.add(*storages)
    return target


def test_it_stores_and_confirms_a_backup_in_s3_and_on_disk(
    s3_server: S3Server, s3_storage: Any, source: Path, local_storage: Storage, storage_dir: Path
) -> None:
    row, bucket = s3_storage()
    backup = services.run_backup(make_target(source, local_storage, row))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert objects(s3_server, bucket) == [
        f"site/{backup.file_path}",
        f"site/{backup.file_path}.manifest.json",
    ]
    assert uploads(s3_server, bucket) == []
    s3_copy = backup.copies.get(storage=row)
    assert s3_copy.status == CopyStatus.STORED and s3_copy.size == backup.file_size and s3_copy.etag
    head = s3_server.client().head_object(Bucket=bucket, Key=f"site/{backup.file_path}")
    assert head["ContentLength"] == backup.file_size
    assert files_in(storage_dir) == [backup.file_path, backup.file_path + ".manifest.json"]


def test_it_fails_the_run_when_the_link_to_a_required_s3_is_cut_mid_upload_and_leaves_nothing(
    s3_server: S3Server, s3_storage: Any, proxy: CuttableProxy, source: Path, local_storage: Storage,
    storage_dir: Path,
) -> None:  # fmt: skip
    row, bucket = s3_storage(proxy=proxy)
    target = make_target(source, local_storage, row)
    earlier = services.run_backup(target)
    assert earlier.status == BackupStatus.SUCCESS, earlier.error_message
    before_disk, before_s3 = files_in(storage_dir), objects(s3_server, bucket)

    proxy.limit_connections(2 * MIB)  # every part upload is cut mid-way; small requests pass
    backup = services.run_backup(target)
    assert proxy.cuts >= 1
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith("required copy failed: offsite: ")
    assert "(after 2 retries)" in backup.error_message
    assert "TEST_S3" not in backup.error_message and s3_server.secret_key not in backup.error_message
    # Nothing of the failed run anywhere; the earlier backup untouched in both storages.
    assert objects(s3_server, bucket) == before_s3
    assert uploads(s3_server, bucket) == []  # the multipart upload was aborted
    assert files_in(storage_dir) == before_disk
    assert {c.status for c in backup.copies.all()} == {CopyStatus.FAILED}
    assert services.verify_backup(Backup.objects.get(pk=earlier.pk)).ok


def test_it_keeps_the_local_copy_when_the_link_to_an_optional_s3_is_cut_mid_upload(
    s3_server: S3Server, s3_storage: Any, proxy: CuttableProxy, source: Path, local_storage: Storage,
    storage_dir: Path,
) -> None:  # fmt: skip
    row, bucket = s3_storage(required=False, proxy=proxy)
    target = make_target(source, local_storage, row)
    proxy.limit_connections(2 * MIB)
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert "optional copy failed: offsite: " in backup.notes
    assert objects(s3_server, bucket) == [] and uploads(s3_server, bucket) == []
    assert files_in(storage_dir) == [backup.file_path, backup.file_path + ".manifest.json"]
    assert backup.copies.get(storage=row).status == CopyStatus.FAILED
    assert services.stored_copies(backup) == [backup.copies.get(storage=local_storage)]


def test_it_retries_a_failed_copy_from_the_local_copy_once_the_link_is_back(
    s3_server: S3Server, s3_storage: Any, proxy: CuttableProxy, source: Path, local_storage: Storage,
    storage_dir: Path, settings: Any,
) -> None:  # fmt: skip
    settings.BACKUPSITE_COPY_RETRY_DELAYS = [1.0, 1.0, 1.0]
    row, bucket = s3_storage(required=False, proxy=proxy)
    proxy.refuse()  # S3 unreachable when the run starts

    def restore_the_link_once_the_local_copy_is_committed() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(not name.split("/")[-1].startswith(".") for name in files_in(storage_dir)):
                proxy.allow()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=restore_the_link_once_the_local_copy_is_committed)
    watcher.start()
    backup = services.run_backup(make_target(source, local_storage, row))
    watcher.join()
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert not backup.notes
    assert objects(s3_server, bucket) == [
        f"site/{backup.file_path}",
        f"site/{backup.file_path}.manifest.json",
    ]
    copy = backup.copies.get(storage=row)
    assert copy.status == CopyStatus.STORED and copy.size == backup.file_size
    retried = backup.steps.filter(name="upload", message__startswith="storage offsite, retry")
    last = retried.last()
    assert last is not None and last.status == "success"
    assert services.verify_backup(backup).ok


def test_it_leaves_only_an_upload_the_next_run_sweeps_when_a_worker_is_killed_mid_upload(
    s3_server: S3Server, s3_bucket: Callable[..., str], source: Path, tmp_path: Path
) -> None:
    """SIGKILL during the upload: no object appears; the next run of the target sees the dead
    worker, records its run as "worker lost" and aborts the multipart upload it left."""
    bucket = s3_bucket()
    offsite = {
        "kind": "s3",
        "bucket": bucket,
        "endpoint_url": s3_server.endpoint_url,
        "region": s3_server.region,
        "addressing_style": "path",
        "access_key": "${TEST_S3_ACCESS_KEY}",
        "secret_key": "${TEST_S3_SECRET_KEY}",
        "part_size_mib": 5,
    }
    config = write_config(
        tmp_path / "backupsite.toml",
        storages={"offsite": offsite},
        targets={"app-db": {"engine": "sqlite", "database": source, "storages": ["offsite"]}},
    )
    env = {
        **os.environ,
        "BACKUPSITE_HOME": str(tmp_path / "home"),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        "TEST_S3_ACCESS_KEY": s3_server.access_key,
        "TEST_S3_SECRET_KEY": s3_server.secret_key,
        # Slow the dump down so the kill lands mid-upload: 256 KiB chunks, progress each time.
        "BACKUPSITE_CHUNK_SIZE": str(256 * 1024),
    }
    env.pop("DATABASE_URL", None)

    def manage(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO, capture_output=True, text=True,
            **kwargs,
        )  # fmt: skip

    assert manage("migrate", "--noinput").returncode == 0
    applied = manage("backup_config", "apply", str(config))
    assert applied.returncode == 0, applied.stdout + applied.stderr

    worker = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "backup_create", "--target", "app-db"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            if any(key.startswith("app-db/") for key in uploads(s3_server, bucket)):
                break
            time.sleep(0.01)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    assert [key.split("-full-")[0] for key in uploads(s3_server, bucket)] == ["app-db/app-db"]
    assert objects(s3_server, bucket) == []  # nothing under a backup's name

    again = manage("backup_create", "--target", "app-db", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    listed = manage("backup_list", "--json")
    statuses = sorted(
        (row["id"], row["status"], row["error_message"][:11]) for row in json.loads(listed.stdout)
    )
    assert statuses == [(1, "failed", "worker lost"), (2, "success", "")]
    assert uploads(s3_server, bucket) == []  # the dead worker's upload was aborted
    assert len(objects(s3_server, bucket)) == 2  # the new backup and its manifest


def test_it_redirects_a_download_from_s3_to_a_short_lived_signed_url(
    s3_storage: Any, source: Path, admin_client: Any
) -> None:
    row, _ = s3_storage()
    backup = services.run_backup(make_target(source, row))
    response = admin_client.get(f"/backups/{backup.pk}/download/")
    assert response.status_code == 302
    location = response["Location"]
    assert "X-Amz-Expires=300" in location and "X-Amz-Signature=" in location
    with urllib.request.urlopen(location, timeout=30) as signed:
        assert hashlib.sha256(signed.read()).hexdigest() == backup.checksum
    log = backup.downloads.get()
    assert (log.method, log.storage) == ("signed_url", row)


def test_it_verifies_every_copy_and_names_the_bad_one(
    s3_server: S3Server, s3_storage: Any, source: Path, local_storage: Storage
) -> None:
    row, bucket = s3_storage()
    backup = services.run_backup(make_target(source, local_storage, row))
    s3_server.client().put_object(Bucket=bucket, Key=f"site/{backup.file_path}", Body=b"not the backup")
    outcome = services.verify_backup(backup)
    assert not outcome.ok
    assert outcome.messages[0].startswith("local: ok")
    assert outcome.messages[1].startswith("offsite: ") and "14 bytes" in outcome.messages[1]
    assert Backup.objects.get(pk=backup.pk).status == BackupStatus.CORRUPT


def test_it_rebuilds_the_catalog_from_the_bucket(s3_storage: Any, source: Path) -> None:
    row, _ = s3_storage()
    backup = services.run_backup(make_target(source, row))
    checksum, path = backup.checksum, backup.file_path
    BackupCopy.objects.all().delete()
    Backup.objects.all().delete()
    Target.objects.all().delete()
    call_command("backup_reindex", "--storage", "offsite", stdout=open(os.devnull, "w"))  # noqa: SIM115
    rebuilt = Backup.objects.get()
    assert (rebuilt.checksum, rebuilt.file_path, rebuilt.status) == (checksum, path, BackupStatus.SUCCESS)
    assert services.verify_backup(rebuilt).ok


def test_it_leaves_no_sftp_session_open_after_runs_verifies_and_cleanups(
    sshd_server: SSHServer, source: Path, local_storage: Storage
) -> None:
    """Every service closes the storages it builds: no SSH session outlives its work."""
    options = sshd_server.options(str(sshd_server.fresh_dir("runs")))
    row = Storage.objects.create(name="vault", kind="sftp", options=options)
    target = make_target(source, local_storage, row)
    target.retention = {"max_backups": 1}
    target.save()

    def no_sessions() -> bool:
        deadline = time.monotonic() + 10
        while sshd_server.sessions() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not sshd_server.sessions()

    first = services.run_backup(target)
    assert first.status == BackupStatus.SUCCESS, first.error_message
    assert no_sessions()
    assert services.verify_backup(first).ok
    assert no_sessions()
    second = services.run_backup(target)
    assert second.status == BackupStatus.SUCCESS, second.error_message
    assert services.verify_backup(second).ok  # else the first stays as the newest verified backup
    assert [b.pk for b, _ in services.cleanup_target(target).delete] == [first.pk]
    assert no_sessions()


def test_it_writes_the_local_copy_from_the_streaming_thread_and_the_remote_one_from_its_own(
    s3_storage: Any, source: Path, local_storage: Storage, settings: Any
) -> None:
    settings.BACKUPSITE_PROGRESS_INTERVAL = 0  # the callback runs in the streaming thread, per chunk
    row, _ = s3_storage()
    seen: set[str] = set()

    def progress(raw: int, stored: int) -> None:
        seen.update(thread.name for thread in threading.enumerate() if thread.name.startswith("copy-"))

    backup = services.run_backup(make_target(source, local_storage, row), progress=progress)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    # A local disk's writes return at once (page cache): a thread hand-off per chunk would only
    # cost time. The S3 copy, which may wait on the network, gets a thread of its own.
    assert seen == {f"copy-{row.name}"}
    assert backup.copies.get(storage=local_storage).status == CopyStatus.STORED
