"""Scheduled restore drills: a target's ``drill`` cron owns one beat entry (created, updated and
removed with the target, in its timezone, on its queue), the thin task runs the drill, the TOML
and the admin check the drill settings by the same rules, and the watch reaps lost drills."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from backups import services
from backups.config import loader as config
from backups.models import Drill, DrillStatus, Proof, Storage, Target
from backups.tasks import drill_target
from schedules import services as schedule_services
from schedules.drills import drill_task_name
from tests.config_builder import toml_text
from tests.conftest import PG_PASSWORD_ENV
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.django_db


def beat_entry(target: Target) -> PeriodicTask | None:
    return PeriodicTask.objects.select_related("crontab").filter(name=drill_task_name(target.pk)).first()


def test_it_creates_updates_and_removes_the_beat_entry_with_the_target(tmp_path: Path) -> None:
    target = Target.objects.create(
        name="shop",
        engine="sqlite",
        database=str(tmp_path / "shop.sqlite3"),
        drill="0 4 * * 0",
        timezone="Europe/Berlin",
        queue="eu-db",
    )
    entry = beat_entry(target)
    assert entry is not None and entry.enabled
    assert entry.task == "backups.tasks.drill_target"
    assert json.loads(entry.kwargs) == {"target_id": target.pk}
    assert entry.queue == "eu-db" == services.queue_for(target)
    crontab = entry.crontab
    assert crontab is not None
    assert (
        crontab.minute,
        crontab.hour,
        crontab.day_of_month,
        crontab.month_of_year,
        crontab.day_of_week,
    ) == (
        "0",
        "4",
        "*",
        "*",
        "0",
    )
    assert str(crontab.timezone) == "Europe/Berlin"

    target.drill, target.timezone, target.queue = "30 2 * * 1-5", "UTC", ""
    target.save()
    entry = beat_entry(target)
    assert entry is not None and entry.crontab is not None
    assert (entry.crontab.minute, entry.crontab.hour, entry.crontab.day_of_week) == ("30", "2", "1-5")
    assert str(entry.crontab.timezone) == "UTC" and entry.queue == services.queue_for(target)

    target.is_active = False
    target.save(update_fields=["is_active"])
    assert beat_entry(target) is None
    target.is_active = True
    target.save(update_fields=["is_active"])
    assert beat_entry(target) is not None

    target.drill = ""
    target.save()
    assert beat_entry(target) is None

    target.drill = "0 4 * * 0"
    target.save()
    pk = target.pk
    target.delete()
    assert not PeriodicTask.objects.filter(name=drill_task_name(pk)).exists()


def test_it_leaves_targets_without_a_drill_out_of_beat(tmp_path: Path) -> None:
    Target.objects.create(name="plain", engine="sqlite", database=str(tmp_path / "p.sqlite3"))
    assert not PeriodicTask.objects.filter(name__startswith="target-drill:").exists()


# -- the configuration file ----------------------------------------------------------------------


def apply(tmp_path: Path, storage_dir: Path, targets: dict[str, Any]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml_text(storage_dir=storage_dir, targets=targets))
    config.apply(config.load(path))


def errors_of(tmp_path: Path, storage_dir: Path, targets: dict[str, Any]) -> list[str]:
    with pytest.raises(config.ConfigInvalid) as caught:
        apply(tmp_path, storage_dir, targets)
    return caught.value.errors


def sqlite_table(source: Path, **drill: Any) -> dict[str, Any]:
    return {"engine": "sqlite", "database": source, "storages": ["local"], **drill}


def test_it_applies_drill_settings_from_the_file_and_keeps_beat_in_step(
    tmp_path: Path, storage_dir: Path, sqlite_source: Path
) -> None:
    drill = {"drill": "0 4 * * 0", "drill_checks": ["select count(*) > 0 from items"], "drill_from_last": 3}
    apply(tmp_path, storage_dir, {"app-db": sqlite_table(sqlite_source, timezone="Asia/Tokyo", **drill)})
    target = Target.objects.get(name="app-db")
    assert (target.drill, target.drill_checks, target.drill_from_last) == (
        "0 4 * * 0",
        ["select count(*) > 0 from items"],
        3,
    )
    entry = beat_entry(target)
    assert entry is not None and entry.crontab is not None and str(entry.crontab.timezone) == "Asia/Tokyo"

    apply(tmp_path, storage_dir, {"app-db": sqlite_table(sqlite_source, drill="15 1 * * *")})
    entry = beat_entry(target)
    assert entry is not None and entry.crontab is not None and entry.crontab.hour == "1"

    apply(tmp_path, storage_dir, {"app-db": sqlite_table(sqlite_source, drill="15 1 * * *", is_active=False)})
    assert beat_entry(target) is None

    apply(tmp_path, storage_dir, {"app-db": sqlite_table(sqlite_source)})
    target.refresh_from_db()
    assert target.drill == "" and target.drill_checks == [] and target.drill_from_last == 1
    assert beat_entry(target) is None


@pytest.mark.parametrize(
    ("drill", "key", "words"),
    [
        ({"drill": "0 25 * * *"}, "targets.app-db.drill", "hour"),
        ({"drill": "every sunday"}, "targets.app-db.drill", "5 fields"),
        (
            {"drill": "0 4 * * 0", "drill_checks": ["select 1", "  "]},
            "targets.app-db.drill_checks",
            "check 2 is empty",
        ),
        ({"drill_checks": ["x" * 10_001]}, "targets.app-db.drill_checks", "at most 10000"),
        ({"drill_checks": "select 1"}, "targets.app-db.drill_checks", "a list of SQL strings"),
        ({"drill_from_last": 0}, "targets.app-db.drill_from_last", "1-1000"),
        ({"drill_from_last": 1001}, "targets.app-db.drill_from_last", "1-1000"),
    ],
)
def test_it_names_the_key_of_a_bad_drill_setting_and_changes_nothing(
    tmp_path: Path, storage_dir: Path, sqlite_source: Path, drill: dict[str, Any], key: str, words: str
) -> None:
    errors = errors_of(tmp_path, storage_dir, {"app-db": sqlite_table(sqlite_source, **drill)})
    assert any(error.startswith(key) and words in error for error in errors), errors
    assert not Target.objects.exists() and not Storage.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="target-drill:").exists()


def test_it_asks_for_a_sandbox_when_the_engine_drills_into_scratch_databases(
    tmp_path: Path, storage_dir: Path, pg_server: PostgresServer
) -> None:
    server = {
        "engine": "postgresql",
        "host": pg_server.host,
        "port": pg_server.port,
        "user": pg_server.user,
        "password": "${" + PG_PASSWORD_ENV + "}",
    }
    table = {**server, "database": "postgres", "drill": "0 4 * * 0"}
    errors = errors_of(tmp_path, storage_dir, {"shop": table})
    problem = next(error for error in errors if error.startswith("targets.shop.sandbox"))
    assert "set sandbox to another postgresql target" in problem
    assert not Target.objects.exists()

    apply(
        tmp_path,
        storage_dir,
        {"test-server": {**server, "database": "postgres"}, "shop": {**table, "sandbox": "test-server"}},
    )
    assert beat_entry(Target.objects.get(name="shop")) is not None


# -- the admin -----------------------------------------------------------------------------------


def test_it_checks_drill_settings_in_the_model_as_the_file_does(tmp_path: Path) -> None:
    target = Target(name="shop", engine="sqlite", database=str(tmp_path / "s.sqlite3"), drill="61 * * * *")
    with pytest.raises(ValidationError) as caught:
        target.clean()
    assert "minute" in str(caught.value.message_dict["drill"])

    target = Target(name="pg", engine="postgresql", host="h", database="d", drill="0 4 * * 0")
    with pytest.raises(ValidationError) as caught:
        target.clean()
    assert "sandbox" in caught.value.message_dict

    target = Target(
        name="ok",
        engine="sqlite",
        database=str(tmp_path / "s.sqlite3"),
        drill_checks=[""],
        drill_from_last=5000,
    )
    with pytest.raises(ValidationError) as caught:
        target.clean()
    assert set(caught.value.message_dict) == {"drill_checks", "drill_from_last"}

    Target(name="fine", engine="sqlite", database=str(tmp_path / "s.sqlite3"), drill="0 4 * * 0").clean()


def test_it_shows_a_restore_drills_fieldset_on_the_target_page(admin_client, sqlite_target: Target) -> None:
    url = f"/admin/backups/target/{sqlite_target.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "Restore drills" in page and 'name="drill"' in page and 'name="drill_from_last"' in page


# -- the task and the watch ------------------------------------------------------------------------


def test_it_runs_a_scheduled_drill_through_the_task(sqlite_target: Target) -> None:
    backup = services.run_backup(sqlite_target)
    Target.objects.filter(pk=sqlite_target.pk).update(drill="0 4 * * 0")

    drill_id = drill_target(sqlite_target.pk)

    drill = Drill.objects.get(pk=drill_id)
    assert drill.status == DrillStatus.PASSED, drill.error_message
    assert drill.trigger == "schedule" and drill.backup_id == backup.pk
    assert drill.restore_seconds is not None
    backup.refresh_from_db()
    assert backup.proof == Proof.DRILLED


def test_it_skips_the_task_for_an_inactive_target_or_one_without_a_drill(
    sqlite_target: Target, caplog
) -> None:
    services.run_backup(sqlite_target)
    assert drill_target(sqlite_target.pk) is None  # no drill set
    Target.objects.filter(pk=sqlite_target.pk).update(drill="0 4 * * 0", is_active=False)
    assert drill_target(sqlite_target.pk) is None
    assert drill_target(987654) is None
    assert not Drill.objects.exists()
    assert "scheduled drill of target" in caplog.text


def test_it_reaps_a_lost_drill_in_the_watch(sqlite_target: Target, settings) -> None:
    backup = services.run_backup(sqlite_target)
    long_ago = timezone.now() - timedelta(seconds=settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS + 600)
    lost = Drill.objects.create(
        target=sqlite_target,
        backup=backup,
        status=DrillStatus.RUNNING,
        started_at=long_ago,
        heartbeat_at=long_ago,
        worker="somewhere-else:1",
    )

    counts = schedule_services.watch()

    assert counts["lost_drills"] == 1
    lost.refresh_from_db()
    assert lost.status == DrillStatus.FAILED and "worker lost" in lost.error_message


def test_it_saves_drill_settings_from_the_admin_and_refuses_a_bad_cron_on_its_field(
    admin_client, sqlite_target: Target
) -> None:
    url = f"/admin/backups/target/{sqlite_target.pk}/change/"
    form = {
        "name": sqlite_target.name, "engine": "sqlite", "is_active": "on", "compression": sqlite_target.compression,
        "database": sqlite_target.database, "timezone": "Europe/Paris", "options": "{}", "sandbox": "",
        "storages": [storage.pk for storage in sqlite_target.storages.all()],
        "drill": "0 4 * * 0", "drill_checks": "select count(*) > 0 from people\n\n", "drill_from_last": "2",
    }  # fmt: skip
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    sqlite_target.refresh_from_db()
    assert sqlite_target.drill_checks == ["select count(*) > 0 from people"]
    assert sqlite_target.drill_from_last == 2
    entry = beat_entry(sqlite_target)
    assert entry is not None and entry.crontab is not None and str(entry.crontab.timezone) == "Europe/Paris"

    response = admin_client.post(url, {**form, "drill": "0 4 * * 8"})
    assert response.status_code == 200
    assert "invalid day of week field" in str(response.context["adminform"].form.errors["drill"])
    sqlite_target.refresh_from_db()
    assert sqlite_target.drill == "0 4 * * 0"
