"""Production settings (issue 20, "Hardened settings"): ``manage.py check --deploy`` has nothing to
say about a production environment with BACKUPSITE_HTTPS=true; each SECURE_* setting comes from
its own variable too; bad values are refused naming the variable; the embedded defaults (plain
HTTP on the loopback, ``make run``) stay as they were. The admin's session ends after
BACKUPSITE_SESSION_MINUTES without activity, and the dashboard's polls are not activity."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from backups import secrets as backup_secrets
from backups.access.sessions import SEEN_KEY
from tests.conftest import REPO

#: What the deployment sets; the tests add or change one thing at a time.
OWN_VARIABLES = (
    "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "ALLOWED_HOSTS", "DATABASE_URL", "DATABASE_PASSWORD",
    "DATABASE_PASSWORD_FILE", "BACKUPSITE_HTTPS", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER", "CSRF_TRUSTED_ORIGINS",
    "BACKUPSITE_SESSION_MINUTES", "LOG_FORMAT",
)  # fmt: skip
HTTPS_WARNINGS = ("security.W004", "security.W008", "security.W012", "security.W016")
PRINT = (
    "import django, json; from django.conf import settings as s; django.setup();"
    "print(json.dumps({name: getattr(s, name) for name in %r}, default=str))"
)


def environment(tmp_path: Path, **env: str) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if key not in OWN_VARIABLES}
    home = tmp_path / "home"
    base.update(BACKUPSITE_HOME=str(home), DJANGO_SETTINGS_MODULE="backupsite.settings")
    base.update(env)
    return base


def production(tmp_path: Path, **env: str) -> dict[str, str]:
    """The production environment of docs/configuration.md, with ``env`` on top."""
    values = {
        "DEBUG": "false",
        "BACKUPSITE_HTTPS": "true",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "backups.example.net",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
    }
    return environment(tmp_path, **{**values, **env})


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def read_settings(env: dict[str, str], *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRINT % (names,)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_of(env: dict[str, str], *names: str) -> dict[str, object]:
    result = read_settings(env, *names)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def refusal(env: dict[str, str]) -> str:
    """The one-line error of settings that refuse ``env``."""
    result = read_settings(env, "DEBUG")
    assert result.returncode != 0, result.stdout
    return result.stderr.strip().splitlines()[-1]


# -- check --deploy ----------------------------------------------------------------------------------


def test_it_passes_check_deploy_with_the_production_environment(tmp_path: Path) -> None:
    result = check_deploy(production(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_it_lists_the_https_warnings_without_backupsite_https(tmp_path: Path) -> None:
    """The switch does the work: the same environment without it fails the deploy checks."""
    result = check_deploy(production(tmp_path, BACKUPSITE_HTTPS="false"))
    assert result.returncode != 0
    found = [code for code in HTTPS_WARNINGS if code in result.stderr]
    assert found == list(HTTPS_WARNINGS), result.stderr


def test_it_takes_each_secure_setting_from_its_own_variable(tmp_path: Path) -> None:
    result = check_deploy(production(tmp_path, SECURE_SSL_REDIRECT="false"))
    assert result.returncode != 0 and "security.W008" in result.stderr
    assert "security.W012" not in result.stderr  # the others still follow BACKUPSITE_HTTPS
    no_https = {"BACKUPSITE_HTTPS": "false"}
    one_by_one = {
        "SECURE_SSL_REDIRECT": "true", "SESSION_COOKIE_SECURE": "true", "CSRF_COOKIE_SECURE": "true",
        "SECURE_HSTS_SECONDS": "600", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "on", "SECURE_HSTS_PRELOAD": "yes",
    }  # fmt: skip
    assert check_deploy(production(tmp_path, **no_https, **one_by_one)).returncode == 0
    values = settings_of(production(tmp_path, **no_https, **one_by_one), *one_by_one)
    assert values == {
        "SECURE_SSL_REDIRECT": True, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 600, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True,
    }  # fmt: skip


def test_it_defaults_to_a_year_of_hsts_over_https_and_each_part_can_be_turned_off(tmp_path: Path) -> None:
    names = ("SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD")
    assert settings_of(production(tmp_path), *names) == {
        "SECURE_HSTS_SECONDS": 31536000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True,
    }  # fmt: skip
    off = production(tmp_path, SECURE_HSTS_INCLUDE_SUBDOMAINS="false", SECURE_HSTS_PRELOAD="false")
    assert settings_of(off, *names)["SECURE_HSTS_PRELOAD"] is False


def test_it_keeps_the_embedded_defaults_on_plain_http(tmp_path: Path) -> None:
    """`make run`: plain HTTP on the loopback, as before this switch existed."""
    names = (
        "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER", "LOG_FORMAT",
    )  # fmt: skip
    assert settings_of(environment(tmp_path), *names) == {
        "SECURE_SSL_REDIRECT": False, "SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0, "SECURE_HSTS_INCLUDE_SUBDOMAINS": False, "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": None, "LOG_FORMAT": "plain",
    }  # fmt: skip


def test_it_reads_the_proxy_ssl_header_as_header_and_value(tmp_path: Path) -> None:
    env = production(tmp_path, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https")
    assert settings_of(env, "SECURE_PROXY_SSL_HEADER") == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]
    }


@pytest.mark.parametrize(
    "value", ["X-Forwarded-Proto", "HTTP_X_FORWARDED_PROTO,https", "X Forwarded Proto: https", ": https",
              "X-Forwarded-Proto:", "X-Forwarded-Proto: https, http"],
)  # fmt: skip
def test_it_refuses_a_proxy_ssl_header_it_cannot_read(tmp_path: Path, value: str) -> None:
    message = refusal(production(tmp_path, SECURE_PROXY_SSL_HEADER=value))
    assert "SECURE_PROXY_SSL_HEADER: expected a header and the value" in message
    assert "'X-Forwarded-Proto: https'" in message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BACKUPSITE_HTTPS", "maybe", "BACKUPSITE_HTTPS: expected true/false"),
        ("SECURE_SSL_REDIRECT", "sure", "SECURE_SSL_REDIRECT: expected true/false"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS: expected a whole number"),
        ("SECURE_HSTS_SECONDS", "-1", "SECURE_HSTS_SECONDS: expected a whole number of seconds, 0 or more"),
        ("SECURE_HSTS_PRELOAD", "2", "SECURE_HSTS_PRELOAD: expected true/false"),
        ("BACKUPSITE_SESSION_MINUTES", "0", "BACKUPSITE_SESSION_MINUTES: expected a whole number of minutes"),
        ("BACKUPSITE_SESSION_MINUTES", "1h", "BACKUPSITE_SESSION_MINUTES: expected a whole number"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: expected one of plain, json, got 'xml'"),
    ],
)
def test_it_refuses_bad_values_naming_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    assert expected in refusal(production(tmp_path, **{variable: value}))


# -- the catalog's password ----------------------------------------------------------------------------


def test_it_takes_the_catalog_password_from_a_file_over_the_urls(tmp_path: Path) -> None:
    password_file = tmp_path / "db_password"
    password_file.write_text("from-the-secret-file\n")
    url = "postgres://backup:in-the-url@db.internal:5432/backupsite"

    def password(**env: str) -> object:
        values = settings_of(environment(tmp_path, DATABASE_URL=url, **env), "DATABASES")
        databases = values["DATABASES"]
        assert isinstance(databases, dict)
        return databases["default"]["PASSWORD"]

    assert password() == "in-the-url"
    assert password(DATABASE_PASSWORD_FILE=str(password_file)) == "from-the-secret-file"
    assert password(DATABASE_PASSWORD="from-the-variable") == "from-the-variable"
    message = refusal(environment(tmp_path, DATABASE_URL=url, DATABASE_PASSWORD_FILE=str(tmp_path / "none")))
    assert "DATABASE_PASSWORD_FILE: cannot read" in message


def test_it_never_lets_a_reference_read_the_catalog_password() -> None:
    """Whoever edits a target must not send the catalog's password to a server of their choosing."""
    for name in ("DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE"):
        assert backup_secrets.refusals("${" + name + "}"), name


# -- the admin's session -------------------------------------------------------------------------------

PASSWORD = "a-long-admin-password-1"


def test_it_reads_the_session_minutes(tmp_path: Path) -> None:
    assert settings_of(environment(tmp_path), "SESSION_COOKIE_AGE") == {"SESSION_COOKIE_AGE": 3600}
    custom = environment(tmp_path, BACKUPSITE_SESSION_MINUTES="15")
    assert settings_of(custom, "SESSION_COOKIE_AGE") == {"SESSION_COOKIE_AGE": 900}


def logged_in(client: Client) -> Session:
    User.objects.create_superuser("admin", "admin@example.net", PASSWORD)
    response = client.post("/admin/login/", {"username": "admin", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/", response.content[:500]
    return Session.objects.get(session_key=client.cookies["sessionid"].value)


def expiry(session: Session) -> timedelta:
    """How long ``session`` has left, as stored."""
    session.refresh_from_db()
    return session.expire_date - timezone.now()


def idle_for(session: Session, seconds: int) -> None:
    """Make the stored session look as if its last activity was ``seconds`` ago."""
    store = session.get_decoded()
    store[SEEN_KEY] = int(time.time()) - seconds
    session.session_data = Session.objects.encode(store)
    session.expire_date = timezone.now() + timedelta(seconds=3600 - seconds)
    session.save()


def within(left: timedelta, seconds: int) -> bool:
    return abs(left.total_seconds() - seconds) < 15  # a slow machine's few seconds


@pytest.mark.django_db
def test_it_ends_the_admin_session_after_an_hour_without_activity(client: Client) -> None:
    session = logged_in(client)
    assert within(expiry(session), 3600)
    assert client.cookies["sessionid"]["max-age"] == 3600
    idle_for(session, 3601)  # the stored expiry has passed: logged out
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_it_slides_the_session_with_activity_writing_at_most_once_a_minute(client: Client) -> None:
    session = logged_in(client)
    idle_for(session, 40)  # active 40 seconds ago: no write yet
    assert client.get("/admin/").status_code == 200
    assert within(expiry(session), 3600 - 40)
    assert "sessionid" not in client.get("/admin/").cookies  # no new cookie either
    idle_for(session, 20 * 60)  # twenty minutes idle, then a page: a full hour again
    response = client.get("/admin/")
    assert response.status_code == 200
    assert within(expiry(session), 3600)
    assert response.cookies["sessionid"]["max-age"] == 3600  # the browser's cookie slides too


@pytest.mark.django_db
def test_it_does_not_count_the_dashboards_polls_as_activity(client: Client) -> None:
    session = logged_in(client)
    idle_for(session, 50 * 60)
    assert client.get("/backups/progress.json").status_code == 200
    fetched = client.get("/admin/", headers={"Sec-Fetch-Mode": "cors"})  # the page's own refresh
    assert fetched.status_code == 200
    assert within(expiry(session), 10 * 60)  # still ten minutes left, not an hour
    idle_for(session, 3601)
    assert client.get("/backups/progress.json").status_code == 302  # the abandoned page is logged out
    navigated = client.get("/admin/", headers={"Sec-Fetch-Mode": "navigate"})
    assert navigated.status_code == 302 and navigated["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_it_never_creates_a_session_for_a_visitor(client: Client) -> None:
    assert client.get("/admin/login/").status_code == 200
    assert Session.objects.count() == 0
