"""The configuration file as the source of truth: rows it defines are marked as its own (and
read-only in the admin), rows it stops defining are deactivated or released (never deleted,
their backups kept), ``backup_config diff`` shows what an apply would change, ``wait`` holds a
process until the catalog has the file's version, and a system check reports drift."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask
from pyrage import x25519

from backups import services
from backups.config import loader as config
from backups.config.applied import check_config_drift
from backups.models import AppliedConfig, Backup, BackupStatus, EncryptionKey, Notifier, Storage, Target
from schedules.models import BackupSchedule
from schedules.services import periodic_task_name
from tests.conftest import REPO

pytestmark = pytest.mark.django_db

BANNER = "change it there and run backup_config apply."


@pytest.fixture
def recipient() -> str:
    return str(x25519.Identity.generate().to_public())


@pytest.fixture
def site(sqlite_source: Path, files_tree: Path, recipient: str) -> dict[str, Any]:
    """A whole file's sections: two targets, a schedule, a notifier, a spare storage, a key."""
    return {
        "storages": {"spare": {"kind": "local", "path": str(sqlite_source.parent / "spare")}},
        "keys": {"offline": {"recipient": recipient}},
        "targets": {
            "app-db": {"engine": "sqlite", "database": sqlite_source, "storages": ["local"]},
            "media": {
                "engine": "files",
                "paths": [files_tree],
                "storages": ["local", "spare"],
                "retention": {"keep_last": 3, "keep_daily": 7},
            },
        },
        "notifiers": {"hook": {"kind": "webhook", "url": "${HOOK_URL}", "events": ["backup_failed"]}},
        "schedules": {"media-nightly": {"target": "media", "cron": "0 3 * * *", "storages": ["local"]}},
    }


def without(sections: dict[str, Any], **removed: list[str]) -> dict[str, Any]:
    """``sections`` minus the named tables (``targets=["media"]``)."""
    return {
        section: {name: table for name, table in tables.items() if name not in removed.get(section, [])}
        for section, tables in sections.items()
    }


def apply(path: Path, by: str = "test") -> services.ApplyReport:
    return config.apply(config.load(path), probe=False, applied_by=by)


def run_command(*args: str) -> tuple[int, str]:
    """``manage.py backup_config ARGS`` in this process: (exit code, stdout)."""
    out = StringIO()
    try:
        call_command("backup_config", *args, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


# -- marking, deactivating, reactivating --------------------------------------------------------


def test_it_marks_every_row_the_file_defines_with_its_absolute_path(toml_config, site):
    path = toml_config(**site)
    apply(path)
    where = str(path.resolve())
    for model in (Storage, Target, Notifier, EncryptionKey, BackupSchedule):
        assert set(model.objects.values_list("managed_by", flat=True)) == {where}, model


def test_it_names_the_file_as_given_not_where_its_link_points(toml_config, site, tmp_path):
    """A Kubernetes ConfigMap's file is a link whose target changes at each update."""
    real = toml_config("version-1.toml", **site)
    link = tmp_path / "site.toml"
    link.symlink_to(real)
    apply(link)
    assert set(Target.objects.values_list("managed_by", flat=True)) == {str(link)}
    assert AppliedConfig.objects.get().path == str(link)
    link.unlink()
    link.symlink_to(
        toml_config("version-2.toml", **without(site, targets=["media"], schedules=["media-nightly"]))
    )
    assert apply(link).deactivated == ["target media", "schedule media-nightly"]


def test_it_takes_over_a_row_created_in_the_admin_that_the_file_then_defines(
    toml_config, sqlite_target, site
):
    assert sqlite_target.managed_by == ""
    path = toml_config(**site)
    report = apply(path)
    sqlite_target.refresh_from_db()
    assert sqlite_target.managed_by == str(path.resolve())
    assert any(line.startswith("target app-db (") and "managed_by" in line for line in report.updated)


def test_it_deactivates_rows_the_file_no_longer_defines_and_keeps_their_backups(
    toml_config, site, storage_dir
):
    path = toml_config(**site)
    apply(path)
    media = Target.objects.get(name="media")
    backup = services.run_backup(media, initiated_by="test")
    assert backup.status == BackupStatus.SUCCESS
    stored = sorted(p for p in storage_dir.rglob("*") if p.is_file())
    assert stored
    schedule = BackupSchedule.objects.get(name="media-nightly")
    assert PeriodicTask.objects.get(name=periodic_task_name(schedule.pk)).enabled

    toml_config(**without(site, targets=["media"], schedules=["media-nightly"], notifiers=["hook"]))
    report = apply(path)

    assert report.deactivated == ["target media", "notifier hook", "schedule media-nightly"]
    media.refresh_from_db()
    schedule.refresh_from_db()
    assert not media.is_active and not schedule.is_active
    assert not Notifier.objects.get(name="hook").is_active
    assert not PeriodicTask.objects.get(name=periodic_task_name(schedule.pk)).enabled  # beat stops firing it
    assert media.managed_by == str(path.resolve())  # still the file's: read-only, back when re-added
    assert Backup.objects.filter(pk=backup.pk, status=BackupStatus.SUCCESS, deleted_at__isnull=True).exists()
    assert sorted(p for p in storage_dir.rglob("*") if p.is_file()) == stored
    assert Target.objects.get(name="app-db").is_active

    again = apply(path)
    assert again.deactivated == [] and again.created == [] and again.updated == []


def test_it_reactivates_a_row_added_back_to_the_file(toml_config, site):
    path = toml_config(**site)
    apply(path)
    toml_config(**without(site, targets=["media"], schedules=["media-nightly"]))
    apply(path)
    toml_config(**site)
    report = apply(path)
    assert "target media (is_active)" in report.updated
    assert "schedule media-nightly (is_active)" in report.updated
    assert Target.objects.get(name="media").is_active
    schedule = BackupSchedule.objects.get(name="media-nightly")
    assert schedule.is_active and PeriodicTask.objects.get(name=periodic_task_name(schedule.pk)).enabled


def test_it_keeps_and_releases_storages_and_keys_the_file_no_longer_defines(toml_config, site):
    path = toml_config(**site)
    apply(path)
    smaller = without(site, keys=["offline"], storages=["spare"])
    smaller["targets"]["media"] = {**smaller["targets"]["media"], "storages": ["local"]}
    toml_config(**smaller)
    report = apply(path)
    assert [line.split(" (")[0] for line in report.deactivated] == ["key offline", "storage spare"]
    assert "released" in report.deactivated[0]
    key = EncryptionKey.objects.get(name="offline")
    assert key.managed_by == "" and not key.is_retired  # restores may still need it
    assert Storage.objects.get(name="spare").managed_by == ""


def test_it_leaves_rows_of_the_admin_and_of_other_files_alone(toml_config, site, sqlite_source):
    Target.objects.create(name="by-hand", engine="sqlite", database=str(sqlite_source))
    Target.objects.create(
        name="other", engine="sqlite", database=str(sqlite_source), managed_by="/etc/x.toml"
    )
    apply(toml_config(**site))
    assert Target.objects.get(name="by-hand").is_active
    assert Target.objects.get(name="other").is_active


def test_it_records_an_applied_config_only_when_something_changed(toml_config, site):
    path = toml_config(**site)
    apply(path, by="cli:someone")
    row = AppliedConfig.objects.get()
    assert (row.path, row.applied_by) == (str(path.resolve()), "cli:someone")
    assert row.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    apply(path)
    assert AppliedConfig.objects.count() == 1  # a second apply changes nothing, records nothing
    path.write_text(path.read_text() + "\n# a comment: another version, the same rows\n")
    report = apply(path)
    assert not report.changed
    assert AppliedConfig.objects.count() == 2
    assert AppliedConfig.objects.latest().digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_it_marks_nothing_and_records_nothing_when_not_the_source(toml_config, site):
    config.apply(config.load(toml_config(**site)), probe=False, as_source=False)  # the demo's way
    assert set(Target.objects.values_list("managed_by", flat=True)) == {""}
    assert not AppliedConfig.objects.exists()


# -- backup_config with BACKUPSITE_CONFIG ---------------------------------------------------------


def test_it_applies_BACKUPSITE_CONFIG_when_no_file_is_given(toml_config, site, settings):
    path = toml_config(**site)
    settings.BACKUPSITE_CONFIG = str(path)
    code, out = run_command("apply", "--skip-probes")
    assert code == 0, out
    assert "created: target media" in out
    assert AppliedConfig.objects.get().applied_by.startswith("cli")
    toml_config(**without(site, targets=["media"], schedules=["media-nightly"]))
    code, out = run_command("apply", "--skip-probes")
    assert "deactivated: target media" in out.splitlines()


@pytest.mark.parametrize("action", ["check", "apply", "diff"])
def test_it_refuses_no_file_and_no_setting_naming_both(action, settings):
    settings.BACKUPSITE_CONFIG = ""
    code, out = run_command(action)
    assert code == 2
    assert "FILE" in out and "BACKUPSITE_CONFIG" in out


# -- diff ----------------------------------------------------------------------------------------


def test_it_diffs_added_changed_and_deactivated_rows(toml_config, site):
    path = toml_config(**site)
    apply(path)
    changed = without(site, notifiers=["hook"])
    changed["targets"]["app-db"] = {**changed["targets"]["app-db"], "compression": "zstd", "storages": []}
    changed["targets"]["reports"] = {"engine": "files", "paths": [str(path.parent)], "storages": ["local"]}
    toml_config(**changed)

    code, out = run_command("diff", str(path))

    assert code == 1
    lines = out.splitlines()
    assert "added: target reports" in lines
    assert "changed: target app-db" in lines
    assert '  compression: "gzip" -> "zstd"' in lines
    assert '  storages: ["local"] -> []' in lines
    assert "deactivated: notifier hook" in lines
    assert Target.objects.get(name="app-db").compression == "gzip"  # diff changes nothing
    assert not Target.objects.filter(name="reports").exists()


def test_it_diffs_as_json(toml_config, site):
    path = toml_config(**site)
    apply(path)
    changed = without(site, targets=["media"], schedules=["media-nightly"])
    changed["notifiers"]["hook"] = {**changed["notifiers"]["hook"], "events": ["backup_succeeded"]}
    toml_config(**changed)
    code, out = run_command("diff", str(path), "--json")
    assert code == 1
    found = json.loads(out[: out.rindex("}") + 1])
    assert found["changed"] == [
        {
            "kind": "notifier",
            "name": "hook",
            "action": "changed",
            "fields": [{"field": "events", "old": ["backup_failed"], "new": ["backup_succeeded"]}],
        }
    ]
    assert [(c["kind"], c["name"]) for c in found["deactivated"]] == [
        ("target", "media"),
        ("schedule", "media-nightly"),
    ]
    assert found["added"] == [] and found["changes"] is True


def test_it_exits_0_when_an_apply_would_change_nothing(toml_config, site):
    path = toml_config(**site)
    assert run_command("diff", str(path))[0] == 1  # never applied: everything is added
    apply(path)
    code, out = run_command("diff", str(path))
    assert code == 0, out
    assert out.strip().endswith("no changes")


def test_it_reports_a_file_version_not_applied_yet_even_with_the_same_rows(toml_config, site):
    path = toml_config(**site)
    apply(path)
    path.write_text(path.read_text() + "\n# edited\n")
    code, out = run_command("diff", str(path))
    assert code == 1
    assert "apply records it" in out


def test_it_exits_2_listing_the_problems_of_an_invalid_file(toml_config, site):
    broken = {**site, "targets": {**site["targets"], "app-db": {"engine": "sqlite", "port": 0}}}
    code, out = run_command("diff", str(toml_config(**broken)))
    assert code == 2
    assert "targets.app-db.port: must be 1-65535" in out


def test_it_shows_secret_references_and_never_their_values(toml_config, site, monkeypatch):
    monkeypatch.setenv("SOURCE_PG_PASSWORD", "correct-horse-battery-staple")
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.net/s3cr3t-token-value")
    pg = {"engine": "postgresql", "host": "db.example.net", "database": "app", "user": "backup"}
    path = toml_config(
        **{**site, "targets": {**site["targets"], "pg": {**pg, "password": "${OLD_PG_PASSWORD}"}}}
    )
    apply(path)
    toml_config(**{**site, "targets": {**site["targets"], "pg": {**pg, "password": "${SOURCE_PG_PASSWORD}"}}})
    for args in (["diff", str(path)], ["diff", str(path), "--json"]):
        code, out = run_command(*args)
        assert code == 1
        assert "${SOURCE_PG_PASSWORD}" in out and "${OLD_PG_PASSWORD}" in out
        assert "correct-horse-battery-staple" not in out
        assert "s3cr3t-token-value" not in out


# -- wait and backupsite_run (real processes) ---------------------------------------------------


def test_it_waits_until_the_file_is_applied(manage, toml_config, site, tmp_path):
    path = toml_config(**site)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    timed_out = manage("backup_config", "wait", str(path), "--timeout", "1")
    assert timed_out.returncode == 1, timed_out.stderr
    assert digest in timed_out.stderr and "no applied file" in timed_out.stderr

    env = {**os.environ, "BACKUPSITE_HOME": str(tmp_path / "home"), "BACKUPSITE_CONFIG": str(path)}
    env.pop("DATABASE_URL", None)
    waiting = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "backup_config", "wait", "--timeout", "240"],
        cwd=REPO,
        env={**env, "DJANGO_SETTINGS_MODULE": "backupsite.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        applied = manage("backup_config", "apply", "--skip-probes", str(path))
        assert applied.returncode == 0, applied.stderr
        out, err = waiting.communicate(timeout=240)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert f"applied ({digest[:12]})" in out

    other = path.with_name("other.toml")
    other.write_text(path.read_text() + "\n# not applied\n")
    stale = manage("backup_config", "wait", str(other), "--timeout", "1")
    assert stale.returncode == 1
    assert hashlib.sha256(other.read_bytes()).hexdigest() in stale.stderr
    assert f"the catalog holds {digest}" in stale.stderr


def test_it_has_nothing_to_wait_for_without_a_file(manage):
    result = manage("backup_config", "wait", extra_env={"BACKUPSITE_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    assert "nothing to wait for" in result.stdout


def test_it_refuses_to_start_the_site_on_an_invalid_file(manage, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[targets.app-db]\nengine = "sqlite"\nport = 0\n')
    result = manage("backupsite_run", "--no-web", extra_env={"BACKUPSITE_CONFIG": str(path)})
    assert result.returncode == 2
    assert "targets.app-db.port: must be 1-65535" in result.stderr
    assert "not started" in result.stderr


def test_it_applies_the_file_when_the_site_starts(toml_config, site, tmp_path):
    path = toml_config(**site)
    home = tmp_path / "run-home"
    env = {**os.environ, "BACKUPSITE_HOME": str(home), "BACKUPSITE_CONFIG": str(path)}
    env["DJANGO_SETTINGS_MODULE"] = "backupsite.settings"
    env.pop("DATABASE_URL", None)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "backupsite_run", "--no-web", "--stop-timeout", "20"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        # Until beat's schedules are synced, the line after the apply and the system checks:
        # stopped at the first line, the site could not say what came next.
        while "Schedules synced to beat" not in log.read_text() and run.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    text = log.read_text()
    line = next(line for line in text.splitlines() if "Configuration applied" in line)
    assert str(path.resolve()) in line and "7 created" in line, text
    assert text.index("Configuration applied") < text.index("Schedules synced to beat: 1")
    waited = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "backup_config", "wait", "--timeout", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert waited.returncode == 0, waited.stderr  # the version a worker would wait for is applied


def test_it_applies_at_start_as_the_start(toml_config, site, settings):
    from schedules.management.commands.backupsite_run import apply_site_config

    settings.BACKUPSITE_CONFIG = ""
    assert apply_site_config() == ""
    settings.BACKUPSITE_CONFIG = str(toml_config(**site))
    assert "7 created" in apply_site_config()
    assert AppliedConfig.objects.get().applied_by == "start:backupsite_run"
    assert "0 created, 0 updated, 0 deactivated" in apply_site_config()
    assert AppliedConfig.objects.count() == 1


# -- the admin -----------------------------------------------------------------------------------


def admin_url(obj: Any, view: str = "change") -> str:
    from django.urls import reverse

    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_{view}", args=[obj.pk])


def test_it_shows_managed_rows_read_only_with_a_banner(admin_client, toml_config, site):
    path = toml_config(**site)
    apply(path)
    banner = f"Defined by {path.resolve()}: {BANNER}"
    rows = [
        Target.objects.get(name="media"),
        Storage.objects.get(name="spare"),
        Notifier.objects.get(name="hook"),
        EncryptionKey.objects.get(name="offline"),
        BackupSchedule.objects.get(name="media-nightly"),
    ]
    for row in rows:
        page = admin_client.get(admin_url(row))
        assert page.status_code == 200, row
        html = page.content.decode()
        assert banner in html, row
        assert 'name="_save"' not in html, row
        assert admin_client.post(admin_url(row), {"name": "renamed"}).status_code == 403, row
        assert admin_client.get(admin_url(row, "delete")).status_code == 403, row
    media = admin_client.get(admin_url(rows[0])).content.decode()
    assert "Run now" in media  # operations keep working on managed rows
    assert "keep_last = 3; keep_daily = 7" in media  # the policy, read from the row
    listing = admin_client.get("/admin/backups/target/").content.decode()
    assert "Managed by file" in listing


def test_it_leaves_rows_of_the_admin_editable(admin_client, sqlite_target):
    html = admin_client.get(admin_url(sqlite_target)).content.decode()
    assert 'name="_save"' in html
    assert BANNER not in html


def test_it_refuses_to_bulk_delete_managed_rows(admin_client, toml_config, site):
    apply(toml_config(**site))
    notifier = Notifier.objects.get(name="hook")
    page = admin_client.post(
        "/admin/backups/notifier/",
        {"action": "delete_selected", "_selected_action": [notifier.pk], "post": "yes"},
    )
    assert page.status_code == 403
    assert Notifier.objects.filter(pk=notifier.pk).exists()


# -- the drift check -----------------------------------------------------------------------------


def drift_messages() -> list[str]:
    return [f"{m.id}: {m.msg} ({m.hint})" for m in check_config_drift()]


def test_it_warns_when_the_catalog_drifted_from_the_file(toml_config, site, settings):
    settings.BACKUPSITE_CONFIG = ""
    assert drift_messages() == []
    path = toml_config(**site)
    settings.BACKUPSITE_CONFIG = str(path)
    [never] = drift_messages()
    assert never.startswith("backups.W003") and "never applied" in never and str(path.resolve()) in never
    assert "run backup_config diff to see it, backup_config apply to fix it" in never.lower()
    apply(path)
    assert drift_messages() == []
    Target.objects.filter(name="media").update(compression="none")  # changed by other means
    [changed] = drift_messages()
    assert "target media (changed)" in changed
    apply(path)
    path.write_text(path.read_text() + "\n# edited, not applied\n")
    [version] = drift_messages()
    assert "another version" in version


@pytest.mark.parametrize("text", [None, "[targets\n", '[targets.x]\nengine = "nope"\n'])
def test_it_warns_and_never_raises_on_a_missing_or_invalid_file(tmp_path, settings, text: str | None):
    path = tmp_path / "site.toml"
    if text is not None:
        path.write_text(text)
    settings.BACKUPSITE_CONFIG = str(path)
    [message] = drift_messages()
    assert message.startswith("backups.W003") and "cannot be applied" in message


def test_it_runs_the_drift_check_with_the_other_checks(toml_config, site, settings):
    settings.BACKUPSITE_CONFIG = str(toml_config(**site))
    out = StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "backups.W003" in out.getvalue()
