"""Hostile input to the configuration, the secrets and the commands (issue 18): each refused with
a message naming the key (or option, or variable) and exit status 2, never a traceback; and a
failure after the copies are committed removes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.config import loader
from backups.models import Backup, BackupCopy, BackupStatus, CopyStatus, Notifier, Storage, Target
from backups.retention.policy import MAX_COUNT, MAX_DAYS, Policy
from backups.secrets import SecretError, resolve
from schedules.models import BackupSchedule
from tests.conftest import REPO
from tests.test_admin_forms import change_url, target_form

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]
HUGE = 2**63 - 1
HUGE_DAYS = 2**31 - 1  # past any calendar, yet a number every catalog's integer column holds


def check_problems(path: Path, *args: str) -> list[str]:
    """The problems ``backup_config check`` lists (it must exit 2), one per line."""
    with pytest.raises(CommandError) as caught:
        call_command("backup_config", "check", str(path), *args)
    assert caught.value.returncode == 2
    return [line.strip() for line in str(caught.value).splitlines()[1:]]


def sqlite_table(sqlite_source: Path, **values: object) -> dict[str, object]:
    return {"engine": "sqlite", "database": sqlite_source, "storages": ["local"], **values}


def catalog_counts() -> tuple[int, int, int, int]:
    return (
        Target.objects.count(),
        Storage.objects.count(),
        Notifier.objects.count(),
        BackupSchedule.objects.count(),
    )


# -- secret references -----------------------------------------------------------------------------


def test_it_reports_a_secret_file_that_is_not_utf8_against_the_key(toml_config, sqlite_source, tmp_path):
    secret = tmp_path / "binary.pass"
    secret.write_bytes(b"\xff\xfe\x00 not text")
    path = toml_config(targets={"app-db": sqlite_table(sqlite_source, password=f"${{file:{secret}}}")})
    assert check_problems(path) == [f"targets.app-db.password: secret file {secret} is not UTF-8 text"]


def test_it_reports_a_secret_file_too_large_against_the_key(toml_config, sqlite_source, tmp_path):
    secret = tmp_path / "big.pass"
    secret.write_text("x" * (64 * 1024 + 1))
    path = toml_config(targets={"app-db": sqlite_table(sqlite_source, password=f"${{file:{secret}}}")})
    assert check_problems(path) == [
        f"targets.app-db.password: secret file {secret} is larger than 64 KiB; a secret file holds only the secret"
    ]


def test_it_reads_the_whole_secret_file_without_its_trailing_newlines(tmp_path):
    secret = tmp_path / "key.pem"
    secret.write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n\n")
    assert resolve(f"${{file:{secret}}}") == "-----BEGIN KEY-----\nabc\n-----END KEY-----"


def test_it_reports_an_environment_value_that_is_not_utf8(monkeypatch):
    monkeypatch.setenv("BACKUPSITE_TEST_BINARY", "ab\udcffcd")  # what Python makes of a byte 0xff
    with pytest.raises(SecretError, match="environment variable BACKUPSITE_TEST_BINARY is not UTF-8 text"):
        resolve("${BACKUPSITE_TEST_BINARY}")


def test_it_reads_a_relative_file_reference_against_the_toml_files_directory(
    toml_config, sqlite_source, tmp_path
):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "app-db.pass").write_text("s3cr3t-relative\n")
    path = toml_config(
        targets={"app-db": sqlite_table(sqlite_source, password="${file:secrets/app-db.pass}")}
    )
    call_command("backup_config", "apply", str(path))
    stored = Target.objects.get(name="app-db").password
    assert stored == f"${{file:{tmp_path / 'secrets' / 'app-db.pass'}}}"
    assert resolve(stored) == "s3cr3t-relative"


def test_it_reports_a_relative_file_reference_that_is_missing_with_its_full_path(
    toml_config, sqlite_source, tmp_path
):
    path = toml_config(targets={"app-db": sqlite_table(sqlite_source, password="${file:nope.pass}")})
    assert check_problems(path) == [
        f"targets.app-db.password: secret file {tmp_path / 'nope.pass'} does not exist"
    ]


@pytest.mark.parametrize(
    ("value", "malformed"),
    [
        ("${}", "${}"),
        ("${file:}", "${file:}"),
        ("${A-B}", "${A-B}"),
        ("${APP_PASSWORD", "${APP_PASSWORD"),
        ("${A}x${1A}", "${1A}"),
    ],
)
def test_it_reports_a_malformed_reference_naming_the_key(toml_config, sqlite_source, value, malformed):
    path = toml_config(
        targets={"app-db": sqlite_table(sqlite_source, password=value, options={"note": f"a {value}"})},
        notifiers={"hook": {"kind": "webhook", "url": value}},
    )
    problems = check_problems(path, "--skip-probes")
    for key in ("targets.app-db.password", "targets.app-db.options.note", "notifiers.hook.url"):
        assert f"{key}: malformed reference {malformed!r}: write ${{NAME}}" in "\n".join(problems), problems
    assert not any("plaintext secrets are refused" in problem for problem in problems)
    assert catalog_counts() == (0, 0, 0, 0)


def test_it_reports_a_malformed_reference_in_the_admin(admin_client, sqlite_target):
    response = admin_client.post(change_url(sqlite_target), target_form(sqlite_target, password="${A-B}"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["password"][0].startswith("malformed reference '${A-B}'")


# -- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        ("retention_days", HUGE, f"must be at most {MAX_DAYS}"),
        ("retention_days", MAX_DAYS + 1, f"must be at most {MAX_DAYS}"),
        ("max_backups", HUGE, f"must be at most {MAX_COUNT}"),
        ("min_keep", HUGE, f"must be at most {MAX_COUNT}"),
        ("keep_daily", HUGE, f"must be at most {MAX_COUNT}"),
        ("keep_within", "9" * 5000 + "d", f"a duration is at most {MAX_DAYS} days"),
        ("keep_within", "300y", f"'300y': a duration is at most {MAX_DAYS} days"),
        ("tiers", ["1h:99999999999999999999h"], "a duration is at most 100000 days"),
        ("rules", ["3.99999999999"], f"MIN_AGE_DAYS is at most {MAX_DAYS}"),
        ("rules", ["9" * 5000 + ".1"], f"COUNT is at most {MAX_COUNT}"),
    ],
)
def test_it_bounds_every_retention_number(toml_config, sqlite_source, rule, value, message):
    path = toml_config(targets={"app-db": sqlite_table(sqlite_source, retention={rule: value})})
    (problem,) = check_problems(path, "--skip-probes")
    assert problem.startswith(f"targets.app-db.retention.{rule}: ") and message in problem
    with pytest.raises(CommandError):
        call_command("backup_config", "apply", str(path))
    assert not Target.objects.exists()


def test_it_accepts_the_largest_numbers_the_bounds_allow() -> None:
    policy = Policy.from_mapping(
        {
            "retention_days": MAX_DAYS,
            "keep_within": "273y",
            "tiers": ["1d:100000d"],
            "rules": ["3.100000"],
            "keep_last": MAX_COUNT,
            "max_backups": MAX_COUNT,
        }
    )
    assert policy.retention_days == MAX_DAYS and policy.max_backups == MAX_COUNT


def test_it_bounds_retention_days_in_the_admin_form(admin_client, sqlite_target):
    response = admin_client.post(
        change_url(sqlite_target), target_form(sqlite_target, retention_days=str(HUGE))
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["retention_days"] == [
        f"retention_days: must be at most {MAX_DAYS}"
    ]


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**100])
def test_it_refuses_integers_beyond_64_bits_anywhere(toml_config, sqlite_source, number):
    path = toml_config(targets={"app-db": sqlite_table(sqlite_source, options={"anything": number})})
    assert check_problems(path, "--skip-probes") == [
        f"targets.app-db.options.anything: out of range: TOML integers are 64-bit (at most {2**63 - 1})"
    ]


def test_it_lists_every_bad_number_instead_of_the_first(toml_config, sqlite_source):
    path = toml_config(
        targets={
            "app-db": sqlite_table(
                sqlite_source,
                port=70000,
                retention={
                    "keep_daily": 0,
                    "retention_days": HUGE,
                    "tiers": ["1x:1d", "1h:300y"],
                    "bogus": 1,
                },
            ),
            "other": sqlite_table(sqlite_source, retention={"max_backups": -3}),
        },
        schedules={
            "nightly": {
                "target": "app-db",
                "cron": "0 3 * * *",
                "grace_minutes": 0,
                "retention": {"min_keep": 0},
            }
        },
    )
    problems = check_problems(path, "--skip-probes")
    expected = [
        "targets.app-db.port: must be 1-65535",
        "targets.app-db.retention.bogus: unknown rule",
        "targets.app-db.retention.keep_daily: must be a whole number of at least 1",
        f"targets.app-db.retention.retention_days: must be at most {MAX_DAYS}",
        "targets.app-db.retention.tiers: '1x': unknown unit 'x'",
        "targets.other.retention.max_backups: must be a whole number of at least 1",
        "schedules.nightly.retention.min_keep: must be a whole number of at least 1",
        "schedules.nightly.grace_minutes: must be 1-525600",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)
    assert "'300y': a duration is at most 100000 days" in "\n".join(problems)


# -- a failure after the copies are committed ----------------------------------------------------------


def test_it_removes_the_committed_copies_when_the_run_cannot_be_recorded(
    sqlite_target, storage_dir, tmp_path
):
    second = Storage.objects.create(name="second", kind="local", options={"path": str(tmp_path / "second")})
    sqlite_target.storages.add(second)
    # Around the checks (a row written directly): the expiry overflows after every copy is stored.
    Target.objects.filter(pk=sqlite_target.pk).update(retention={"retention_days": HUGE_DAYS})
    backup = services.run_backup(Target.objects.get(pk=sqlite_target.pk))

    assert backup.status == BackupStatus.FAILED
    assert backup.error_message == (
        "the backup was stored but could not be recorded as a success (retention_days "
        f"{HUGE_DAYS} puts its expiry past the last date the calendar holds); its stored copies and "
        "manifests were removed"
    )
    assert Backup.objects.get(pk=backup.pk).status == BackupStatus.FAILED
    copies = BackupCopy.objects.filter(backup=backup)
    assert copies.count() == 2 and set(copies.values_list("status", flat=True)) == {CopyStatus.FAILED}
    for root in (storage_dir, tmp_path / "second"):
        assert [p for p in root.rglob("*") if p.is_file()] == [], root  # no object, no manifest
    assert [step.name for step in backup.steps.all()][-1] == "manifest"  # it got that far


def test_it_removes_the_committed_copies_when_saving_the_success_fails(
    sqlite_target, storage_dir, monkeypatch
):
    def lost_database(self: Backup, *args: Any, **kwargs: Any) -> None:
        if self.status == BackupStatus.SUCCESS:
            raise OSError(5, "Input/output error")  # the catalog's disk, say
        return saved(self, *args, **kwargs)

    saved = Backup.save
    monkeypatch.setattr(Backup, "save", lost_database)
    backup = services.run_backup(sqlite_target)
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(
        "the backup was stored but could not be recorded as a success (Input/output error)"
    )
    assert [p for p in storage_dir.rglob("*") if p.is_file()] == []


# -- nesting and long numbers in the TOML text ------------------------------------------------------------


def test_it_reports_deeply_nested_toml_without_a_traceback(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert check_problems(path) == [f"{path}: too deeply nested (at most {loader.MAX_DEPTH} levels)"]
    path.write_text("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n")
    assert check_problems(path) == [f"{path}: too deeply nested (at most {loader.MAX_DEPTH} levels)"]


def test_it_reports_nesting_tomllib_can_read_under_its_key_path(toml_config, sqlite_source, tmp_path):
    path = toml_config(targets={"app-db": sqlite_table(sqlite_source)})
    path.write_text(path.read_text() + "options = { x = " + "[" * 100 + "]" * 100 + " }\n")
    (problem,) = check_problems(path, "--skip-probes")
    assert problem.startswith("targets.app-db.options.x[0][0]") and problem.endswith(
        "too deeply nested (at most 20 levels)"
    )


def test_it_reports_a_number_of_thousands_of_digits(tmp_path):
    path = tmp_path / "long.toml"
    path.write_text("a = " + "9" * 5000 + "\n")
    assert check_problems(path) == [f"{path}: invalid TOML: a number of thousands of digits"]


# -- the environment and the commands' options -------------------------------------------------------------


def start(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG"}}
    base.update({"BACKUPSITE_HOME": str(tmp_path / "home"), "DJANGO_SETTINGS_MODULE": "backupsite.settings"})
    return subprocess.run(
        args, cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG: expected true/false (1/0, yes/no, on/off), got 'maybe'"),
        (
            "BACKUPSITE_COPY_RETRY_DELAYS",
            "abc",
            "BACKUPSITE_COPY_RETRY_DELAYS: expected seconds separated by commas",
        ),
    ],
)
def test_it_reports_a_bad_environment_value_in_one_line_with_status_2(tmp_path, variable, value, message):
    result = start([sys.executable, str(REPO / "manage.py"), "backup_list"], tmp_path, **{variable: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"Backupsite cannot start: {message}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_it_reports_a_bad_environment_value_when_the_worker_starts(tmp_path):
    result = start([sys.executable, "-m", "celery", "-A", "backupsite", "worker"], tmp_path, DEBUG="maybe")
    assert result.returncode == 2
    assert (
        result.stderr
        == "Backupsite cannot start: DEBUG: expected true/false (1/0, yes/no, on/off), got 'maybe'\n"
    )


def test_it_bounds_the_commands_whole_number_options(manage):
    listed = manage("backup_list", "--limit", "99999999999999999999")
    assert listed.returncode == 2
    assert (
        "argument --limit: must be a whole number from 0 to 1000000000, got '99999999999999999999'"
        in listed.stderr
    )
    assert "Traceback" not in listed.stderr
    assert manage("backup_list", "--limit", "-1").returncode == 2
    assert manage("backup_list", "--limit", "5").returncode == 0
    verified = manage("backup_verify", "--id", "9" * 5000)
    assert verified.returncode == 2
    assert f"argument --id: must be a whole number from 1 to {2**63 - 1}" in verified.stderr
    assert "Traceback" not in verified.stderr


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("backup_restore", "--id", "99999999999999999999"),
        ("backupsite_run", "--concurrency", "100000"),
        ("backupsite_run", "--stop-timeout", "nan"),
    ],
)
def test_it_bounds_the_other_apps_number_options(command, option, value):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as caught:
        call_command(command, option, value)
    assert option in str(caught.value) or "must be" in str(caught.value)
