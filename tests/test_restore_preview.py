"""The restore preview (service and ``backup_restore --preview``) on real SQLite and files backups:
what a backup holds, what must be typed, what would be overwritten or refused; nothing changes."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.models import Backup, BackupStatus, CopyStatus, Storage, Target
from backups.requests import running_work
from restores import preview as preview_module
from restores.models import RestoreLog, RestoreStatus
from restores.services import preview_restore, restore_backup, run_restore, start_restore
from tests.conftest import digest, pg_target, sqlite_rows, unique_name
from tests.servers.postgres import PostgresServer

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_previews_a_sqlite_backup_as_json_and_changes_nothing(sqlite_target, copy_target):
    backup = services.run_backup(sqlite_target)
    before = digest(Path(copy_target.database))
    preview = json.loads(
        run("backup_restore", "--id", str(backup.pk), "--preview", "--to", "app-db-copy", "--json")
    )
    assert preview["backup_id"] == backup.pk and preview["engine"] == "sqlite"
    assert preview["backup_type"] == "full" and preview["source"] == "app-db"
    assert preview["stored_bytes"] == backup.file_size and preview["raw_bytes"] == backup.raw_size
    assert preview["checksum"] == backup.checksum and preview["checksum_state"] == "unverified"
    assert [table["name"] for table in preview["tables"]] == ["audit", "people"]
    assert preview["files"] is None
    assert preview["destination"] == "app-db-copy" and preview["confirm_word"] == "app-db-copy"
    assert preview["restorable"] is True and preview["problems"] == []
    assert preview["created_at"] == backup.created_at.isoformat()
    assert RestoreLog.objects.count() == 0
    assert digest(Path(copy_target.database)) == before


def test_it_prints_the_preview_in_human_units(sqlite_target):
    backup = services.run_backup(sqlite_target)
    services.verify_backup(backup)
    output = run("backup_restore", "--id", str(backup.pk), "--preview")
    assert f"Backup {backup.pk}: {backup.backup_name} (sqlite, full)" in output
    assert "KiB stored (gzip)" in output and "raw" in output
    assert "checksum     verified" in output
    assert "Destination: app-db (sqlite: " in output
    assert "to confirm, type the destination's name: app-db" in output
    assert "Overwritten: audit, people" in output  # as of app-db's own last backup
    assert output.rstrip().endswith("Preview only: nothing was restored.")
    assert RestoreLog.objects.count() == 0


def test_it_uses_the_usage_exit_code_for_a_bad_id_or_target(sqlite_target):
    backup = services.run_backup(sqlite_target)
    for args in (("--id", "999"), ("--id", str(backup.pk), "--to", "nope")):
        with pytest.raises(CommandError) as caught:
            run("backup_restore", *args, "--preview")
        assert caught.value.returncode == 2
    assert RestoreLog.objects.count() == 0


def test_it_lists_the_files_of_a_files_backup_with_their_sizes(files_target, files_tree):
    backup = services.run_backup(files_target)
    preview = preview_restore(backup)
    assert preview.files is not None
    assert {(fact.path, fact.size) for fact in preview.files.files} == {
        ("media/a.txt", 6),
        ("media/sub/b.bin", 100_000),
        ("media/sub/deeper/ünïcode name.txt", 3),
    }
    assert preview.files.total == 3 and preview.files.total_bytes == 100_009 and preview.files.note == ""
    assert preview.tables == () and preview.confirm_word == "media"
    assert preview.restorable


def test_it_caps_the_file_list_read_from_a_big_manifest(files_target, files_tree):
    many = files_tree / "many"
    many.mkdir()
    for number in range(preview_module.FILES_SHOWN + 50):
        (many / f"{number:04}.txt").write_text("x")
    backup = services.run_backup(files_target)
    listing = preview_restore(backup).files
    assert listing is not None
    assert len(listing.files) == preview_module.FILES_SHOWN
    assert listing.total == preview_module.FILES_SHOWN + 53
    assert listing.note == f"the first {preview_module.FILES_SHOWN} of {listing.total} files"


def test_it_reads_no_more_of_a_manifest_than_its_limit(files_target, monkeypatch):
    backup = services.run_backup(files_target)
    monkeypatch.setattr(preview_module, "MANIFEST_READ_LIMIT", 64)
    listing = preview_restore(backup).files
    assert listing is not None and listing.files == ()
    assert "no file index in the first 64 bytes" in listing.note
    assert listing.total == 3  # the totals come from the catalog


def test_it_lists_every_problem_that_would_refuse_the_restore(
    sqlite_target, files_target, storage_dir, tmp_path
):
    backup = services.run_backup(sqlite_target)
    (storage_dir / backup.file_path).unlink()
    services.verify_backup(backup)
    backup.refresh_from_db()
    assert backup.status == BackupStatus.CORRUPT
    preview = preview_restore(backup, files_target)
    assert preview.checksum_state == "corrupt" and not preview.restorable
    assert preview.problems == (
        f"backup {backup.pk} is corrupt; only successful backups can be restored",
        f"backup {backup.pk} is a sqlite backup; target media uses the files engine. Restore into a target "
        "of the same engine.",
    )
    directory = tmp_path / "a-directory"
    directory.mkdir()
    into_dir = Target.objects.create(name="into-dir", engine="sqlite", database=str(directory))
    backup.copies.update(status=CopyStatus.DELETED)
    problems = preview_restore(backup, into_dir).problems
    assert f"backup {backup.pk} has no stored copy" in problems
    assert any(problem.startswith("target into-dir: restore destination") for problem in problems)
    assert RestoreLog.objects.count() == 0 and list(directory.iterdir()) == []


def test_it_says_what_the_destination_held_as_of_its_last_backup(sqlite_target, copy_target):
    backup = services.run_backup(sqlite_target)
    unknown = preview_restore(backup, copy_target).overwrites
    assert unknown is not None and unknown.objects == () and unknown.recorded_by is None
    assert "cannot tell cheaply" in unknown.note and "no backup in the catalog" in unknown.note
    their_backup = services.run_backup(copy_target)
    known = preview_restore(backup, copy_target).overwrites
    assert known is not None and known.objects == ("audit", "people")
    assert known.recorded_by == their_backup.pk and known.recorded_at == their_backup.started_at


def test_it_records_progress_and_shows_queued_restores_as_running_work(
    sqlite_target, copy_target, sqlite_source
):
    backup = services.run_backup(sqlite_target)
    assert backup.file_size is not None
    queued = start_restore(backup, copy_target, initiated_by="test", confirmed_by="test")
    assert queued.total_bytes == 2 * backup.file_size and queued.started_at is None
    work = [item for item in running_work() if item.kind == "restore"]
    assert [(item.pk, item.target_id, item.total_bytes) for item in work] == [
        (queued.pk, copy_target.pk, 2 * backup.file_size)
    ]
    assert work[0].label == f"restore of backup {backup.pk} into app-db-copy (queued)"
    assert work[0].url == f"/admin/restores/restorelog/{queued.pk}/change/"
    log = run_restore(queued.pk)
    assert log is not None
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert log.progress == log.total_bytes
    assert sqlite_rows(Path(copy_target.database)) == sqlite_rows(sqlite_source)
    assert run_restore(queued.pk) is None  # a task delivered twice restores once
    assert [item for item in running_work() if item.kind == "restore"] == []


def test_it_counts_both_passes_of_a_direct_restore(sqlite_target, sqlite_source):
    backup = services.run_backup(sqlite_target)
    assert backup.file_size is not None
    log = restore_backup(backup, sqlite_target)
    assert log.status == RestoreStatus.SUCCESS and log.started_at is not None
    assert log.progress == log.total_bytes == 2 * backup.file_size
    assert Backup.objects.get(pk=backup.pk).status == BackupStatus.SUCCESS


def test_it_shows_row_counts_and_asks_for_the_database_name_on_postgresql(
    pg_server: PostgresServer, local_storage: Storage
):
    database = pg_server.create_database(unique_name("preview"))
    pg_server.execute(
        database, "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 42)"
    )
    backup = services.run_backup(pg_target(pg_server, "shop", database, local_storage))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    elsewhere = pg_target(pg_server, "shop-copy", unique_name("preview_copy"), local_storage)
    preview = preview_restore(backup, elsewhere)
    assert [(table.name, table.rows) for table in preview.tables] == [("public.items", 42)]
    assert preview.row_counts_note == "row counts are exact: what the dump holds"
    assert (preview.confirm_word, preview.confirm_what) == (elsewhere.database, "destination database's name")
    assert preview.restorable and not pg_server.database_exists(elsewhere.database)
    unreachable = pg_target(pg_server, "shop-gone", "x", local_storage, port=1)
    assert any(
        problem.startswith("target shop-gone: ") for problem in preview_restore(backup, unreachable).problems
    )
    assert RestoreLog.objects.count() == 0
