"""backup_reindex reads manifests as untrusted input (issue 18): every field is validated as the
TOML file and the admin validate theirs, a manifest that fails is skipped with its reason, the
others are still indexed, and the exit status says whether anything was skipped."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from backups import catalog, services
from backups.models import Backup, BackupCopy, BackupStep, Storage, Target
from tests.conftest import fill_sqlite

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def lose_the_catalog() -> None:
    BackupStep.objects.all().delete()
    BackupCopy.objects.all().delete()
    Backup.objects.all().delete()
    Target.objects.all().delete()


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("backup_reindex", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def forge(
    storage_dir: Path, source: Backup, name: str, target: dict[str, Any] | None = None, **record: Any
) -> str:
    """A copy of ``source``'s file named ``name`` beside it, with ``source``'s manifest changed as
    asked (``record`` fields of the backup, ``target`` fields); returns the manifest's path."""
    path = f"{Path(source.file_path).parent}/{name}"
    manifest = json.loads((storage_dir / f"{source.file_path}.manifest.json").read_text())
    shutil.copyfile(storage_dir / source.file_path, storage_dir / path)
    manifest["backup"].update({"file_path": path, "id": None, **record})
    manifest["target"].update(target or {})
    (storage_dir / f"{path}.manifest.json").write_text(json.dumps(manifest))
    return f"{path}.manifest.json"


HOSTILE: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # name, target fields, record fields, the reason reported
    ("evil", {"name": "../../evil"}, {}, "target.name: '../../evil' is not a valid target name"),
    ("nosuch", {"engine": "nosuch"}, {}, "target.engine: 'nosuch' is not an engine registered here"),
    ("no-name", {"name": None}, {}, "target.name: missing"),
    ("huge-id", {}, {"id": 2**70}, "backup.id: must be a whole number from 1 to 9223372036854775807"),
    ("bool-id", {}, {"id": True}, "backup.id: must be a whole number"),
    ("huge-size", {}, {"file_size": 2**70}, "backup.file_size: must be a whole number from 0 to"),
    ("minus-size", {}, {"raw_size": -1}, "backup.raw_size: must be a whole number from 0 to"),
    (
        "days",
        {},
        {"retention_days": 2**40},
        "backup.retention_days: must be a whole number from 0 to 2147483647",
    ),
    ("date", {}, {"started_at": "yesterday"}, "backup.started_at: 'yesterday' is not a date and time"),
    (
        "bad-day",
        {},
        {"expires_at": "2026-02-30T00:00:00+00:00"},
        "backup.expires_at: '2026-02-30T00:00:00+00:00' is not a date and time with a UTC offset",
    ),
    (
        "naive",
        {},
        {"completed_at": "2026-01-01T00:00:00"},
        "backup.completed_at: '2026-01-01T00:00:00' is not a date and time with a UTC offset",
    ),
    ("checksum", {}, {"checksum": "abc"}, "backup.checksum: not a SHA-256"),
    ("type", {}, {"backup_type": "nosuch"}, "backup.backup_type: 'nosuch' is not one of full, database"),
    ("codec", {}, {"compression": "rar"}, "backup.compression: 'rar' is not one of"),
    ("seconds", {}, {"duration_seconds": "fast"}, "backup.duration_seconds: must be a number of seconds"),
    ("verified", {}, {"verified": "yes"}, "backup.verified: must be true or false"),
    ("tables", {}, {"tables_included": "people"}, "backup.tables_included: must be a list"),
    ("long", {}, {"backup_name": "x" * 300}, "backup.backup_name: longer than 255 characters"),
    ("nul", {}, {"notes": "a\x00b"}, "backup.notes: must be text"),
    ("base", {}, {"base_file_path": 5}, "backup.base_file_path: must be the path of a backup file"),
]


def test_it_skips_each_hostile_manifest_with_its_reason_and_indexes_the_rest(
    sqlite_target: Target, local_storage: Storage, storage_dir: Path
) -> None:
    good = services.run_backup(sqlite_target)
    lose_the_catalog()
    expected = {
        forge(storage_dir, good, f"{name}.sqlite3.gz", target, **record): reason
        for name, target, record, reason in HOSTILE
    }
    info = forge(storage_dir, good, "info.sqlite3.gz")
    manifest = json.loads((storage_dir / info).read_text())
    (storage_dir / info).write_text(json.dumps({**manifest, "engine_info": ["not", "an", "object"]}))
    expected[info] = "engine_info: must be a JSON object"
    deep = forge(storage_dir, good, "deep.sqlite3.gz")
    (storage_dir / deep).write_text("[" * 100_000 + "]" * 100_000)
    expected[deep] = "not a readable Backupsite manifest"
    fine = forge(storage_dir, good, "fine.sqlite3.gz")

    code, output = run("--storage", "local")
    assert code == 1, output
    assert f"{len(expected)} manifest(s) skipped; everything else was indexed" in output
    for path, reason in expected.items():
        assert f"skipped: {path}: {reason}" in output, (path, reason, output)
    # The real manifest and the forged one that is fine were indexed, after every hostile one.
    indexed = sorted(Backup.objects.values_list("file_path", flat=True))
    assert indexed == sorted([good.file_path, fine.removesuffix(".manifest.json")])
    assert Backup.objects.get(file_path=good.file_path).pk == good.pk
    assert list(Target.objects.values_list("name", "engine")) == [("app-db", "sqlite")]

    code, output = run("--storage", "local")  # nothing changed: the same report, nothing twice
    assert code == 1 and "0 created, 2 already known" in output
    assert f"{len(expected)} skipped" in output


def test_it_never_attaches_a_manifest_to_a_target_of_another_engine(
    sqlite_target: Target, local_storage: Storage, storage_dir: Path
) -> None:
    good = services.run_backup(sqlite_target)
    lose_the_catalog()
    Target.objects.create(name="app-db", engine="sqlite", database="/srv/app.sqlite3")  # the config again
    other = forge(storage_dir, good, "other.sqlite3.gz", {"engine": "postgresql"})

    report = catalog.reindex_storage(local_storage)
    assert report.skipped == [
        f"{other}: target 'app-db' uses the sqlite engine; the manifest says postgresql: not attached to it"
    ]
    assert list(Backup.objects.values_list("file_path", flat=True)) == [good.file_path]
    assert report.complete is False


def test_it_skips_manifests_whose_target_differs_only_in_case_and_goes_on(
    sqlite_target: Target, local_storage: Storage, storage_dir: Path, tmp_path: Path
) -> None:
    mine = services.run_backup(sqlite_target)
    second = Target.objects.create(
        name="other-db", engine="sqlite", database=str(fill_sqlite(tmp_path / "other.sqlite3", rows=5))
    )
    second.storages.add(local_storage)
    theirs = services.run_backup(second)
    lose_the_catalog()
    Target.objects.create(name="App-DB", engine="sqlite", database="/srv/app.sqlite3")

    code, output = run("--storage", "local")
    assert code == 1
    assert (
        f"skipped: {mine.file_path}.manifest.json: it names target 'app-db', but the target here is "
        "'App-DB' (names differ only in case); rename the target to match the manifests and run again"
    ) in output
    assert list(Backup.objects.values_list("pk", "target__name")) == [(theirs.pk, "other-db")]


def test_it_checks_a_dry_run_as_it_checks_the_real_run(
    sqlite_target: Target, local_storage: Storage, storage_dir: Path
) -> None:
    good = services.run_backup(sqlite_target)
    lose_the_catalog()
    files = forge(storage_dir, good, "z-files.sqlite3.gz", {"engine": "files"})
    upper = forge(storage_dir, good, "z-upper.sqlite3.gz", {"name": "APP-DB"})

    dry = catalog.reindex_storage(local_storage, dry_run=True)
    assert not Target.objects.exists() and not Backup.objects.exists()
    real = catalog.reindex_storage(local_storage)
    assert (
        dry.skipped
        == real.skipped
        == [
            f"{files}: target 'app-db' uses the sqlite engine; the manifest says files: not attached to it",
            f"{upper}: it names target 'APP-DB', but the target here is 'app-db' (names differ only in case); "
            "rename the target to match the manifests and run again",
        ]
    )
    assert dry.targets_created == real.targets_created == ["app-db (sqlite, inactive)"]
