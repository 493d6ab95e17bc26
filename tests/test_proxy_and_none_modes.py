"""The proxy login mode (the user and groups a trusted reverse proxy names in headers) and the
none mode (no login: everyone a read-only Viewer), through the real middleware, admin and views;
their start-up refusals in a fresh interpreter."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from backups import services
from backups.access.guest import BANNER, Guest
from backups.access.modes import backends_for, parse_modes
from backups.access.proxies import parse_networks
from backups.access.proxy import ProxyBackend
from backups.access.rolemap import parse_role_map
from backups.access.roles import ACTIONS as ROLE_ACTIONS
from backups.models import AuditEvent, RoleGrant, Target
from tests.conftest import REPO
from tests.test_role_matrix import ACTIONS, World, snapshot

pytestmark = pytest.mark.django_db

THROTTLE = "backups.access.throttle.LoginThrottle"
PROXY = "10.0.0.5"  # inside BACKUPSITE_TRUSTED_PROXIES below
ELSEWHERE = "192.0.2.7"
ROLE_MAP = '{"backup-admins": "Administrator", "team-shop": "Operator@shop", "all-staff": "Viewer"}'


def with_middleware(middleware: list[str], extra: str) -> list[str]:
    """``middleware`` with ``extra`` right after the audit's RequestMiddleware, as the settings put it."""
    position = middleware.index("backups.audit.RequestMiddleware") + 1
    return [*middleware[:position], extra, *middleware[position:]]


@pytest.fixture
def proxy_mode(settings) -> None:
    settings.BACKUPSITE_AUTH = parse_modes("proxy,local")
    settings.AUTHENTICATION_BACKENDS = [THROTTLE, *backends_for(settings.BACKUPSITE_AUTH)]
    settings.MIDDLEWARE = with_middleware(settings.MIDDLEWARE, "backups.access.proxy.ProxyUserMiddleware")
    settings.BACKUPSITE_TRUSTED_PROXIES = parse_networks("10.0.0.0/24, ::1")
    settings.BACKUPSITE_ROLE_MAP = parse_role_map(ROLE_MAP)


@pytest.fixture
def none_mode(settings) -> None:
    settings.BACKUPSITE_AUTH = parse_modes("none")
    settings.AUTHENTICATION_BACKENDS = [THROTTLE, *backends_for(settings.BACKUPSITE_AUTH)]
    settings.MIDDLEWARE = with_middleware(settings.MIDDLEWARE, "backups.access.guest.GuestMiddleware")


def proxied(client: Client, path: str, user: str | None, groups: str | None = None, **extra: Any):
    """GET ``path`` as the trusted proxy would pass it on, naming ``user`` (and ``groups``)."""
    headers: dict[str, Any] = dict(extra)
    headers.setdefault("REMOTE_ADDR", PROXY)
    if user is not None:
        headers["HTTP_X_REMOTE_USER"] = user
    if groups is not None:
        headers["HTTP_X_REMOTE_GROUPS"] = groups
    return client.get(path, **headers)


def logged_in_as(client: Client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return None if user_id is None else User.objects.get(pk=user_id).username


def roles_of(user: User) -> tuple[list[str], list[tuple[str, str]]]:
    user.refresh_from_db()
    groups = sorted(user.groups.values_list("name", flat=True))
    grants = sorted(RoleGrant.objects.filter(user=user, source="proxy").values_list("role", "tag"))
    return groups, grants


# -- proxy ------------------------------------------------------------------------------------------


def test_it_logs_in_the_user_a_trusted_proxy_names(client, proxy_mode):
    response = proxied(client, "/admin/", "carol", "backup-admins", HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert response.status_code == 200  # the dashboard
    carol = User.objects.get(username="carol")
    assert logged_in_as(client) == "carol"
    assert not carol.has_usable_password()  # the header names her; no password opens her account
    assert carol.is_staff and roles_of(carol) == (["Administrator"], [])
    (login,) = AuditEvent.objects.filter(action="login.success")
    assert (login.username, login.auth_method, login.address) == ("carol", "proxy", "198.51.100.9")
    assert client.session["backupsite_auth_method"] == "proxy"
    # Created with the unusable password in one save: no password change audited; the door opened.
    changes = AuditEvent.objects.filter(action="user.change").order_by("id")
    assert [(e.details["change"], e.details.get("fields")) for e in changes] == [
        ("added", None),
        ("changed", ["is_staff"]),
    ]

    assert proxied(client, "/admin/backups/backup/", "carol", "backup-admins").status_code == 200
    assert AuditEvent.objects.filter(action="login.success").count() == 1  # the session holds her


def test_it_ignores_the_headers_from_any_other_address_and_says_so_once(client, proxy_mode, caplog):
    caplog.set_level(logging.WARNING, logger="backups.access.proxy")
    for _ in range(3):
        response = proxied(client, "/admin/", "carol", "backup-admins", REMOTE_ADDR=ELSEWHERE)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    # X-Forwarded-For does not make a connection come from the proxy.
    proxied(client, "/admin/", "carol", REMOTE_ADDR=ELSEWHERE, HTTP_X_FORWARDED_FOR=PROXY)
    assert not User.objects.filter(username="carol").exists() and logged_in_as(client) is None
    warnings = [record.getMessage() for record in caplog.records if record.name == "backups.access.proxy"]
    assert warnings == [
        f"ignored the proxy login headers from {ELSEWHERE}: it is not in BACKUPSITE_TRUSTED_PROXIES"
    ]
    assert "carol" not in warnings[0] and "backup-admins" not in warnings[0]


def test_it_ends_a_proxy_login_when_the_proxy_stops_naming_the_user(client, proxy_mode):
    proxied(client, "/admin/", "carol", "all-staff")
    assert logged_in_as(client) == "carol"
    # The session cookie alone, straight to the application, is not enough.
    response = proxied(client, "/admin/", "carol", "all-staff", REMOTE_ADDR=ELSEWHERE)
    assert response.status_code == 302 and logged_in_as(client) is None
    proxied(client, "/admin/", "carol", "all-staff")
    assert logged_in_as(client) == "carol"
    assert proxied(client, "/admin/", None).status_code == 302 and logged_in_as(client) is None
    proxied(client, "/admin/", "carol", "all-staff")
    proxied(client, "/admin/", "dave", "all-staff")  # another person behind the same browser
    assert logged_in_as(client) == "dave"


def test_it_turns_the_groups_header_into_roles_and_follows_its_changes(client, proxy_mode):
    shop = Target.objects.create(name="shop-db", engine="sqlite", database="/srv/shop.db", tags=["shop"])
    other = Target.objects.create(name="billing", engine="sqlite", database="/srv/billing.db")
    proxied(client, "/admin/", "erin", "team-shop, unmapped-group")
    erin = User.objects.get(username="erin")
    assert erin.is_staff and roles_of(erin) == ([], [("Operator", "shop")])
    assert services.can(erin, "run", shop) and not services.can(erin, "run", other)

    # The proxy now lists her in other groups: the roles follow at the next request.
    assert proxied(client, "/admin/", "erin", "all-staff,backup-admins").status_code == 200
    assert roles_of(erin) == (["Administrator", "Viewer"], [])
    # No groups header (or an empty one): no groups, so no role and no admin.
    response = proxied(client, "/admin/", "erin")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert roles_of(erin) == ([], []) and not User.objects.get(pk=erin.pk).is_staff
    assert logged_in_as(client) == "erin"  # still signed in, with nothing to see
    assert AuditEvent.objects.filter(action="role.change", object_id=str(erin.pk)).exists()


def test_it_gives_no_admin_to_a_user_without_a_role(client, proxy_mode):
    response = proxied(client, "/admin/", "frank", "unmapped-group")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    frank = User.objects.get(username="frank")
    assert not frank.is_staff and roles_of(frank) == ([], [])


def test_it_leaves_roles_to_the_admin_without_a_groups_header_setting(client, proxy_mode, settings):
    settings.BACKUPSITE_PROXY_GROUPS_HEADER = ""
    grace = User.objects.create_user("grace", is_staff=True)  # no password: not a local account
    grace.groups.add(Group.objects.get(name="Operator"))
    assert proxied(client, "/admin/", "grace", "backup-admins").status_code == 200
    assert roles_of(grace) == (["Operator"], [])


def test_it_never_lets_the_header_take_over_a_local_account(client, proxy_mode, caplog):
    caplog.set_level(logging.WARNING, logger="backups.access.proxy")
    admin = User.objects.create_user("admin", password="Local-passw0rd!", is_staff=True, is_superuser=True)
    for _ in range(2):
        response = proxied(client, "/admin/", "admin", "backup-admins")
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert logged_in_as(client) is None
    assert not AuditEvent.objects.filter(action="login.success").exists()
    admin.refresh_from_db()
    assert admin.has_usable_password() and admin.check_password("Local-passw0rd!")
    assert [record.getMessage() for record in caplog.records] == [
        "proxy login refused: admin is a local account (it has a password); only that password opens it"
    ]
    # The backend refuses on its own too, and the local password still opens the account.
    assert ProxyBackend().authenticate(None, "admin") is None
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "admin", "password": "Local-passw0rd!"},
        REMOTE_ADDR=PROXY,
    )
    assert response.status_code == 302 and logged_in_as(client) == "admin"


# -- none -------------------------------------------------------------------------------------------


@pytest.fixture
def world(sqlite_target: Target, copy_target: Target, local_storage) -> World:
    return World(sqlite_target, copy_target, services.run_backup(sqlite_target), local_storage)


def test_it_shows_everyone_every_target_read_only_under_a_banner(client, none_mode, world):
    for path in (
        "/admin/",
        "/admin/backups/backup/",
        f"/admin/backups/backup/{world.backup.pk}/change/",
        "/admin/backups/target/",
        f"/backups/targets/{world.target.pk}/health/",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        page = response.content.decode()
        assert BANNER in page, path
        assert 'name="_save"' not in page, path  # no form to save anything
    assert world.target.name in client.get("/admin/").content.decode()
    assert client.get("/admin/backups/target/add/").status_code == 403
    assert client.get("/admin/backups/auditevent/").status_code == 403  # Administrators only


def test_it_refuses_every_action_and_changes_nothing(
    client, none_mode, world, eager_tasks, django_capture_on_commit_callbacks
):
    before = snapshot(world)
    target_before = Target.objects.values().get(pk=world.target.pk)
    with django_capture_on_commit_callbacks(execute=True):
        statuses = {action: ACTIONS[action](client, world) for action in ACTIONS if action != "view"}
        statuses["change a target"] = client.post(
            f"/admin/backups/target/{world.target.pk}/change/", {"name": "renamed"}
        ).status_code
        statuses["delete a target"] = client.post(
            f"/admin/backups/target/{world.target.pk}/delete/", {"post": "yes"}
        ).status_code
        statuses["log in"] = client.post("/admin/login/", {"username": "x", "password": "y"}).status_code
    assert statuses == dict.fromkeys(statuses, 403)
    assert snapshot(world) == before
    assert Target.objects.values().get(pk=world.target.pk) == target_before
    assert ACTIONS["view"](client, world) == 200


def test_it_gives_the_guest_exactly_the_viewer_role(none_mode, world):
    guest = Guest()
    viewer = Group.objects.get(name="Viewer")
    assert guest.get_all_permissions() == {
        f"{app}.{codename}"
        for app, codename in viewer.permissions.values_list("content_type__app_label", "codename")
    }
    for action in ROLE_ACTIONS:
        for target in (None, world.target):
            assert services.can(guest, action, target) is (action == "view"), (action, target)
    assert services.visible_target_ids(guest) is None
    assert not guest.has_perm("backups.add_target") and not guest.has_perm("backups.change_target")
    assert not guest.has_perm("backups.view_auditevent") and not guest.is_authenticated
    assert guest.has_module_perms("backups") and not guest.has_module_perms("auth")
    assert authenticate(username="guest", password="") is None  # nobody logs in


def test_it_warns_in_the_system_checks(settings, none_mode):
    assert "backups.W002" in {message.id for message in checks.run_checks()}
    settings.BACKUPSITE_AUTH = ["local"]
    assert "backups.W002" not in {message.id for message in checks.run_checks()}


def test_it_refuses_none_with_another_mode():
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_modes("none,local")
    assert str(raised.value) == "BACKUPSITE_AUTH: mode 'none' (no login) cannot be combined with others"
    assert backends_for(parse_modes("local,proxy")) == [
        "django.contrib.auth.backends.ModelBackend",
        "backups.access.proxy.ProxyBackend",
    ]


# -- start-up -----------------------------------------------------------------------------------------


def start_up(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Load backupsite.settings in a fresh interpreter with ``env``; print the login settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_LDAP_", "BACKUPSITE_", "OIDC_"))}
    base.update(BACKUPSITE_HOME=str(tmp_path / "home"), DJANGO_SETTINGS_MODULE="backupsite.settings", **env)
    script = (
        "import django, json; from django.conf import settings as s; django.setup();"
        "print(json.dumps([s.AUTHENTICATION_BACKENDS, s.MIDDLEWARE]))"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=base, capture_output=True, text=True)


def test_it_builds_the_proxy_and_none_settings_and_refuses_bad_ones(tmp_path):
    result = start_up(tmp_path, BACKUPSITE_AUTH="proxy,local", BACKUPSITE_TRUSTED_PROXIES="10.0.0.0/8")
    assert result.returncode == 0, result.stderr
    backends, middleware = json.loads(result.stdout)
    assert backends == [
        THROTTLE,
        "backups.access.proxy.ProxyBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    position = middleware.index("backups.access.proxy.ProxyUserMiddleware")
    assert middleware[position - 1] == "backups.audit.RequestMiddleware"
    assert middleware[-1] == "axes.middleware.AxesMiddleware"

    result = start_up(tmp_path, BACKUPSITE_AUTH="none")
    assert result.returncode == 0, result.stderr
    backends, middleware = json.loads(result.stdout)
    assert "backups.access.guest.GuestMiddleware" in middleware
    assert "backups.access.proxy.ProxyUserMiddleware" not in middleware

    refusals = {
        "BACKUPSITE_AUTH: mode 'proxy' needs BACKUPSITE_TRUSTED_PROXIES": {"BACKUPSITE_AUTH": "proxy"},
        "BACKUPSITE_AUTH: mode 'none' (no login) cannot be combined": {"BACKUPSITE_AUTH": "local,none"},
        "BACKUPSITE_PROXY_USER_HEADER: expected a header name": {
            "BACKUPSITE_PROXY_USER_HEADER": "X_Remote_User"
        },
        "BACKUPSITE_PROXY_USER_HEADER: mode 'proxy' needs": {
            "BACKUPSITE_AUTH": "proxy",
            "BACKUPSITE_TRUSTED_PROXIES": "10.0.0.1",
            "BACKUPSITE_PROXY_USER_HEADER": " ",
        },
    }
    for message, env in refusals.items():
        result = start_up(tmp_path, **env)
        assert result.returncode != 0, env
        assert f"ImproperlyConfigured: {message}" in result.stderr, result.stderr
