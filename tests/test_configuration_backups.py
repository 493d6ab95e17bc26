"""Backups of type ``configuration``: a target's declared config files as a tar, for any engine,
restored into a directory. Real files, real local storage, the real services and commands."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.config import loader as config
from backups.models import BackupStatus, Target
from restores.models import RestoreLog, RestoreStatus
from restores.services import RestoreRefused, restore_backup, restore_to_directory
from tests import test_config
from tests.config_builder import toml_text
from tests.test_config import errors_of, toml

valid = test_config.valid  # the TOML fixture of the config tests


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A small /etc-like tree: a file, a directory with a nested file and a link, a linked file."""
    root = tmp_path / "etc"
    (root / "app" / "conf.d").mkdir(parents=True)
    (root / "app" / "main.conf").write_text("listen = 5432\n")
    (root / "app" / "conf.d" / "tuning.conf").write_text("work_mem = '64MB' # ü\n")
    (root / "app" / "conf.d" / "current").symlink_to("tuning.conf")
    (root / "alternatives").mkdir()
    (root / "alternatives" / "my.cnf").write_text("[mysqld]\nport = 3306\n")
    (root / "my.cnf").symlink_to(root / "alternatives" / "my.cnf")
    (root / "secret.conf").write_text("password = hunter2\n")
    os.chmod(root / "secret.conf", 0o600)
    return root


@pytest.fixture
def configured(sqlite_target: Target, etc: Path) -> Target:
    sqlite_target.config_paths = [str(etc / "app"), str(etc / "my.cnf"), str(etc / "secret.conf")]
    sqlite_target.save()
    return sqlite_target


def restored_path(directory: Path, original: Path) -> Path:
    return directory / str(original).lstrip("/")


@pytest.mark.django_db
def test_it_backs_up_the_declared_files_and_restores_them_under_a_directory(configured, etc, tmp_path):
    backup = services.run_backup(configured, backup_type="configuration")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.file_path.endswith(".config.tar.gz")
    assert backup.files_included == configured.config_paths
    assert backup.engine_info["files"] == 4

    into = tmp_path / "restored"
    log = restore_to_directory(backup, into, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert log.destination is None and "4 configuration file(s)" in log.notes
    assert restored_path(into, etc / "app" / "main.conf").read_text() == "listen = 5432\n"
    assert restored_path(into, etc / "app" / "conf.d" / "tuning.conf").read_text().endswith("ü\n")
    assert os.readlink(restored_path(into, etc / "app" / "conf.d" / "current")) == "tuning.conf"
    linked = restored_path(into, etc / "my.cnf")  # a listed link is saved as what it points to
    assert not linked.is_symlink() and linked.read_text() == "[mysqld]\nport = 3306\n"
    assert restored_path(into, etc / "secret.conf").stat().st_mode & 0o777 == 0o600


@pytest.mark.django_db
def test_it_makes_an_archive_that_restores_by_hand_with_tar(configured, etc, tmp_path, storage_dir):
    backup = services.run_backup(configured, backup_type="configuration", compression="gzip")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    into = tmp_path / "by-hand"
    into.mkdir()
    subprocess.run(["tar", "-xzf", str(storage_dir / backup.file_path), "-C", str(into)], check=True)
    assert restored_path(into, etc / "app" / "main.conf").read_text() == "listen = 5432\n"
    listing = subprocess.run(
        ["tar", "-tzf", str(storage_dir / backup.file_path)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert all(not name.startswith("/") for name in listing)


@pytest.mark.django_db
def test_it_keeps_what_was_there_aside_on_a_second_restore(configured, etc, tmp_path):
    backup = services.run_backup(configured, backup_type="configuration")
    into = tmp_path / "restored"
    into.mkdir()
    (into / "local-edit.conf").write_text("mine\n")
    log = restore_to_directory(backup, into)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("restored.before-restore-")]
    assert len(aside) == 1 and (aside[0] / "local-edit.conf").read_text() == "mine\n"
    assert not (into / "local-edit.conf").exists()


@pytest.mark.django_db
def test_it_fails_the_backup_naming_a_missing_config_file(configured, etc):
    (etc / "secret.conf").unlink()
    backup = services.run_backup(configured, backup_type="configuration")
    assert backup.status == BackupStatus.FAILED
    assert f"configuration path {etc / 'secret.conf'} does not exist" in backup.error_message
    assert "config_paths" in backup.error_message
    assert [copy.status for copy in backup.copies.all()] == []  # refused before any storage was opened


@pytest.mark.django_db
def test_it_fails_the_backup_on_a_listed_path_that_is_no_file_and_leaves_no_object(
    configured, etc, storage_dir
):
    fifo = etc / "app.fifo"
    os.mkfifo(fifo)
    configured.config_paths = [*configured.config_paths, str(fifo)]
    configured.save()
    backup = services.run_backup(configured, backup_type="configuration")
    assert backup.status == BackupStatus.FAILED
    assert f"configuration path {fifo} is not a file or a directory" in backup.error_message
    assert not any(storage_dir.rglob("*.tar*"))


@pytest.mark.django_db
def test_it_cannot_be_made_for_a_target_without_config_paths(sqlite_target):
    assert not services.supports_type(sqlite_target, "configuration")
    assert "lists no config_paths" in services.type_problem(sqlite_target, "configuration")
    backup = services.run_backup(sqlite_target, backup_type="configuration")
    assert backup.status == BackupStatus.FAILED
    assert "targets.app-db.config_paths" in backup.error_message


@pytest.mark.django_db
def test_it_has_database_engines_refuse_incremental_backups_clearly(sqlite_target):
    problem = services.type_problem(sqlite_target, "incremental")
    assert problem == (
        "the sqlite engine does not make incremental backups (only the files engine does); "
        "use one of: full, database"
    )
    with pytest.raises(CommandError, match="--type incremental: the sqlite engine does not make incremental"):
        call_command("backup_create", "--target", "app-db", "--type", "incremental", stdout=io.StringIO())


@pytest.mark.django_db
def test_it_refuses_to_restore_a_configuration_backup_into_a_target(configured, tmp_path):
    backup = services.run_backup(configured, backup_type="configuration")
    with pytest.raises(RestoreRefused, match="restore it into a directory"):
        restore_backup(backup, configured)
    with pytest.raises(CommandError, match="--to-dir DIR"):
        call_command("backup_restore", "--id", str(backup.pk), "--yes", stdout=io.StringIO())
    assert not RestoreLog.objects.exists()


@pytest.mark.django_db
def test_it_refuses_other_backups_and_bad_directories_in_restore_to_dir(configured, sqlite_target, tmp_path):
    full = services.run_backup(sqlite_target)
    with pytest.raises(RestoreRefused, match="only configuration backups are restored into a directory"):
        restore_to_directory(full, tmp_path / "x")
    backup = services.run_backup(configured, backup_type="configuration")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(RestoreRefused, match="exists and is not a directory"):
        restore_to_directory(backup, a_file)
    with pytest.raises(RestoreRefused, match="must be an absolute path"):
        restore_to_directory(backup, Path("relative/dir"))
    assert not RestoreLog.objects.exists()


@pytest.mark.django_db
def test_it_makes_and_restores_a_configuration_backup_with_the_commands(configured, etc, tmp_path):
    out = io.StringIO()
    call_command("backup_create", "--target", "app-db", "--type", "configuration", stdout=out)
    assert "succeeded" in out.getvalue()
    backup = configured.backups.get()
    into = tmp_path / "cli-restore"
    out = io.StringIO()
    call_command("backup_restore", "--id", str(backup.pk), "--to-dir", str(into), "--yes", stdout=out)
    assert "restored 4 configuration file(s)" in out.getvalue()
    assert restored_path(into, etc / "app" / "main.conf").exists()
    with pytest.raises(CommandError, match="--to and --to-dir: give one destination"):
        call_command(
            "backup_restore", "--id", str(backup.pk), "--to", "app-db", "--to-dir", str(into), "--yes",
            stdout=io.StringIO(),
        )  # fmt: skip


@pytest.mark.django_db
def test_it_is_described_by_every_step_and_the_manifest(configured, storage_dir):
    backup = services.run_backup(configured, backup_type="configuration")
    names = list(backup.steps.values_list("name", flat=True))
    assert names[:2] == ["validate", "dump"] and "manifest" in names
    manifest = (storage_dir / (backup.file_path + ".manifest.json")).read_text()
    assert '"engine": "configuration"' in manifest and "tar -xf - -C /restore/dir" in manifest
    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages


# -- configuration in TOML and the admin's model validation ---------------------------------------


@pytest.mark.django_db
def test_it_takes_config_paths_and_configuration_schedules_in_toml(tmp_path, valid, etc):
    text = (
        valid.replace(
            "retention = { retention_days = 30, max_backups = 5 }",
            f'retention = {{ retention_days = 30, max_backups = 5 }}\nconfig_paths = ["{etc / "app"}", "{etc / "my.cnf"}"]',
        )
        + "\n"
        + toml_text(
            schedules={
                "app-config": {"target": "app-db", "backup_type": "configuration", "cron": "0 4 * * 0"}
            }
        )
    )
    config.apply(config.load(toml(tmp_path, text)))
    assert Target.objects.get(name="app-db").config_paths == [str(etc / "app"), str(etc / "my.cnf")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ('["/etc/app", "/etc/app/main.conf"]', "'/etc/app/main.conf' overlaps '/etc/app'"),
        ('["/"]', "'/': the filesystem root cannot be a configuration path"),
        ('["/no/such/file.conf"]', "/no/such/file.conf does not exist on this host"),
    ],
)
def test_it_rejects_bad_config_paths_in_toml_naming_the_key(tmp_path, valid, paths, expected):
    text = valid.replace('engine = "sqlite"', f'engine = "sqlite"\nconfig_paths = {paths}')
    errors = errors_of(tmp_path, text)
    assert any(e.startswith("targets.app-db.config_paths: ") and expected in e for e in errors), errors
    assert not Target.objects.exists()


@pytest.mark.django_db
def test_it_rejects_a_configuration_schedule_in_toml_for_a_target_without_config_paths(tmp_path, valid):
    text = valid.replace('target = "app-db"', 'target = "app-db"\nbackup_type = "configuration"')
    assert errors_of(tmp_path, text) == [
        "schedules.nightly.backup_type: target 'app-db' lists no config_paths; add "
        "targets.app-db.config_paths (the configuration files to back up)"
    ]


@pytest.mark.django_db
def test_it_explains_incremental_in_toml_for_a_database_engine(tmp_path, valid):
    text = valid.replace('target = "app-db"', 'target = "app-db"\nbackup_type = "incremental"')
    assert errors_of(tmp_path, text) == [
        "schedules.nightly.backup_type: the sqlite engine makes full, database backups only; "
        "incremental backups are made by the files engine"
    ]


@pytest.mark.django_db
def test_it_rejects_bad_config_paths_in_the_model(sqlite_target):
    from django.core.exceptions import ValidationError

    sqlite_target.config_paths = ["relative.conf"]
    with pytest.raises(ValidationError) as caught:
        sqlite_target.full_clean()
    assert "config_paths" in caught.value.message_dict
