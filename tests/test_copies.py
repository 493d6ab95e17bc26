"""Several copies per backup: every copy stored and confirmed, failed copies retried from a good
one, required vs optional storages, and nothing left behind by a failed run.

A full disk is a real one: a small tmpfs mounted for the test (needs root; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from backups import services
from backups.models import Backup, BackupCopy, BackupStatus, BackupStep, CopyStatus, Storage, Target
from tests.conftest import fill_sqlite

pytestmark = pytest.mark.catalog


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill a disk for real: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def files_in(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.fixture
def big_source(tmp_path: Path) -> Path:
    """A SQLite database of ~3 MiB of incompressible rows: more than the small disk holds."""
    path = fill_sqlite(tmp_path / "big.sqlite3", rows=10)
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE blobs (data BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(64 * 1024),) for _ in range(48)])
        conn.commit()
    return path


def target_with(source: Path, *storages: Storage) -> Target:
    target = Target.objects.create(name="app-db", engine="sqlite", database=str(source))
    target.storages.add(*storages)
    return target


def local(name: str, path: Path, required: bool = True) -> Storage:
    return Storage.objects.create(name=name, kind="local", options={"path": str(path)}, required=required)


@pytest.mark.django_db
def test_it_stores_and_confirms_a_copy_in_every_storage(tmp_path: Path, big_source: Path) -> None:
    first, second = local("first", tmp_path / "one"), local("second", tmp_path / "two")
    backup = services.run_backup(target_with(big_source, first, second))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message

    copies = list(backup.copies.order_by("storage__name"))
    assert [(c.storage.name, c.status, c.size) for c in copies] == [
        ("first", CopyStatus.STORED, backup.file_size),
        ("second", CopyStatus.STORED, backup.file_size),
    ]
    for root in (tmp_path / "one", tmp_path / "two"):
        assert files_in(root) == [backup.file_path, backup.file_path + ".manifest.json"]
    uploads = backup.steps.filter(name="upload").order_by("id")
    assert [step.message.split(":")[0] for step in uploads] == ["storage first", "storage second"]
    assert "2 copies re-read: size and sha256 match" in backup.steps.get(name="verify").message
    outcome = services.verify_backup(backup)
    assert outcome.ok and [m.split(":")[0] for m in outcome.messages] == ["first", "second"]
    out = StringIO()
    call_command("backup_list", "--json", stdout=out)
    (listed,) = json.loads(out.getvalue())
    assert [(c["storage"], c["status"], c["size"]) for c in listed["copies"]] == [
        ("first", "stored", backup.file_size),
        ("second", "stored", backup.file_size),
    ]


@pytest.mark.django_db
def test_it_fails_the_run_on_a_full_disk_of_a_required_storage_and_leaves_nothing(
    tmp_path: Path, big_source: Path
) -> None:
    with small_disk(tmp_path / "small", "1m") as small:
        roomy = local("roomy", tmp_path / "roomy")
        backup = services.run_backup(target_with(big_source, roomy, local("small", small)))
        assert backup.status == BackupStatus.FAILED
        assert "required copy failed: small:" in backup.error_message
        assert "No space left on device" in backup.error_message
        assert "(after 2 retries)" in backup.error_message
        assert files_in(small) == []  # no partial file
        assert files_in(tmp_path / "roomy") == []  # the good copy is removed too: nothing half-done
    assert set(backup.copies.values_list("status", flat=True)) == {CopyStatus.FAILED}
    retries = BackupStep.objects.filter(backup=backup, name="upload", message__contains="retry")
    assert retries.count() == 2 and all(step.status == "failed" for step in retries)


@pytest.mark.django_db
def test_it_notes_a_failed_optional_copy_and_lets_the_backup_succeed(
    tmp_path: Path, big_source: Path
) -> None:
    with small_disk(tmp_path / "small", "1m") as small:
        roomy = local("roomy", tmp_path / "roomy")
        backup = services.run_backup(target_with(big_source, roomy, local("small", small, required=False)))
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert files_in(small) == []
    assert "optional copy failed: small: " in backup.notes
    small_copy = backup.copies.get(storage__name="small")
    assert small_copy.status == CopyStatus.FAILED
    assert "No space left on device" in small_copy.error_message
    assert services.stored_copies(backup) == [backup.copies.get(storage__name="roomy")]
    assert services.verify_backup(backup).ok


@pytest.mark.django_db
def test_it_retries_a_copy_that_failed_mid_stream_from_a_good_copy(
    tmp_path: Path, big_source: Path, settings
) -> None:
    """The disk fills up during the stream; space is freed; the retry copies from the good copy."""
    settings.BACKUPSITE_COPY_RETRY_DELAYS = [1.0, 1.0]
    with small_disk(tmp_path / "small", "6m") as small:
        ballast = small / "ballast"
        ballast.write_bytes(os.urandom(5 * 1024 * 1024))
        freed = threading.Event()

        def free_space_after_the_failure() -> None:
            seen_partial = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                partials = [p for p in small.rglob(".*partial-*")]
                seen_partial = seen_partial or bool(partials)
                if seen_partial and not partials:  # the failed upload was aborted
                    ballast.unlink()
                    freed.set()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=free_space_after_the_failure)
        watcher.start()
        backup = services.run_backup(
            target_with(big_source, local("roomy", tmp_path / "roomy"), local("small", small))
        )
        watcher.join()
        assert freed.is_set()
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert files_in(small) == [backup.file_path, backup.file_path + ".manifest.json"]
    steps = list(backup.steps.filter(name="upload").order_by("id").values_list("message", "status"))
    assert steps[0][0].startswith("storage roomy") and steps[0][1] == "success"
    assert steps[-1][0].startswith("storage small, retry 1") and steps[-1][1] == "success"
    assert "failed: small: " in backup.steps.get(name="verify").message
    assert backup.copies.get(storage__name="small").status == CopyStatus.STORED


@pytest.mark.django_db
def test_it_stops_the_dump_and_fails_the_run_when_every_copy_fails(tmp_path: Path, big_source: Path) -> None:
    with small_disk(tmp_path / "a", "1m") as a, small_disk(tmp_path / "b", "1m") as b:
        backup = services.run_backup(target_with(big_source, local("a", a), local("b", b)))
        assert backup.status == BackupStatus.FAILED
        assert backup.error_message.startswith("every copy failed: a: ")
        assert files_in(a) == [] and files_in(b) == []
    assert backup.steps.get(name="dump").status == "failed"


@pytest.mark.django_db
def test_it_fails_before_the_dump_when_a_required_storage_is_unwritable_at_start(
    tmp_path: Path, big_source: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    backup = services.run_backup(
        target_with(big_source, local("good", tmp_path / "good"), local("bad", blocker))
    )
    assert backup.status == BackupStatus.FAILED
    assert "bad:" in backup.error_message and "a-file" in backup.error_message
    assert not backup.steps.filter(name="dump").exists()
    assert files_in(tmp_path / "good") == []


@pytest.mark.django_db
def test_it_probes_a_required_storage_once_while_this_worker_has_just_found_it_down(
    tmp_path: Path, big_source: Path, settings
) -> None:
    """An outage must not hold every worker for the retries on every run: once a worker found
    a required storage unreachable after every retry, its next runs probe it once and fail at
    once, until it answers again."""
    settings.BACKUPSITE_COPY_RETRY_DELAYS = [0.4, 0.4]
    settings.BACKUPSITE_STORAGE_DOWN_SECONDS = 300
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = target_with(big_source, local("bad", blocker / "sub"))

    def timed_run() -> tuple[Backup, float]:
        started = time.monotonic()
        backup = services.run_backup(target)
        return backup, time.monotonic() - started

    first, waited = timed_run()
    assert first.status == BackupStatus.FAILED and waited >= 0.8
    assert "not retried" not in first.error_message
    second, waited = timed_run()
    assert second.status == BackupStatus.FAILED and waited < 0.8, waited
    assert (
        "bad:" in second.error_message
        and "not retried: this worker found it unreachable" in second.error_message
    )
    blocker.unlink()  # the storage answers again: the next run is a normal one
    third = services.run_backup(target)
    assert third.status == BackupStatus.SUCCESS, third.error_message


@pytest.mark.django_db
def test_it_retries_then_notes_an_optional_storage_unwritable_at_start(
    tmp_path: Path, big_source: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = local("bad", blocker / "sub", required=False)
    backup = services.run_backup(target_with(big_source, local("good", tmp_path / "good"), bad))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert "optional copy failed: bad: " in backup.notes
    assert BackupStep.objects.filter(backup=backup, message__startswith="storage bad, retry").count() == 2


@pytest.mark.django_db
def test_it_deletes_every_copy_and_its_manifest_on_cleanup(tmp_path: Path, big_source: Path) -> None:
    target = target_with(big_source, local("one", tmp_path / "one"), local("two", tmp_path / "two"))
    target.retention = {"max_backups": 1}
    target.save()
    old = services.run_backup(target)
    assert old.started_at is not None
    Backup.objects.filter(pk=old.pk).update(started_at=old.started_at.replace(year=2020))
    new = services.run_backup(target)
    plan = services.cleanup_target(target)
    assert [b.pk for b, _ in plan.delete] == [old.pk] and not plan.errors
    for root in (tmp_path / "one", tmp_path / "two"):
        assert files_in(root) == [new.file_path, new.file_path + ".manifest.json"]
    assert set(BackupCopy.objects.filter(backup=old).values_list("status", flat=True)) == {CopyStatus.DELETED}


@pytest.mark.django_db
def test_it_sweeps_upload_leftovers_older_than_a_day_on_cleanup(tmp_path: Path, big_source: Path) -> None:
    """What a worker killed mid-upload on another host leaves: swept once it is a day old."""
    storage = local("one", tmp_path / "one")
    target_with(big_source, storage)
    folder = tmp_path / "one" / "app-db"
    folder.mkdir(parents=True)
    old = folder / ".app-db-full-1.sqlite3.gz.partial-0123456789ab"
    young = folder / ".app-db-full-2.sqlite3.gz.partial-ba9876543210"
    old.write_bytes(b"half")
    young.write_bytes(b"half")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    removed, errors = services.sweep_storages()
    assert removed == ["storage one: removed 1 leftover upload(s) older than 1 day, 0:00:00"] and not errors
    assert not old.exists() and young.exists()
