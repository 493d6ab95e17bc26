"""Login throttling (django-axes) through the real admin login form: failures lock one name from
one client address (behind trusted proxies, the client's), the page says for how long, the
cool-off ends it, and the lockout is audited without any password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db.models import F
from django.test import Client

from backups.access.proxies import parse_networks
from backups.models import AuditEvent
from tests.conftest import REPO

pytestmark = pytest.mark.django_db

PASSWORD = "Corr3ct-horse:battery"
WRONG = "wr0ng-Guess:"
HERE = "198.51.100.7"
THERE = "203.0.113.50"
LOCKED = "Too many failed logins: this account is locked from your address for the next 15 min."


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password=PASSWORD, is_staff=True, is_superuser=True)


def log_in(client: Client, password: str, address: str = HERE, username: str = "alice", **extra: Any):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        **extra,
    )


def fail(client: Client, times: int, address: str = HERE, **extra: Any) -> list[int]:
    return [log_in(client, f"{WRONG}{n}", address, **extra).status_code for n in range(times)]


def test_it_locks_a_name_out_from_an_address_after_repeated_failures(client, alice):
    assert fail(client, 4) == [200] * 4  # the form again, with its error
    response = log_in(client, f"{WRONG}last")
    assert response.status_code == 429
    # Even the right password is refused now, on the login page, saying how long.
    response = log_in(client, PASSWORD)
    page = response.content.decode()
    assert response.status_code == 429 and LOCKED in page
    assert 'id="login-form"' in page and "Please enter the correct username" not in page
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/", REMOTE_ADDR=HERE).status_code == 302  # not logged in


def test_it_locks_only_that_name_from_that_address(client, alice):
    User.objects.create_user("bob", password=PASSWORD, is_staff=True)
    fail(client, 5)
    assert log_in(client, PASSWORD).status_code == 429
    assert log_in(Client(), PASSWORD, address=THERE).status_code == 302  # alice, elsewhere
    assert log_in(Client(), PASSWORD, username="bob").status_code == 302  # bob, from here


def test_it_lets_the_name_in_again_once_the_cool_off_has_passed(client, alice, settings):
    fail(client, 5)
    assert log_in(client, PASSWORD).status_code == 429
    # Fifteen minutes and a second pass since the last attempt.
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    response = log_in(client, PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert not AccessAttempt.objects.exists()  # a successful login forgets the failures


def test_it_starts_the_wait_again_at_each_attempt_while_locked(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=2)
    assert fail(client, 2) == [200, 429]
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=90))
    response = log_in(client, PASSWORD)  # still locked: and the wait starts again
    assert response.status_code == 429
    assert "locked from your address for the next 2 min." in response.content.decode()
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=90))
    assert log_in(client, PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=121))
    assert log_in(client, PASSWORD).status_code == 302


def test_it_audits_the_lockout_and_never_stores_a_password(client, alice):
    fail(client, 5)
    log_in(client, PASSWORD)
    log_in(client, PASSWORD)
    (lockout,) = AuditEvent.objects.filter(action="login.lockout")  # once, though refused thrice
    assert (lockout.user, lockout.username, lockout.address) == (None, "alice", HERE)
    assert (lockout.outcome, lockout.auth_method) == ("refused", "none")
    assert lockout.details == {"failures": 5, "cooloff_seconds": 900}
    assert AuditEvent.objects.filter(action="login.failure").count() == 7
    assert not AuditEvent.objects.filter(action="login.success").exists()
    rows = AuditEvent.objects.values_list("username", "address", "object_repr", "details")
    attempts = AccessAttempt.objects.values_list("username", "get_data", "post_data")
    stored = json.dumps([list(rows), list(attempts)], default=str)
    assert PASSWORD not in stored and WRONG not in stored


def test_it_counts_the_client_behind_a_trusted_proxy_and_not_a_forged_address(client, alice, settings):
    settings.BACKUPSITE_TRUSTED_PROXIES = parse_networks("10.0.0.0/24")
    proxy = "10.0.0.2"
    fail(client, 5, address=proxy, HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert log_in(client, PASSWORD, proxy, HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 429
    # Another client behind the same proxy is not locked out.
    assert log_in(Client(), PASSWORD, proxy, HTTP_X_FORWARDED_FOR="192.0.2.2").status_code == 302
    assert AuditEvent.objects.get(action="login.lockout").address == "192.0.2.1"

    # From an address that is no proxy, X-Forwarded-For is not believed: a new one each time
    # does not escape the count.
    other = Client()
    statuses = [
        log_in(other, f"{WRONG}{n}", HERE, HTTP_X_FORWARDED_FOR=f"192.0.2.{n + 10}").status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]
    assert AccessAttempt.objects.filter(ip_address=HERE).count() == 1


def test_it_counts_only_logins_that_name_a_user(rf, alice):
    # An OpenID Connect callback names nobody: its provider throttles its own logins, and its
    # failures from an office's address must not lock that office out.
    for _ in range(7):
        assert authenticate(rf.get("/oidc/callback/", REMOTE_ADDR=HERE), code="forged", state="x") is None
    assert not AccessAttempt.objects.exists()
    assert AuditEvent.objects.filter(action="login.failure").count() == 7
    assert not AuditEvent.objects.filter(action="login.lockout").exists()


def test_it_leaves_logins_without_a_request_to_the_other_backends(alice):
    # A command, or the test client's login(), comes from no address: nothing to throttle.
    assert authenticate(username="alice", password=PASSWORD) == alice
    assert authenticate(username="alice", password=WRONG) is None


def start_up(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_LDAP_", "BACKUPSITE_", "OIDC_"))}
    base.update(BACKUPSITE_HOME=str(tmp_path / "home"), DJANGO_SETTINGS_MODULE="backupsite.settings", **env)
    script = (
        "import django, json; from django.conf import settings as s; django.setup();"
        "print(json.dumps([s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), s.AUTHENTICATION_BACKENDS]))"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=base, capture_output=True, text=True)


def test_it_reads_the_limit_and_the_cool_off_from_the_environment(tmp_path):
    result = start_up(tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        5,
        900,
        ["backups.access.throttle.LoginThrottle", "django.contrib.auth.backends.ModelBackend"],
    ]
    result = start_up(tmp_path, BACKUPSITE_LOGIN_FAILURE_LIMIT="3", BACKUPSITE_LOGIN_COOLOFF_MINUTES="60")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[:2] == [3, 3600]
    for name, value in (
        ("BACKUPSITE_LOGIN_FAILURE_LIMIT", "0"),
        ("BACKUPSITE_LOGIN_COOLOFF_MINUTES", "soon"),
    ):
        result = start_up(tmp_path, **{name: value})
        assert (
            result.returncode != 0
            and f"ImproperlyConfigured: {name}: expected a whole number" in result.stderr
        )
