"""OpenID Connect login: the OIDC_* variables, discovery, and logins through the test client
against a real provider (django-oauth-toolkit, tests/servers/oidc.py), with the provider's pages
answered by ``requests`` (the browser version is tests/browser/test_oidc_login.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation

from backups.access.modes import backends_for, parse_modes
from backups.access.oidc import provider, settings_from_env
from backups.access.oidc.backend import check_id_token, groups_from, username_from
from backups.models import AuditEvent, RoleGrant
from tests.conftest import REPO
from tests.servers import free_port, silent_listener
from tests.servers.oidc import (
    CLIENT_ID,
    PROVIDER_NAME,
    OIDCProvider,
    oidc_provider_fixture,  # noqa: F401  (the oidc_provider fixture)
    use_oidc,
)

OIDC_BACKEND = "backups.access.oidc.backend.OIDCBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
SECRET = "s3cret-Client-s3cret"


def valid_env(**overrides: str) -> dict[str, str]:
    return {
        "OIDC_ISSUER": "https://id.example.org/realms/staff/",
        "OIDC_RP_CLIENT_ID": "backupsite",
        "OIDC_RP_CLIENT_SECRET": SECRET,
        **overrides,
    }


# The variables


def test_it_builds_the_oidc_settings_from_the_environment(tmp_path):
    values = settings_from_env(valid_env())
    assert values["OIDC_ISSUER"] == "https://id.example.org/realms/staff"  # compared without the slash
    assert values["OIDC_RP_CLIENT_ID"] == "backupsite"
    assert values["OIDC_RP_CLIENT_SECRET"] == SECRET
    assert values["OIDC_RP_SCOPES"] == "openid email profile"
    assert (values["OIDC_ROLES_CLAIM"], values["OIDC_USERNAME_CLAIM"]) == ("groups", "preferred_username")
    assert values["OIDC_PROVIDER_NAME"] == "single sign-on"
    assert (values["OIDC_USE_PKCE"], values["OIDC_PKCE_CODE_CHALLENGE_METHOD"]) == (True, "S256")
    assert (values["OIDC_RP_SIGN_ALGO"], values["OIDC_RP_IDP_SIGN_KEY"]) == ("RS256", None)
    assert values["OIDC_USE_NONCE"] is True and values["OIDC_VERIFY_SSL"] is True
    assert not values["OIDC_STORE_ACCESS_TOKEN"] and not values["OIDC_STORE_ID_TOKEN"]
    assert not any(name.startswith("OIDC_OP_") for name in values)  # endpoints are discovered

    secret_file = tmp_path / "client-secret"
    secret_file.write_text(SECRET + "\n")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    values = settings_from_env(
        valid_env(
            OIDC_ISSUER="http://127.0.0.1:8080/o",  # plain HTTP only on the loopback
            OIDC_RP_CLIENT_SECRET="",
            OIDC_RP_CLIENT_SECRET_FILE=str(secret_file),
            OIDC_RP_SCOPES="openid  email profile groups email",
            OIDC_ROLES_CLAIM="roles",
            OIDC_USERNAME_CLAIM="email",
            OIDC_PROVIDER_NAME="Keycloak",
            OIDC_CA_FILE=str(ca_file),
        )
    )
    assert values["OIDC_ISSUER"] == "http://127.0.0.1:8080/o"
    assert values["OIDC_RP_CLIENT_SECRET"] == SECRET
    assert values["OIDC_RP_SCOPES"] == "openid email profile groups"
    assert (values["OIDC_ROLES_CLAIM"], values["OIDC_USERNAME_CLAIM"]) == ("roles", "email")
    assert values["OIDC_PROVIDER_NAME"] == "Keycloak"
    assert values["OIDC_VERIFY_SSL"] == str(ca_file)


@pytest.mark.parametrize(
    "overrides, variable",
    [
        ({"OIDC_ISSUER": ""}, "OIDC_ISSUER"),
        ({"OIDC_ISSUER": "id.example.org"}, "OIDC_ISSUER"),
        ({"OIDC_ISSUER": "ldaps://id.example.org"}, "OIDC_ISSUER"),
        ({"OIDC_ISSUER": "http://id.example.org/realms/staff"}, "OIDC_ISSUER"),
        ({"OIDC_ISSUER": "https://id.example.org/?realm=staff"}, "OIDC_ISSUER"),
        ({"OIDC_RP_CLIENT_ID": ""}, "OIDC_RP_CLIENT_ID"),
        ({"OIDC_RP_CLIENT_SECRET": ""}, "OIDC_RP_CLIENT_SECRET_FILE"),
        ({"OIDC_RP_CLIENT_SECRET_FILE": "/nonexistent/secret"}, "OIDC_RP_CLIENT_SECRET_FILE"),
        (
            {"OIDC_RP_CLIENT_SECRET": "", "OIDC_RP_CLIENT_SECRET_FILE": "/nonexistent/secret"},
            "OIDC_RP_CLIENT_SECRET_FILE",
        ),
        ({"OIDC_RP_SCOPES": "email profile"}, "OIDC_RP_SCOPES"),
        ({"OIDC_ROLES_CLAIM": "realm roles"}, "OIDC_ROLES_CLAIM"),
        ({"OIDC_USERNAME_CLAIM": "preferred username"}, "OIDC_USERNAME_CLAIM"),
        ({"OIDC_CA_FILE": "/nonexistent/ca.pem"}, "OIDC_CA_FILE"),
        ({"OIDC_CA_FILE": str(REPO / "pyproject.toml")}, "OIDC_CA_FILE"),
        ({"OIDC_ROLE_CLAIM": "groups"}, "OIDC_ROLE_CLAIM"),
        ({"OIDC_OP_TOKEN_ENDPOINT": "https://id.example.org/token"}, "OIDC_OP_TOKEN_ENDPOINT"),
    ],
)
def test_it_stops_start_up_on_a_bad_value_naming_the_variable(overrides, variable):
    with pytest.raises(ImproperlyConfigured) as raised:
        settings_from_env(valid_env(**overrides))
    assert str(raised.value).startswith(f"{variable}: "), str(raised.value)
    assert SECRET not in str(raised.value)


def test_it_refuses_an_empty_secret_file(tmp_path):
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("\n")
    with pytest.raises(ImproperlyConfigured, match=r"^OIDC_RP_CLIENT_SECRET_FILE: .* is empty"):
        settings_from_env(valid_env(OIDC_RP_CLIENT_SECRET="", OIDC_RP_CLIENT_SECRET_FILE=str(secret_file)))


def test_it_maps_the_oidc_mode_to_its_backend():
    assert backends_for(parse_modes("oidc,local")) == [OIDC_BACKEND, MODEL_BACKEND]
    assert backends_for(parse_modes("local, OIDC")) == [MODEL_BACKEND, OIDC_BACKEND]


def start_up(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Load backupsite.settings and its URLs in a fresh interpreter with ``env``; print the
    backends, the OIDC settings that are no secret and the login URL."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_LDAP_", "BACKUPSITE_", "OIDC_"))}
    base.update(BACKUPSITE_HOME=str(tmp_path / "home"), DJANGO_SETTINGS_MODULE="backupsite.settings", **env)
    script = (
        "import django, json; from django.conf import settings as s; django.setup();"
        "from django.urls import reverse;"
        "print(json.dumps([s.AUTHENTICATION_BACKENDS, getattr(s, 'OIDC_ISSUER', None),"
        " getattr(s, 'OIDC_RP_CLIENT_ID', None), reverse('oidc_authentication_init'),"
        " reverse('oidc_authentication_callback'), s.TEMPLATES[0]['OPTIONS']['context_processors'][-1]]))"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=base, capture_output=True, text=True)


def test_it_builds_the_login_settings_at_start_up_without_the_provider(tmp_path):
    # Nothing listens on the issuer's port: start-up does not need the provider.
    env = {
        **valid_env(OIDC_ISSUER=f"http://127.0.0.1:{free_port()}/realms/staff"),
        "BACKUPSITE_AUTH": "oidc,local",
        "BACKUPSITE_ROLE_MAP": '{"backup-admins": "Administrator"}',
    }
    result = start_up(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    backends, *rest = json.loads(result.stdout)
    assert [path for path in backends if path in (OIDC_BACKEND, MODEL_BACKEND)] == [
        OIDC_BACKEND,
        MODEL_BACKEND,
    ]
    assert rest == [
        env["OIDC_ISSUER"],
        "backupsite",
        "/oidc/authenticate/",
        "/oidc/callback/",
        "backups.access.oidc.views.login_context",
    ]

    result = start_up(tmp_path, **{**env, "OIDC_ISSUER": "http://id.example.org"})
    assert result.returncode != 0 and "ImproperlyConfigured: OIDC_ISSUER:" in result.stderr
    assert SECRET not in result.stderr
    result = start_up(tmp_path, **{**env, "OIDC_RP_CLIENT_ID": ""})
    assert result.returncode != 0 and "ImproperlyConfigured: OIDC_RP_CLIENT_ID:" in result.stderr

    # Without the mode, the variables are not read and there is no /oidc/.
    result = start_up(tmp_path, BACKUPSITE_AUTH="local", OIDC_ISSUER="nonsense")
    assert result.returncode != 0 and "NoReverseMatch" in result.stderr


# Claims


def test_it_reads_the_username_and_the_groups_from_the_configured_claims(settings):
    settings.OIDC_USERNAME_CLAIM = "preferred_username"
    settings.OIDC_ROLES_CLAIM = "groups"
    assert username_from({"preferred_username": " rita "}) == "rita"
    assert username_from({"preferred_username": 7}) == username_from({}) == ""
    assert groups_from({"groups": ["backup-restorers", 3, "staff"]}) == ["backup-restorers", "staff"]
    assert groups_from({"groups": "staff"}) == ["staff"]
    assert groups_from({"groups": {"staff": True}}) == groups_from({}) == []
    settings.OIDC_ROLES_CLAIM = "roles"
    assert groups_from({"groups": ["staff"], "roles": ["backup-admins"]}) == ["backup-admins"]
    grants = settings.BACKUPSITE_ROLE_MAP.grants_for(groups_from({"roles": ["backup-admins"]}))
    assert grants == []  # the test settings map nothing


def test_it_accepts_only_id_tokens_issued_by_the_issuer_for_this_client():
    issuer = "https://id.example.org/realms/staff"
    check_id_token({"iss": issuer, "aud": CLIENT_ID}, issuer=issuer, client_id=CLIENT_ID)
    check_id_token(
        {"iss": issuer, "aud": [CLIENT_ID, "other"], "azp": CLIENT_ID}, issuer=issuer, client_id=CLIENT_ID
    )
    for payload in (
        {"iss": "https://evil.example.org", "aud": CLIENT_ID},
        {"iss": issuer, "aud": "other"},
        {"iss": issuer},
        {"iss": issuer, "aud": [CLIENT_ID, "other"], "azp": "other"},
    ):
        with pytest.raises(SuspiciousOperation):
            check_id_token(payload, issuer=issuer, client_id=CLIENT_ID)


# Discovery


def test_it_discovers_the_endpoints_and_keeps_them(oidc_provider: OIDCProvider, settings):
    use_oidc(settings, oidc_provider.env())
    found = provider.endpoints()
    assert found.issuer == oidc_provider.issuer
    assert found.authorization_endpoint == f"{oidc_provider.issuer}/authorize/"
    assert found.token_endpoint == f"{oidc_provider.issuer}/token/"
    assert found.jwks_uri.startswith(oidc_provider.issuer)
    assert provider.endpoints() is found  # cached: one read


def test_it_says_why_a_provider_is_unusable(oidc_provider: OIDCProvider):
    def unusable(issuer: str, timeout: float = 5) -> str:
        with pytest.raises(provider.ProviderUnavailable) as raised:
            provider.read_endpoints(issuer, verify=True, timeout=timeout)
        return str(raised.value)

    closed = f"http://127.0.0.1:{free_port()}/o"
    assert unusable(closed) == f"{closed}/.well-known/openid-configuration cannot be reached (connection refused or unknown host)"  # fmt: skip
    with silent_listener() as port:
        assert "did not answer within 0.5 s" in unusable(f"http://127.0.0.1:{port}/o", timeout=0.5)
    assert "answered HTTP 404" in unusable(f"{oidc_provider.url}/elsewhere")
    # The same provider by another name: the document's issuer is not the one configured.
    other_name = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    assert f"names the issuer '{oidc_provider.issuer}', not '{other_name}'" in unusable(other_name)


# Logging in through the test client


def log_in(client, oidc_provider: OIDCProvider, username: str, allow: bool = True):
    """An OIDC login as ``username``: the start, the provider's pages, the callback. Returns the
    callback's response."""
    start = client.get("/oidc/authenticate/?next=/admin/")
    assert start.status_code == 302, start.content
    query = parse_qs(urlsplit(start["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["scope"] == ["openid email profile"] and query["nonce"][0]
    back = oidc_provider.sign_in(start["Location"], username, allow=allow)
    assert back.startswith("http://testserver/oidc/callback/?"), back
    return client.get(back.removeprefix("http://testserver"))


def messages_of(client) -> str:
    return client.get("/admin/login/").content.decode()


@pytest.mark.django_db
def test_it_logs_in_with_roles_from_the_groups_claim_and_audits_it(oidc_provider, settings, client, caplog):
    use_oidc(settings, oidc_provider.env())
    caplog.set_level(logging.DEBUG)

    response = log_in(client, oidc_provider, "rita")

    assert response.status_code == 302 and response["Location"] == "/admin/"
    rita = User.objects.get(username="rita")
    assert (rita.first_name, rita.last_name, rita.email) == ("Rita", "Restorer", "rita@example.org")
    assert rita.is_staff and not rita.has_usable_password()
    assert set(rita.groups.values_list("name", flat=True)) == {"Restorer", "Viewer"}
    assert client.get("/admin/").status_code == 200
    login = AuditEvent.objects.filter(action="login.success").get()
    assert (login.username, login.auth_method, login.outcome) == ("rita", "oidc", "success")
    assert oidc_provider.client_secret not in caplog.text

    client.post("/admin/logout/")
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    logout = AuditEvent.objects.filter(action="logout").get()
    assert (logout.username, logout.auth_method) == ("rita", "oidc")


@pytest.mark.django_db
def test_it_sends_the_provider_back_to_the_base_url_behind_a_proxy(oidc_provider, settings, client):
    use_oidc(settings, oidc_provider.env())
    settings.BACKUPSITE_BASE_URL = "http://127.0.0.1:8443/"  # where the proxy's clients reach Backupsite

    start = client.get("/oidc/authenticate/")

    assert parse_qs(urlsplit(start["Location"]).query)["redirect_uri"] == [
        "http://127.0.0.1:8443/oidc/callback/"
    ]
    back = oidc_provider.sign_in(start["Location"], "vera")
    assert back.startswith("http://127.0.0.1:8443/oidc/callback/?")
    # The token request names the same redirect URI, or the provider refuses the code.
    assert client.get(back.removeprefix("http://127.0.0.1:8443"))["Location"] == "/admin/"


@pytest.mark.django_db
def test_it_gives_tag_scoped_roles_and_reevaluates_them_at_each_login(oidc_provider, settings, client):
    use_oidc(settings, oidc_provider.env())
    assert log_in(client, oidc_provider, "olga")["Location"] == "/admin/"
    olga = User.objects.get(username="olga")
    assert set(RoleGrant.objects.filter(user=olga).values_list("role", "tag", "source")) == {
        ("Operator", "shop", "oidc")
    }
    client.post("/admin/logout/")

    # The map no longer names olga's group: at the next login the grant and the door are gone.
    use_oidc(settings, oidc_provider.env(), role_map={"staff": "Viewer"})
    response = log_in(client, oidc_provider, "olga")
    assert response["Location"] == "/admin/login/"
    assert "none of your groups gives a role in Backupsite" in messages_of(client)
    olga.refresh_from_db()
    assert not olga.is_staff and not RoleGrant.objects.filter(user=olga).exists()
    failure = AuditEvent.objects.filter(action="login.failure").get()
    assert (failure.username, failure.outcome) == ("olga", "failure")


@pytest.mark.django_db
def test_it_refuses_a_user_whose_groups_give_no_role(oidc_provider, settings, client):
    use_oidc(settings, oidc_provider.env())
    response = log_in(client, oidc_provider, "nora")
    assert response["Location"] == "/admin/login/"
    page = messages_of(client)
    assert f"You are signed in at {PROVIDER_NAME} as nora, but none of your groups" in page
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    assert not User.objects.get(username="nora").is_staff


@pytest.mark.django_db
def test_it_never_takes_over_a_local_account_with_a_password(oidc_provider, settings, client):
    use_oidc(settings, oidc_provider.env())
    local = User.objects.create_superuser("admin", "root@localhost", "break-glass-password")

    response = log_in(client, oidc_provider, "admin")

    assert response["Location"] == "/admin/login/"
    assert f"{PROVIDER_NAME} did not log you in" in messages_of(client)
    local.refresh_from_db()
    assert local.email == "root@localhost" and local.check_password("break-glass-password")
    assert not AuditEvent.objects.filter(action="login.success").exists()
    # The local password still opens it.
    assert (
        client.post("/admin/login/", {"username": "admin", "password": "break-glass-password"}).status_code
        == 302
    )


@pytest.mark.django_db
def test_it_returns_to_the_login_page_when_the_user_cancels(oidc_provider, settings, client):
    use_oidc(settings, oidc_provider.env())
    response = log_in(client, oidc_provider, "rita", allow=False)
    assert response["Location"] == "/admin/login/"
    assert f"{PROVIDER_NAME} did not log you in" in messages_of(client)
    assert not User.objects.filter(username="rita").exists()


@pytest.mark.django_db
def test_it_refuses_a_callback_it_did_not_ask_for(oidc_provider, settings, client, caplog):
    use_oidc(settings, oidc_provider.env())
    client.get("/oidc/authenticate/")  # a login under way, with its own state

    response = client.get("/oidc/callback/?code=forged&state=forged")

    assert response["Location"] == "/admin/login/"
    assert f"{PROVIDER_NAME} did not log you in" in messages_of(client)
    assert "OpenID Connect login refused: OIDC callback state not found" in caplog.text


@pytest.mark.django_db
def test_it_refuses_a_wrong_client_secret_without_showing_it(oidc_provider, settings, client, caplog):
    use_oidc(settings, oidc_provider.env())
    settings.OIDC_RP_CLIENT_SECRET = SECRET  # not the one the provider holds

    response = log_in(client, oidc_provider, "rita")

    assert response["Location"] == "/admin/login/"
    page = messages_of(client)
    assert f"{PROVIDER_NAME} is unavailable (it answered HTTP 401)" in page
    assert SECRET not in page and SECRET not in caplog.text
    assert not User.objects.filter(username="rita").exists()


@pytest.mark.django_db
def test_it_shows_a_clear_error_when_the_provider_is_unreachable(settings, client):
    closed = f"http://127.0.0.1:{free_port()}/o"
    use_oidc(
        settings, {"OIDC_ISSUER": closed, "OIDC_RP_CLIENT_ID": CLIENT_ID, "OIDC_RP_CLIENT_SECRET": SECRET}
    )

    response = client.get("/oidc/authenticate/?next=/admin/")

    assert response.status_code == 302 and response["Location"] == "/admin/login/"
    page = messages_of(client)
    assert "Single sign-on is unavailable" in page and "cannot be reached" in page
    assert "or log in with your username and password" in page
    assert SECRET not in page


@pytest.mark.django_db
def test_it_puts_the_button_on_the_login_page_only_with_the_oidc_mode(oidc_provider, settings, client):
    page = client.get("/admin/login/").content.decode()
    assert "oidc-login" not in page and 'id="login-form"' in page

    use_oidc(settings, oidc_provider.env())
    page = client.get("/admin/login/?next=/admin/backups/").content.decode()
    assert f">Log in with {PROVIDER_NAME}</a>" in page
    assert 'href="/oidc/authenticate/?next=/admin/backups/"' in page
    assert 'id="login-form"' in page

    use_oidc(settings, oidc_provider.env(), modes="oidc")  # no password mode: no password form
    page = client.get("/admin/login/").content.decode()
    assert f">Log in with {PROVIDER_NAME}</a>" in page and 'id="login-form"' not in page
