"""The whole product through its real command line: config -> create -> list -> verify ->
corruption detected -> restore into another target -> data equal to the source."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests import config_builder
from tests.conftest import fill_sqlite, sqlite_rows


def write_config(tmp_path: Path, source: Path, media: Path) -> Path:
    return config_builder.write_config(
        tmp_path / "backupsite.toml",
        storage_dir=tmp_path / "backups",
        targets={
            "app-db": {"engine": "sqlite", "database": source, "storages": ["local"]},
            "app-db-restore": {
                "engine": "sqlite",
                "database": tmp_path / "restored" / "app.sqlite3",
                "storages": ["local"],
                "is_active": False,
            },
            "media": {"engine": "files", "paths": [media], "storages": ["local"], "compression": "zstd"},
        },
    )


def test_it_backs_up_verifies_detects_corruption_and_restores(manage, tmp_path, files_tree):
    source = fill_sqlite(tmp_path / "app.sqlite3", rows=500)
    config = write_config(tmp_path, source, files_tree)

    applied = manage("backup_config", "apply", str(config), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["created"] == [
        "storage local",
        "target app-db",
        "target app-db-restore",
        "target media",
    ]

    created = manage("backup_create", "--json")
    assert created.returncode == 0, created.stderr + created.stdout
    records = {r["target"]: r for r in json.loads(created.stdout)}
    assert set(records) == {"app-db", "media"}  # the inactive restore target is not backed up
    assert all(r["status"] == "success" for r in records.values())
    first = records["app-db"]
    stored = tmp_path / "backups" / first["file_path"]
    assert stored.name.endswith(".sqlite3.gz")
    assert Path(f"{stored}.manifest.json").is_file()

    listed = manage("backup_list", "--target", "app-db", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [first["id"]]
    assert json.loads(listed.stdout)[0]["checksum"] == first["checksum"]

    # The stored file is a plain gzip of a valid SQLite database, readable with standard tools.
    by_hand = tmp_path / "by-hand.sqlite3"
    with by_hand.open("wb") as out:
        subprocess.run(["gzip", "-dc", str(stored)], stdout=out, check=True)
    check = subprocess.run(
        ["sqlite3", str(by_hand), "PRAGMA integrity_check"], capture_output=True, text=True
    )
    assert check.stdout.strip() == "ok"
    assert sqlite_rows(by_hand) == sqlite_rows(source)
    media_file = tmp_path / "backups" / records["media"]["file_path"]
    unzstd = subprocess.run(["zstd", "-dc", str(media_file)], capture_output=True, check=True)
    listing = subprocess.run(["tar", "-tf", "-"], input=unzstd.stdout, capture_output=True, check=True)
    assert "media/sub/b.bin" in listing.stdout.decode()

    verified = manage("backup_verify", "--id", str(first["id"]), "--deep", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["verified"] is True

    second = json.loads(manage("backup_create", "--target", "app-db", "--json").stdout)[0]
    assert second["status"] == "success"

    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    corrupt = manage("backup_verify", "--id", str(first["id"]), "--json")
    assert corrupt.returncode == 1
    report = json.loads(corrupt.stdout)
    assert report["ok"] is False and report["status"] == "corrupt"
    assert "checksum mismatch" in " ".join(report["messages"])
    refused = manage("backup_restore", "--id", str(first["id"]), "--to", "app-db-restore", "--yes")
    assert refused.returncode == 2
    assert "corrupt" in refused.stderr

    restored = manage(
        "backup_restore", "--id", str(second["id"]), "--to", "app-db-restore", "--yes", "--json"
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    outcome = json.loads(restored.stdout)
    assert outcome["status"] == "success"
    assert outcome["tables_restored"] == ["audit", "people"]
    assert sqlite_rows(tmp_path / "restored" / "app.sqlite3") == sqlite_rows(source)


def test_it_restores_files_into_another_directory(manage, tmp_path, files_tree, toml_config):
    config = toml_config(
        "files.toml",
        targets={
            "media": {"engine": "files", "paths": [files_tree], "storages": ["local"]},
            "media-copy": {
                "engine": "files",
                "paths": [tmp_path / "copy"],
                "storages": ["local"],
                "is_active": False,
            },
        },
    )
    assert manage("backup_config", "apply", str(config)).returncode == 0
    backup = json.loads(manage("backup_create", "--target", "media", "--json").stdout)[0]
    assert backup["status"] == "success"
    assert backup["files_included"] == [str(files_tree)]
    result = manage("backup_restore", "--id", str(backup["id"]), "--to", "media-copy", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    copy = tmp_path / "copy"
    assert (copy / "a.txt").read_text() == "hello\n"
    assert (copy / "sub" / "b.bin").read_bytes() == (files_tree / "sub" / "b.bin").read_bytes()
    assert (copy / "link").is_symlink()
    assert (copy / "empty-dir").is_dir()


def test_it_keeps_the_app_database_usable_while_backing_it_up(manage, tmp_path, toml_config):
    """The demo backs up Backupsite's own database while it records the run in it."""
    home_db = tmp_path / "home" / "backupsite.sqlite3"
    config = toml_config(
        "self.toml", targets={"self": {"engine": "sqlite", "database": home_db, "storages": ["local"]}}
    )
    assert manage("backup_config", "apply", str(config)).returncode == 0
    result = manage("backup_create", "--json")
    assert result.returncode == 0, result.stderr
    stored = tmp_path / "backups" / json.loads(result.stdout)[0]["file_path"]
    raw = subprocess.run(["gzip", "-dc", str(stored)], capture_output=True, check=True).stdout
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(raw)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT count(*) FROM backup_history").fetchone()[0] == 1
