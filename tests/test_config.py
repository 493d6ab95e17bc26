"""TOML configuration: every problem named by its key path, nothing changed on error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from backups.config import loader as config
from backups.models import Storage, Target
from schedules.models import BackupSchedule
from tests.config_builder import toml_text, write_config

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]


def toml(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def valid(storage_dir: Path, sqlite_source: Path, files_tree: Path) -> str:
    """A valid file's text; each test below edits it as text."""
    return toml_text(
        storage_dir=storage_dir,
        targets={
            "app-db": {
                "engine": "sqlite",
                "database": sqlite_source,
                "storages": ["local"],
                "retention": {"retention_days": 30, "max_backups": 5},
            },
            "media": {
                "engine": "files",
                "paths": [files_tree],
                "storages": ["local"],
                "options": {"exclude": ["*.tmp"]},
            },
        },
        schedules={
            "nightly": {
                "target": "app-db",
                "cron": "0 3 * * *",
                "timezone": "Europe/Berlin",
                "storages": ["local"],
                "compression": "zstd",
                "retention": {"keep_last": 3, "keep_daily": 7},
            }
        },
    )


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(config.ConfigInvalid) as caught:
        config.apply(config.load(toml(tmp_path, text)))
    return caught.value.errors


def counts() -> tuple[int, int, int]:
    return Storage.objects.count(), Target.objects.count(), BackupSchedule.objects.count()


def test_it_applies_a_valid_file_idempotently(tmp_path, valid):
    path = toml(tmp_path, valid)
    first = config.apply(config.load(path))
    assert first.created == ["storage local", "target app-db", "target media", "schedule nightly"]
    assert counts() == (1, 2, 1)
    second = config.apply(config.load(path))
    assert second.created == [] and second.updated == []
    assert counts() == (1, 2, 1)
    schedule = BackupSchedule.objects.get(name="nightly")
    assert schedule.cron_expression == "0 3 * * *"
    assert [s.name for s in schedule.storages.all()] == ["local"]
    assert Target.objects.get(name="app-db").retention == {"retention_days": 30, "max_backups": 5}


def test_it_reports_what_an_edit_changes(tmp_path, valid):
    config.apply(config.load(toml(tmp_path, valid)))
    edited = valid.replace('compression = "zstd"', 'compression = "gzip"')
    report = config.apply(config.load(toml(tmp_path, edited)))
    assert report.updated == ["schedule nightly (compression)"]


def test_it_resolves_relative_paths_against_the_config_file(tmp_path, sqlite_source):
    (tmp_path / "conf").mkdir()
    path = write_config(
        tmp_path / "conf" / "c.toml",
        storage_dir="../stored",
        targets={"db": {"engine": "sqlite", "database": f"../{sqlite_source.name}", "storages": ["local"]}},
    )
    config.apply(config.load(path))
    assert Storage.objects.get().options["path"] == str(tmp_path / "stored")
    assert Target.objects.get().database == str(sqlite_source)


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ('engine = "sqlite"', 'engine = "oracle"', "targets.app-db.engine: unknown engine 'oracle'"),
        ('engine = "sqlite"', 'engine = "sqllite"', "did you mean 'sqlite'?"),
        ('kind = "local"', 'kind = "dropbox"', "storages.local.kind: unknown storage kind 'dropbox'"),
        ('kind = "local"', 'kind = "s3"', "storages.local.bucket: required: "),
        ('kind = "local"', 'kind = "sftp"', "storages.local.path: unknown key"),
        ('kind = "local"', 'kind = "local"\nrequired = "yes"', "storages.local.required: must be true or false"),
        ("[targets.media]", '[targets."my media"]', "targets.my media: invalid name"),
        ("[targets.media]", '[targets."a/b"]', "targets.a/b: invalid name"),
        ("[targets.media]", '[targets.".."]', "targets...: invalid name"),
        ("[targets.media]", "[targets.App-DB]", "targets.App-DB: duplicate name: 'app-db' differs only in case"),
        ('cron = "0 3 * * *"', 'cron = "0 25 * * *"', "schedules.nightly.cron: invalid hour field '25'"),
        ('cron = "0 3 * * *"', 'cron = "0 0 31 2 *"', "schedules.nightly.cron: '0 0 31 2 *' never runs"),
        ('cron = "0 3 * * *"', 'cron = "0 3 * * *"\nverify = "weekly"', "schedules.nightly.verify: must be one of after-backup, daily, never"),
        ('cron = "0 3 * * *"', 'cron = "0 3 * * *"\ngrace_minutes = 0', "schedules.nightly.grace_minutes: must be 1-525600"),
        ('cron = "0 3 * * *"', 'cron = "0 3 * *"', "schedules.nightly.cron: expected 5 fields"),
        ('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"', "schedules.nightly.timezone: unknown time zone"),
        ('timezone = "Europe/Berlin"', 'timezone = "Europe"', "schedules.nightly.timezone: unknown time zone"),
        ('target = "app-db"', 'target = "app-bd"', "schedules.nightly.target: no target named 'app-bd'"),
        ('storages = ["local"]\nretention = { retention', 'storages = ["offsite"]\nretention = { retention',
         "targets.app-db.storages: no storage named 'offsite'"),
        ('compression = "zstd"', 'compression = "brotli"', "schedules.nightly.compression: must be one of"),
        ('compression = "zstd"', 'compresion = "zstd"', "schedules.nightly.compresion: unknown key (did you mean 'compression'?)"),
        ("max_backups = 5", "max_backups = 0", "targets.app-db.retention.max_backups: must be a whole number of at least 1"),
        ("max_backups = 5", 'keep_within = "3m"', "targets.app-db.retention.keep_within: '3m': 'm' is ambiguous"),
        ("max_backups = 5", "rules = [3.1]", "targets.app-db.retention.rules: must be a list of strings"),
        ("max_backups = 5", 'tiers = ["1h"]', "targets.app-db.retention.tiers: '1h': write PERIOD:WINDOW"),
        ("keep_daily = 7", "keep_dialy = 7", "schedules.nightly.retention.keep_dialy: unknown rule"),
        ("keep_daily = 7", "keep_daily = 0", "schedules.nightly.retention.keep_daily: must be a whole number"),
        ('options = { exclude = ["*.tmp"] }', "options = { exclude = 3 }", "targets.media.options.exclude: must be a list"),
        ('engine = "sqlite"', 'engine = "sqlite"\ntags = ["Shop"]', "targets.app-db.tags: 'Shop' is not a tag"),
        ('engine = "sqlite"', 'engine = "sqlite"\ntags = "shop"', "targets.app-db.tags: must be a list of strings"),
        ('engine = "sqlite"', 'engine = "sqlite"\nprotected = "yes"', "targets.app-db.protected: must be true or false"),
    ],
)  # fmt: skip
def test_it_rejects_bad_input_naming_the_key_and_changes_nothing(tmp_path, valid, replace, by, expected):
    assert replace in valid
    errors = errors_of(tmp_path, valid.replace(replace, by, 1))
    assert any(expected in error for error in errors), errors
    assert counts() == (0, 0, 0)


def test_it_rejects_a_port_out_of_range(tmp_path, valid):
    errors = errors_of(tmp_path, valid.replace('engine = "sqlite"', 'engine = "sqlite"\nport = 70000'))
    assert "targets.app-db.port: must be 1-65535" in errors


def test_it_rejects_a_missing_source_database(tmp_path, valid, sqlite_source):
    errors = errors_of(tmp_path, valid.replace(str(sqlite_source), str(tmp_path / "nope.sqlite3")))
    assert errors == [f"targets.app-db.database: SQLite database {tmp_path / 'nope.sqlite3'} does not exist"]


def test_it_rejects_an_unreadable_source_database(tmp_path, valid, sqlite_source):
    sqlite_source.write_bytes(b"this is not a database" * 100)
    errors = errors_of(tmp_path, valid)
    assert len(errors) == 1 and "cannot be read: file is not a database" in errors[0]


def test_it_rejects_a_missing_files_path(tmp_path, valid, files_tree):
    errors = errors_of(tmp_path, valid.replace(str(files_tree), str(tmp_path / "gone")))
    assert errors == [f"targets.media.paths: path {tmp_path / 'gone'} does not exist"]


def test_it_rejects_an_unwritable_storage_path(tmp_path, valid):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    errors = errors_of(tmp_path, valid.replace(str(tmp_path / "backups"), str(blocker / "backups")))
    assert len(errors) == 1 and errors[0].startswith("storages.local: cannot create directory")


def test_it_can_skip_environment_probes(tmp_path, valid, sqlite_source):
    text = valid.replace(str(sqlite_source), str(tmp_path / "not-yet.sqlite3"))
    config.apply(config.load(toml(tmp_path, text)), probe=False)
    assert counts() == (1, 2, 1)


def test_it_rejects_invalid_toml_with_its_position(tmp_path):
    errors = errors_of(tmp_path, "[targets.x]\nengine = \n")
    assert len(errors) == 1 and "invalid TOML" in errors[0] and "line 2" in errors[0]


def test_it_rejects_duplicate_tables(tmp_path, valid):
    errors = errors_of(tmp_path, valid + '\n[targets.media]\nengine = "files"\n')
    assert "invalid TOML" in errors[0] and "media" in errors[0]


def test_it_rejects_an_unknown_section(tmp_path, valid):
    errors = errors_of(tmp_path, valid + '\n[target.x]\nengine = "files"\n')
    assert errors == [
        "target: unknown section (did you mean 'targets'?); sections are storages, keys, targets, schedules, notifiers"
    ]


def test_it_names_an_unset_variable_but_never_a_value(tmp_path, valid, monkeypatch):
    monkeypatch.setenv("OTHER_SECRET", "hunter2-very-secret")
    monkeypatch.delenv("APP_DB_PASSWORD", raising=False)
    text = valid.replace('engine = "sqlite"', 'engine = "sqlite"\npassword = "${APP_DB_PASSWORD}"')
    errors = errors_of(tmp_path, text)
    assert errors == ["targets.app-db.password: environment variable APP_DB_PASSWORD is not set"]
    assert "hunter2" not in " ".join(errors)


def test_it_stores_secret_references_never_their_values(tmp_path, valid, monkeypatch):
    monkeypatch.setenv("APP_DB_PASSWORD", "hunter2-very-secret")
    text = valid.replace('engine = "sqlite"', 'engine = "sqlite"\npassword = "${APP_DB_PASSWORD}"')
    config.apply(config.load(toml(tmp_path, text)))
    assert Target.objects.get(name="app-db").password == "${APP_DB_PASSWORD}"


def test_it_refuses_a_plaintext_password(tmp_path, valid):
    errors = errors_of(
        tmp_path, valid.replace('engine = "sqlite"', 'engine = "sqlite"\npassword = "hunter2"')
    )
    assert errors == [
        "targets.app-db.password: write secrets as ${ENV_VAR} or ${file:/path}; plaintext secrets are refused"
    ]


def test_it_rejects_a_backup_type_the_engine_cannot_make(tmp_path, valid):
    errors = errors_of(
        tmp_path, valid.replace('target = "app-db"', 'target = "app-db"\nbackup_type = "files"')
    )
    assert errors == ["schedules.nightly.backup_type: the sqlite engine makes full, database backups only"]


def test_it_lists_every_problem_at_once(tmp_path, valid):
    text = valid.replace('kind = "local"', 'kind = "dropbox"').replace('cron = "0 3 * * *"', 'cron = "x"')
    assert len(errors_of(tmp_path, text)) == 2


def test_it_exits_2_from_the_command_and_prints_every_problem(tmp_path, valid):
    path = toml(tmp_path, valid.replace('kind = "local"', 'kind = "dropbox"'))
    with pytest.raises(CommandError) as caught:
        call_command("backup_config", "apply", str(path))
    assert caught.value.returncode == 2
    assert "storages.local.kind: unknown storage kind 'dropbox'" in str(caught.value)
    assert "nothing changed" in str(caught.value)
    assert counts() == (0, 0, 0)


def test_it_checks_without_applying_from_the_command(tmp_path, valid, capsys):
    call_command("backup_config", "check", str(toml(tmp_path, valid)))
    assert counts() == (0, 0, 0)


def test_it_accepts_the_example_configs(settings):
    repo = Path(settings.BASE_DIR)
    for name in ("demo.toml", "production.toml"):
        config.validate(config.load(repo / "examples" / name), probe=False)


def pg_tables(pg_server, names: list[str], extra: dict[str, dict[str, Any]] | None = None) -> str:
    extras = extra or {}
    targets = {
        name: {
            "engine": "postgresql",
            "host": pg_server.host,
            "port": pg_server.port,
            "user": pg_server.user,
            "password": "${TEST_PG_PASSWORD}",
            "database": "postgres",
            "storages": ["local"],
            **extras.get(name, {}),
        }
        for name in names
    }
    return toml_text(targets=targets)


def test_it_links_a_sandbox_and_skip_unchanged(tmp_path, valid, pg_server):
    text = valid + pg_tables(
        pg_server,
        ["pg-main", "pg-sandbox"],
        {"pg-main": {"sandbox": "pg-sandbox", "skip_unchanged": True}},
    )
    config.apply(config.load(toml(tmp_path, text)))
    main = Target.objects.get(name="pg-main")
    assert main.sandbox == Target.objects.get(name="pg-sandbox") and main.skip_unchanged
    again = config.apply(config.load(toml(tmp_path, text)))
    assert not again.updated  # idempotent

    config.apply(config.load(toml(tmp_path, text.replace('sandbox = "pg-sandbox"\n', ""))))
    assert Target.objects.get(name="pg-main").sandbox is None  # the file is the source of truth


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        ("nowhere", "targets.pg-main.sandbox: no target named 'nowhere'"),
        ("pg-main", "targets.pg-main.sandbox: a target cannot be its own sandbox"),
        (
            "app-db",
            "targets.pg-main.sandbox: target 'app-db' uses the sqlite engine; the sandbox must be postgresql",
        ),
    ],
)
def test_it_rejects_a_bad_sandbox(tmp_path, valid, pg_server, sandbox, expected):
    text = valid + pg_tables(pg_server, ["pg-main"], {"pg-main": {"sandbox": sandbox}})
    before = counts()
    assert any(expected in error for error in errors_of(tmp_path, text)), errors_of(tmp_path, text)
    assert counts() == before


def test_it_rejects_a_sandbox_of_another_engine_in_the_admin_form_too(sqlite_target):
    from django.core.exceptions import ValidationError

    other = Target.objects.create(name="pg", engine="postgresql", database="x", sandbox=sqlite_target)
    with pytest.raises(ValidationError, match="uses the sqlite engine"):
        other.full_clean()
    other.sandbox = other
    with pytest.raises(ValidationError, match="cannot be its own sandbox"):
        other.full_clean()


def test_it_has_the_engine_check_clickhouse_targets_with_field_names(tmp_path, valid):
    before = counts()
    errors = errors_of(
        tmp_path,
        valid
        + "\n"
        + toml_text(
            targets={
                "analytics": {
                    "engine": "clickhouse",
                    "host": "127.0.0.1",
                    "database": "analytics",
                    "storages": ["local"],
                    "options": {"part_size": 10, "colour": "red"},
                }
            },
            schedules={
                "ch-incremental": {"target": "analytics", "cron": "0 * * * *", "backup_type": "incremental"}
            },
        ),
    )
    text = "\n".join(errors)
    assert "targets.analytics.options.part_size: must be a number of bytes" in text
    assert "unknown option 'colour'" in text
    assert "schedules.ch-incremental" in text and "incremental" in text
    assert counts() == before


def test_it_applies_tags_and_protection(tmp_path, valid):
    text = valid.replace(
        'engine = "sqlite"', 'engine = "sqlite"\ntags = ["shop", "production"]\nprotected = true', 1
    )
    config.apply(config.load(toml(tmp_path, text)))
    target = Target.objects.get(name="app-db")
    assert (target.tags, target.protected) == (["shop", "production"], True)
    assert (Target.objects.get(name="media").tags, Target.objects.get(name="media").protected) == ([], False)
