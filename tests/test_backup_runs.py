"""How runs fail: plainly, recorded on the row and its steps, with nothing left in storage."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import checks

from backups import services
from backups.engines import get_engine
from backups.engines.base import Connection, Dump, DumpOptions, Engine
from backups.humanize import human_bytes
from backups.models import Backup, BackupStatus, Target

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


class NeedsMissingToolEngine(Engine):
    """A real engine module shape whose dump tool is not installed on this machine."""

    key = "needs-tool"
    label = "Needs a tool"
    binaries = ("backupsite-no-such-dump-tool",)

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        raise AssertionError("never reached: the validate step stops the run first")
        yield  # pragma: no cover


class SilentToolEngine(Engine):
    """Streams the stdout of a real program that exits 0 without writing anything."""

    key = "silent"
    label = "Silent tool"
    binaries = ("true",)

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        with subprocess.Popen(["true"], stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            yield Dump(stream=proc.stdout)  # type: ignore[arg-type]


@pytest.fixture
def test_engines(settings):
    settings.BACKUPSITE_ENGINES = {
        "needs-tool": f"{__name__}.NeedsMissingToolEngine",
        "silent": f"{__name__}.SilentToolEngine",
    }
    get_engine.cache_clear()
    yield
    get_engine.cache_clear()


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_it_fails_an_empty_dump_and_leaves_nothing(test_engines, local_storage, storage_dir):
    target = Target.objects.create(name="silent", engine="silent")
    target.storages.add(local_storage)
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message == "the dump is empty: the source produced no data"
    assert backup.steps.get(name="dump").status == "failed"
    assert stored_files(storage_dir) == []


def test_it_fails_the_run_in_validate_on_an_unwritable_storage(sqlite_target, local_storage, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    local_storage.options = {"path": str(blocker / "backups")}
    local_storage.save()
    backup = services.run_backup(sqlite_target)
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(f"local: cannot create directory {blocker / 'backups'}")
    assert [s.name for s in backup.steps.all()] == ["validate"]


def test_it_fails_a_target_without_storage_with_the_fix(sqlite_target):
    sqlite_target.storages.clear()
    backup = services.run_backup(sqlite_target)
    assert backup.error_message == "target app-db has no storage; list one in targets.app-db.storages"


def test_it_fails_the_run_on_an_unset_secret_naming_the_variable(sqlite_target, monkeypatch):
    monkeypatch.delenv("APP_DB_PASSWORD", raising=False)
    sqlite_target.password = "${APP_DB_PASSWORD}"
    sqlite_target.save()
    backup = services.run_backup(sqlite_target)
    assert backup.error_message == "target app-db: environment variable APP_DB_PASSWORD is not set"


def test_it_keeps_a_resolved_secret_out_of_the_catalog(sqlite_target, monkeypatch, files_tree, caplog):
    secret = "s3cr3t-value-that-must-not-leak"
    monkeypatch.setenv("MEDIA_ROOT_SECRET", secret)
    target = Target.objects.create(
        name="leaky",
        engine="files",
        paths=[str(files_tree / "missing")],
        options={"token": "${MEDIA_ROOT_SECRET}"},
    )
    target.storages.set(sqlite_target.storages.all())
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    rows = [backup.error_message, *(s.message for s in backup.steps.all())]
    rows += [str(v) for v in Target.objects.filter(pk=target.pk).values().get().values()]
    assert not any(secret in row for row in rows)
    assert secret not in caplog.text


def test_it_reports_a_missing_dump_tool_as_a_system_check_error_and_a_failed_run(test_engines, local_storage):
    target = Target.objects.create(name="tool", engine="needs-tool")
    target.storages.add(local_storage)
    errors = [e for e in checks.run_checks() if e.id == "backups.E001"]
    assert len(errors) == 1
    assert "'backupsite-no-such-dump-tool', which is not on PATH" in errors[0].msg
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message == "required program(s) not installed: backupsite-no-such-dump-tool"


def test_it_records_progress_on_the_row(sqlite_target, settings):
    settings.BACKUPSITE_PROGRESS_INTERVAL = 0
    settings.BACKUPSITE_CHUNK_SIZE = 4096
    seen: list[int] = []
    backup = services.run_backup(sqlite_target, progress=lambda raw, stored: seen.append(raw))
    assert len(seen) > 2 and seen == sorted(seen)
    assert Backup.objects.get(pk=backup.pk).progress == backup.raw_size == seen[-1]


def test_it_says_in_the_dump_step_where_the_time_went(sqlite_target):
    backup = services.run_backup(sqlite_target)
    assert backup.status == BackupStatus.SUCCESS
    message = backup.steps.get(name="dump").message
    # e.g. "20.0 KiB from SQLite in 0.00 s (5.4 MiB/s): first byte after 0.00 s" (a run this
    # small has no pace to speak of; a long one ends "...; paced by the source")
    assert message.startswith(f"{human_bytes(backup.raw_size)} from SQLite in ")
    assert "first byte after" in message and "paced by" not in message
