"""Settings come from the environment with embedded defaults; bad values fail loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PRINT = (
    "import django, json; from django.conf import settings as s; django.setup();"
    "d = s.DATABASES['default'];"
    "print(json.dumps({'engine': d['ENGINE'], 'name': str(d['NAME']), 'host': d.get('HOST', ''),"
    "'port': d.get('PORT', ''), 'home': str(s.BACKUPSITE_HOME), 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS,"
    "'tz': s.TIME_ZONE, 'broker': s.CELERY_BROKER_URL, 'key': s.SECRET_KEY}))"
)


def settings_with(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}
    }
    base.update(
        {"BACKUPSITE_HOME": str(tmp_path / "home"), "DJANGO_SETTINGS_MODULE": "backupsite.settings", **env}
    )
    return subprocess.run([sys.executable, "-c", PRINT], cwd=REPO, env=base, capture_output=True, text=True)


def read(tmp_path: Path, **env: str) -> dict[str, object]:
    import json

    result = settings_with(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_it_defaults_to_sqlite_under_backupsite_home_and_an_embedded_broker(tmp_path):
    values = read(tmp_path)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(tmp_path / "home" / "backupsite.sqlite3")
    assert values["broker"] == "filesystem://"
    assert values["debug"] is False


def test_it_generates_a_secret_key_once_and_keeps_it_private(tmp_path):
    first, second = read(tmp_path)["key"], read(tmp_path)["key"]
    assert first == second and len(str(first)) >= 50
    assert (tmp_path / "home" / "secret_key").stat().st_mode & 0o777 == 0o600


def test_it_reads_secret_key_from_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file-" + "x" * 50 + "\n")
    assert read(tmp_path, SECRET_KEY_FILE=str(key_file))["key"] == "from-a-file-" + "x" * 50


def test_it_understands_postgresql_and_mysql_urls(tmp_path):
    pg = read(tmp_path, DATABASE_URL="postgres://backup@db.internal:5433/backupsite")
    assert (pg["engine"], pg["host"], pg["port"], pg["name"]) == (
        "django.db.backends.postgresql", "db.internal", 5433, "backupsite",
    )  # fmt: skip
    my = read(tmp_path, DATABASE_URL="mysql://backup@db.internal/backupsite")
    assert (my["engine"], my["name"]) == ("django.db.backends.mysql", "backupsite")


def test_it_reads_debug_hosts_and_time_zone(tmp_path):
    values = read(
        tmp_path, DEBUG="yes", ALLOWED_HOSTS="backup.example.net, 10.0.0.5", TIME_ZONE="Europe/Berlin"
    )
    assert values["debug"] is True
    assert values["hosts"] == ["backup.example.net", "10.0.0.5"]
    assert values["tz"] == "Europe/Berlin"


def test_it_fails_loudly_on_bad_values(tmp_path):
    result = settings_with(tmp_path, DEBUG="maybe")
    assert result.returncode != 0 and "DEBUG: expected true/false" in result.stderr
    result = settings_with(tmp_path, DATABASE_URL="oracle-ish://nope")
    assert result.returncode != 0 and "DATABASE_URL" in result.stderr


def test_it_binds_tasks_to_the_projects_celery_app() -> None:
    """A process that queues a task (the web process) uses our broker, not Celery's default."""
    from django.conf import settings

    from backups.tasks import run_target_backup

    assert run_target_backup.app.main == "backupsite"
    assert run_target_backup.app.conf.broker_url == settings.CELERY_BROKER_URL
