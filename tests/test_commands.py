"""Management commands: exit codes, machine-clean JSON, progress on a terminal, failures."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.models import Backup, BackupStatus, CopyStatus, Target
from restores.models import RestoreLog
from tests.conftest import REPO, fill_sqlite, sqlite_rows

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def exit_code(*args: str) -> int:
    with pytest.raises(CommandError) as caught:
        run(*args)
    return caught.value.returncode


def test_it_backs_up_every_active_target_and_reports_json(sqlite_target, files_target):
    records = json.loads(run("backup_create", "--json"))
    assert sorted(r["target"] for r in records) == ["app-db", "media"]
    assert all(r["status"] == "success" for r in records)
    backup = Backup.objects.get(target=sqlite_target)
    assert [s.name for s in backup.steps.all()] == [
        "validate",
        "dump",
        "compress",
        "upload",
        "verify",
        "manifest",
    ]
    assert all(s.status == "success" for s in backup.steps.all())
    assert backup.copies.get().status == CopyStatus.STORED
    assert backup.tables_included == ["audit", "people"]
    assert backup.checksum and backup.file_size and backup.raw_size


def test_it_keeps_backing_up_the_other_targets_when_one_fails(
    sqlite_target, files_target, sqlite_source, storage_dir
):
    sqlite_source.unlink()
    with pytest.raises(CommandError) as caught:
        run("backup_create")
    assert caught.value.returncode == 1
    failed = Backup.objects.get(target=sqlite_target)
    assert failed.status == BackupStatus.FAILED
    assert failed.error_message == f"SQLite database {sqlite_source} does not exist"
    assert failed.steps.get(name="validate").status == "failed"
    assert Backup.objects.get(target=files_target).status == BackupStatus.SUCCESS
    assert not (storage_dir / "app-db").exists()


def test_it_rejects_unknown_targets_and_types(sqlite_target):
    assert exit_code("backup_create", "--target", "nope") == 2
    assert exit_code("backup_create", "--target", "app-db", "--type", "files") == 2
    assert Backup.objects.count() == 0


def test_it_rejects_unknown_ids_in_verify_and_restore(sqlite_target):
    assert exit_code("backup_verify", "--id", "999") == 2
    assert exit_code("backup_restore", "--id", "999", "--yes") == 2


def test_it_refuses_to_restore_into_another_engine(sqlite_target, files_target):
    backup = services.run_backup(sqlite_target)
    with pytest.raises(CommandError) as caught:
        run("backup_restore", "--id", str(backup.pk), "--to", "media", "--yes")
    assert caught.value.returncode == 2
    assert "uses the files engine" in str(caught.value)
    assert RestoreLog.objects.count() == 0


def test_it_refuses_to_restore_into_a_directory_as_database_path(sqlite_target, tmp_path, local_storage):
    backup = services.run_backup(sqlite_target)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    Target.objects.create(name="into-dir", engine="sqlite", database=str(directory))
    with pytest.raises(CommandError) as caught:
        run("backup_restore", "--id", str(backup.pk), "--to", "into-dir", "--yes")
    assert caught.value.returncode == 2
    assert "is a directory" in str(caught.value)
    assert list(directory.iterdir()) == [] and RestoreLog.objects.count() == 0


def test_it_needs_yes_to_restore_when_not_on_a_terminal(sqlite_target, monkeypatch):
    backup = services.run_backup(sqlite_target)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115
    with pytest.raises(CommandError) as caught:
        run("backup_restore", "--id", str(backup.pk))
    assert caught.value.returncode == 2
    assert "--yes" in str(caught.value)


def test_it_replaces_the_sources_data_when_restoring_into_it(sqlite_target, sqlite_source):
    before = sqlite_rows(sqlite_source)
    backup = services.run_backup(sqlite_target)
    fill_sqlite(sqlite_source, rows=10)  # changes after the backup
    assert sqlite_rows(sqlite_source) != before
    outcome = json.loads(run("backup_restore", "--id", str(backup.pk), "--yes", "--json"))
    assert outcome["status"] == "success"
    assert sqlite_rows(sqlite_source) == before
    log = RestoreLog.objects.get()
    assert log.tables_restored == ["audit", "people"] and log.confirmed_by.endswith("(--yes)")


def test_it_marks_a_backup_corrupt_when_verify_finds_its_file_missing(sqlite_target, storage_dir):
    backup = services.run_backup(sqlite_target)
    (storage_dir / backup.file_path).unlink()
    assert exit_code("backup_verify", "--id", str(backup.pk)) == 1
    backup.refresh_from_db()
    assert backup.status == BackupStatus.CORRUPT and "does not exist" in backup.error_message


def test_it_filters_the_list_and_rejects_a_bad_status(sqlite_target):
    services.run_backup(sqlite_target)
    assert len(json.loads(run("backup_list", "--status", "SUCCESS", "--json"))) == 1
    assert json.loads(run("backup_list", "--status", "failed", "--json")) == []
    assert exit_code("backup_list", "--status", "great") == 2
    assert "app-db" in run("backup_list")


def test_it_keeps_max_backups_and_the_newest_on_cleanup(sqlite_target, storage_dir):
    sqlite_target.retention = {"max_backups": 2}
    sqlite_target.save()
    backups = [services.run_backup(sqlite_target) for _ in range(4)]
    plan = json.loads(run("backup_cleanup", "--dry-run", "--json"))["targets"][0]
    assert [d["id"] for d in plan["delete"]] == [backups[1].pk, backups[0].pk]
    assert all((storage_dir / b.file_path).exists() for b in backups)
    run("backup_cleanup", "--target", "app-db")
    for backup in backups:
        backup.refresh_from_db()
    assert [b.deleted_at is not None for b in backups] == [True, True, False, False]
    assert not (storage_dir / backups[0].file_path).exists()
    assert not (storage_dir / f"{backups[0].file_path}.manifest.json").exists()
    assert (storage_dir / backups[3].file_path).exists()
    assert backups[0].copies.get().status == CopyStatus.DELETED


def test_it_never_deletes_the_newest_success_on_cleanup(sqlite_target):
    from datetime import timedelta

    sqlite_target.retention = {"retention_days": 1}
    sqlite_target.save()
    backups = [services.run_backup(sqlite_target) for _ in range(2)]
    Backup.objects.filter(pk=backups[0].pk).update(started_at=backups[1].created_at - timedelta(days=3))
    Backup.objects.filter(pk=backups[1].pk).update(started_at=backups[1].created_at - timedelta(days=2))
    run("backup_cleanup")
    assert [Backup.objects.get(pk=b.pk).deleted_at is None for b in backups] == [False, True]


def test_it_skips_a_second_run_of_the_same_target_while_one_runs(sqlite_target):
    running = Backup.objects.create(target=sqlite_target, backup_name="running", status=BackupStatus.RUNNING)
    skipped = services.run_backup(sqlite_target)
    assert skipped.status == BackupStatus.SKIPPED
    assert "already running" in skipped.notes
    running.delete()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill up needs root")
def test_it_fails_the_run_on_a_full_disk_and_leaves_no_partial_file(local_storage, tmp_path, storage_dir):
    storage_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(storage_dir)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        source = tmp_path / "big"
        source.mkdir()
        (source / "random.bin").write_bytes(os.urandom(2 * 1024 * 1024))
        target = Target.objects.create(name="big", engine="files", paths=[str(source)], compression="none")
        target.storages.add(local_storage)
        backup = services.run_backup(target)
        assert backup.status == BackupStatus.FAILED
        assert "No space left on device" in backup.error_message
        assert [p for p in storage_dir.rglob("*") if p.is_file()] == []
        assert backup.copies.get().status == CopyStatus.FAILED
    finally:
        subprocess.run(["umount", str(storage_dir)], check=True)


def _pty_run(
    args: list[str], env: dict[str, str], answer: str | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run manage.py with a pseudo-terminal as stdin/stdout; type ``answer`` at a prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), *args], stdin=follower, stdout=follower, stderr=follower,
        env=env, cwd=REPO,
    )  # fmt: skip
    os.close(follower)
    output, deadline, answered = b"", time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if answer is not None and not answered and b"to continue:" in output:
                os.write(leader, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(leader)
    return code, output.decode(errors="replace")


@pytest.fixture
def cli_env(manage, tmp_path: Path, sqlite_source: Path, toml_config: Callable[..., Path]) -> dict[str, str]:
    config = toml_config(
        targets={
            "app-db": {"engine": "sqlite", "database": sqlite_source, "storages": ["local"]},
            "copy": {
                "engine": "sqlite",
                "database": tmp_path / "copy.sqlite3",
                "storages": ["local"],
                "is_active": False,
            },
        }
    )
    assert manage("backup_config", "apply", str(config)).returncode == 0
    return {
        **os.environ,
        "BACKUPSITE_HOME": str(tmp_path / "home"),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
    }


def test_it_shows_progress_on_a_terminal_and_asks_before_restoring(cli_env, tmp_path, sqlite_source):
    code, output = _pty_run(["backup_create"], cli_env)
    assert code == 0, output
    assert "\r\x1b[2Kapp-db: " in output and "elapsed" in output  # the live progress line
    assert "backup 1 succeeded" in output

    code, output = _pty_run(["backup_restore", "--id", "1", "--to", "copy"], cli_env, answer="wrong")
    assert code == 2 and "confirmation did not match" in output
    assert not (tmp_path / "copy.sqlite3").exists()

    code, output = _pty_run(["backup_restore", "--id", "1", "--to", "copy"], cli_env, answer="copy")
    assert code == 0, output
    assert sqlite_rows(tmp_path / "copy.sqlite3") == sqlite_rows(sqlite_source)


def test_it_keeps_json_output_machine_clean_on_a_terminal(cli_env):
    code, output = _pty_run(["backup_create", "--json"], cli_env)
    assert code == 0
    assert "\x1b" not in output
    assert json.loads(output)[0]["status"] == "success"
