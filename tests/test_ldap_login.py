"""LDAP login: BACKUPSITE_AUTH and the AUTH_LDAP_* variables against a real OpenLDAP (slapd).

Two ways in, each with its own transport: a service account that searches for the user over
StartTLS, and a DN template bound as the user over LDAPS. The directory and its users are in
tests/servers/slapd.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap  # type: ignore[import-untyped]
import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.exceptions import ImproperlyConfigured
from django_auth_ldap.backend import ldap_error

from backups.access.ldap import connect_signals, disconnect_signals, settings_from_env
from backups.access.modes import BACKENDS, backends_for, parse_modes
from backups.access.rolemap import Grant, normalise_group, parse_role_map
from tests.conftest import REPO
from tests.servers import free_port, silent_listener
from tests.servers.slapd import (
    GROUPS,
    PEOPLE,
    POSIX_GROUPS,
    SERVICE_DN,
    LDAPServer,
    group_dn,
    install_problem,
    running_slapd,
    user_dn,
)

LDAP_BACKEND = "backups.access.ldap.LDAPBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
THROTTLE = "backups.access.throttle.LoginThrottle"  # first in every process's backends
KNOWN_MODES = ", ".join(BACKENDS)


@pytest.fixture(scope="session")
def slapd() -> Iterator[LDAPServer]:
    """A real OpenLDAP directory for the whole session."""
    problem = install_problem()
    if problem:
        pytest.skip(problem)
    with running_slapd() as server:
        yield server


def starttls_search_env(server: LDAPServer) -> dict[str, str]:
    """StartTLS on ldap://; a service account (password in a file) searches for the user."""
    return {
        "AUTH_LDAP_SERVER_URI": server.uri,
        "AUTH_LDAP_START_TLS": "true",
        "AUTH_LDAP_CA_FILE": str(server.ca_file),
        "AUTH_LDAP_BIND_DN": SERVICE_DN,
        "AUTH_LDAP_BIND_PASSWORD_FILE": str(server.service_password_file),
        "AUTH_LDAP_USER_SEARCH_BASE": PEOPLE,
        "AUTH_LDAP_GROUP_SEARCH_BASE": GROUPS,
        "AUTH_LDAP_GROUP_TYPE": "nestedGroupOfNames",
    }


def ldaps_template_env(server: LDAPServer) -> dict[str, str]:
    """LDAPS; the user's DN from a template, the directory read as that user."""
    return {
        "AUTH_LDAP_SERVER_URI": server.ldaps_uri,
        "AUTH_LDAP_CA_FILE": str(server.ca_file),
        "AUTH_LDAP_USER_DN_TEMPLATE": f"uid=%(user)s,{PEOPLE}",
        "AUTH_LDAP_GROUP_SEARCH_BASE": GROUPS,
        "AUTH_LDAP_GROUP_TYPE": "nestedGroupOfNames",
    }


CONNECTIONS = {"starttls-search": starttls_search_env, "ldaps-template": ldaps_template_env}


@pytest.fixture(params=list(CONNECTIONS))
def ldap_env(request, slapd: LDAPServer) -> dict[str, str]:
    return CONNECTIONS[request.param](slapd)


UseLDAP = Callable[..., dict[str, Any]]


@pytest.fixture
def use_ldap(settings) -> UseLDAP:
    """``use_ldap(env, modes="ldap", **overrides)``: the settings BACKUPSITE_AUTH=modes and the
    AUTH_LDAP_* variables ``env`` (a None override removes a variable) would give."""

    def apply(env: dict[str, str], modes: str = "ldap", **overrides: str | None) -> dict[str, Any]:
        merged = {name: value for name, value in {**env, **overrides}.items() if value is not None}
        values = settings_from_env(merged)
        for name, value in values.items():
            setattr(settings, name, value)
        settings.AUTHENTICATION_BACKENDS = backends_for(parse_modes(modes))
        return values

    return apply


@pytest.fixture
def received_groups() -> Iterator[dict[str, list[str]]]:
    """username -> the group DNs connect_signals' receiver got at that user's last LDAP login."""
    received: dict[str, list[str]] = {}

    def receive(user, group_dns):
        received[user.get_username()] = group_dns

    connect_signals(receive)
    yield received
    disconnect_signals()


def backend_of(user: Any) -> str:
    """The backend that let ``user`` in (authenticate() sets it on the user it returns)."""
    assert user is not None
    return str(user.backend)


def first_event(events: list[str], text: str) -> int:
    """The position of the first of a connection's events that contains ``text``."""
    return next(number for number, event in enumerate(events) if text in f" {event}")


def bind_dns(events: list[str]) -> list[str]:
    """The DNs a connection bound as, from its slapd log events."""
    return [event.split('BIND dn="', 1)[1].split('"', 1)[0] for event in events if ' BIND dn="' in event]


# Logging in


@pytest.mark.django_db
def test_it_logs_in_with_authenticate_and_fills_the_user_from_the_directory(slapd, ldap_env, use_ldap):
    use_ldap(ldap_env)
    user = authenticate(username="alice", password=slapd.passwords["alice"])
    assert user is not None
    assert backend_of(user) == LDAP_BACKEND
    assert (user.first_name, user.last_name, user.email) == ("Alice", "Liddell", "alice@example.org")
    assert not user.has_usable_password()  # an LDAP user never logs in locally

    assert authenticate(username="alice", password=slapd.passwords["bob"]) is None
    assert authenticate(username="nobody", password=slapd.passwords["alice"]) is None


@pytest.mark.django_db
def test_it_logs_in_through_the_admin_login_form(slapd, ldap_env, use_ldap, client):
    use_ldap(ldap_env)
    role_map = parse_role_map(json.dumps({group_dn("backup-restorers"): "Restorer"}))

    def staff_if_granted(user, group_dns):  # what the roles code will do, in one line
        user.is_staff = bool(role_map.grants_for(group_dns))

    connect_signals(staff_if_granted)
    try:
        response = client.post(
            "/admin/login/?next=/admin/", {"username": "alice", "password": slapd.passwords["alice"]}
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        assert response["Location"] == "/admin/"
        assert client.session["_auth_user_backend"] == LDAP_BACKEND
        assert get_user_model().objects.get(pk=client.session["_auth_user_id"]).username == "alice"

        client.logout()
        response = client.post("/admin/login/", {"username": "alice", "password": "wrong password"})
        assert response.status_code == 200 and "_auth_user_id" not in client.session
        # dave's password is right, but no group gives him a role: not staff, so no admin.
        response = client.post("/admin/login/", {"username": "dave", "password": slapd.passwords["dave"]})
        assert response.status_code == 200 and "_auth_user_id" not in client.session
        assert b"staff account" in response.content
    finally:
        disconnect_signals()


@pytest.mark.django_db
def test_it_refuses_an_empty_password_without_binding(slapd, settings, use_ldap):
    use_ldap(starttls_search_env(slapd))
    settings.AUTH_LDAP_PERMIT_EMPTY_PASSWORD = True  # not even if someone turns it on
    mark = slapd.log_mark()
    assert authenticate(username="alice", password="") is None
    assert authenticate(username="alice", password=None) is None
    assert authenticate(username="alice") is None
    assert slapd.connections_since(mark) == {}  # no connection at all, so no bind

    # The log does show a login attempt (a wrong password): the check above can fail.
    assert authenticate(username="alice", password="wrong") is None
    binds = [dn for events in slapd.connections_since(mark).values() for dn in bind_dns(events)]
    assert user_dn("alice") in binds


@pytest.mark.django_db
def test_it_never_connects_in_clear_text(slapd, use_ldap):
    use_ldap(starttls_search_env(slapd))
    mark = slapd.log_mark()
    assert authenticate(username="bob", password=slapd.passwords["bob"]) is not None
    connections = slapd.connections_since(mark)
    assert connections and all(bind_dns(events) for events in connections.values())
    for events in connections.values():  # StartTLS, then the handshake, and only then a bind
        starttls, handshake = first_event(events, " STARTTLS"), first_event(events, " TLS established")
        assert starttls < handshake < first_event(events, " BIND dn="), events


# Groups


@pytest.mark.django_db
def test_it_finds_the_users_groups_including_nested_ones(slapd, ldap_env, use_ldap, received_groups):
    use_ldap(ldap_env)
    for uid in ("alice", "bob", "carol", "dave"):
        assert authenticate(username=uid, password=slapd.passwords[uid]) is not None
    assert received_groups == {
        "alice": [group_dn("backup-restorers")],
        "bob": [group_dn("all-staff"), group_dn("team-shop")],  # all-staff through team-shop
        "carol": [group_dn("all-staff"), group_dn("blocked")],
        "dave": [],
    }


@pytest.mark.django_db
def test_it_finds_only_direct_groups_with_group_of_names(slapd, use_ldap, received_groups):
    use_ldap(starttls_search_env(slapd), AUTH_LDAP_GROUP_TYPE="groupOfNames")
    assert authenticate(username="bob", password=slapd.passwords["bob"]) is not None
    assert received_groups["bob"] == [group_dn("team-shop")]


@pytest.mark.django_db
def test_it_finds_posix_groups(slapd, use_ldap, received_groups):
    use_ldap(
        starttls_search_env(slapd),
        AUTH_LDAP_GROUP_SEARCH_BASE=POSIX_GROUPS,
        AUTH_LDAP_GROUP_TYPE="posixGroup",
    )
    for uid in ("alice", "bob"):
        assert authenticate(username=uid, password=slapd.passwords[uid]) is not None
    assert received_groups == {"alice": [f"cn=operators,{POSIX_GROUPS}"], "bob": []}


@pytest.mark.django_db
def test_it_lets_in_only_the_required_group_and_the_deny_group_wins(slapd, ldap_env, use_ldap):
    use_ldap(
        ldap_env,
        # written with blanks and capitals, as people copy DNs
        AUTH_LDAP_REQUIRE_GROUP=f"CN=all-staff, {GROUPS}",
        AUTH_LDAP_DENY_GROUP=f"cn=blocked, {GROUPS}",
    )
    allowed = {
        uid
        for uid in ("alice", "bob", "carol", "dave")
        if authenticate(username=uid, password=slapd.passwords[uid])
    }
    assert allowed == {"bob"}  # in all-staff through team-shop; carol is in all-staff and blocked


@pytest.mark.django_db
def test_it_gives_the_test_users_their_grants(slapd, ldap_env, use_ldap, received_groups):
    use_ldap(ldap_env)
    role_map = parse_role_map(
        json.dumps(
            {
                "CN=Backup-Restorers, OU=Groups, DC=Example, DC=Org": "restorer",
                group_dn("team-shop"): "Restorer@shop",
                group_dn("all-staff"): ["Viewer"],
                "cn=nobody-here,ou=groups,dc=example,dc=org": "Administrator",
            }
        )
    )
    for uid in ("alice", "bob", "carol", "dave"):
        assert authenticate(username=uid, password=slapd.passwords[uid]) is not None
    grants = {uid: role_map.grants_for(groups) for uid, groups in received_groups.items()}
    assert grants == {
        "alice": [Grant("Restorer")],
        "bob": [Grant("Restorer", "shop"), Grant("Viewer")],
        "carol": [Grant("Viewer")],
        "dave": [],
    }


# Certificates and dead servers


@pytest.mark.django_db
@pytest.mark.parametrize("ca", ["other", "system"])
def test_it_refuses_a_server_whose_certificate_it_cannot_verify(slapd, ldap_env, use_ldap, ca):
    # "other": a CA that did not sign the server's certificate; "system": the system's CAs.
    use_ldap(ldap_env, AUTH_LDAP_CA_FILE=str(slapd.other_ca_file) if ca == "other" else None)
    errors: list[BaseException] = []

    def record(sender, context, exception, **kwargs):
        errors.append(exception)

    mark = slapd.log_mark()
    ldap_error.connect(record)
    try:
        assert authenticate(username="alice", password=slapd.passwords["alice"]) is None
    finally:
        ldap_error.disconnect(record)
    assert errors and isinstance(errors[0], ldap.CONNECT_ERROR | ldap.SERVER_DOWN), errors
    # The client hung up in the handshake (TLS 1.3: after the server's side of it), before any bind.
    connections = slapd.connections_since(mark)
    assert connections and not any(bind_dns(events) for events in connections.values())


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["ldap", "ldaps"])
def test_it_gives_up_on_a_server_that_never_answers(slapd, use_ldap, settings, scheme):
    with silent_listener() as port:
        env = ldaps_template_env(slapd)
        env.update(
            AUTH_LDAP_SERVER_URI=f"{scheme}://127.0.0.1:{port}", AUTH_LDAP_START_TLS=str(scheme == "ldap")
        )
        values = use_ldap(env)
        options = values["AUTH_LDAP_CONNECTION_OPTIONS"]
        assert options[ldap.OPT_NETWORK_TIMEOUT] == 10 and options[ldap.OPT_TIMEOUT] == 30
        # The same options, shortened so the test is quick.
        settings.AUTH_LDAP_CONNECTION_OPTIONS = {
            **options,
            ldap.OPT_NETWORK_TIMEOUT: 1.0,
            ldap.OPT_TIMEOUT: 1.0,
        }
        started = time.monotonic()
        assert authenticate(username="alice", password=slapd.passwords["alice"]) is None
        assert time.monotonic() - started < 8


@pytest.mark.django_db
def test_it_tries_the_next_server_when_one_refuses_connections(slapd, use_ldap):
    use_ldap(
        ldaps_template_env(slapd), AUTH_LDAP_SERVER_URI=f"ldaps://127.0.0.1:{free_port()} {slapd.ldaps_uri}"
    )
    assert authenticate(username="alice", password=slapd.passwords["alice"]) is not None


# Local accounts beside LDAP


@pytest.mark.django_db
def test_it_lets_a_local_superuser_in_when_ldap_local_is_set(slapd, ldap_env, use_ldap, client):
    get_user_model().objects.create_superuser("breakglass", "root@example.org", "local-Passw0rd!")
    use_ldap(ldap_env, modes="ldap,local")
    user = authenticate(username="breakglass", password="local-Passw0rd!")
    assert user is not None and backend_of(user) == MODEL_BACKEND
    assert backend_of(authenticate(username="alice", password=slapd.passwords["alice"])) == LDAP_BACKEND

    response = client.post(
        "/admin/login/?next=/admin/", {"username": "breakglass", "password": "local-Passw0rd!"}
    )
    assert response.status_code == 302 and client.session["_auth_user_backend"] == MODEL_BACKEND

    # The point of break-glass: the directory is down, the local administrator still gets in.
    dead_uri = ldap_env["AUTH_LDAP_SERVER_URI"].rsplit(":", 1)[0] + f":{free_port()}"
    use_ldap(ldap_env, modes="ldap,local", AUTH_LDAP_SERVER_URI=dead_uri)
    assert authenticate(username="alice", password=slapd.passwords["alice"]) is None
    assert backend_of(authenticate(username="breakglass", password="local-Passw0rd!")) == MODEL_BACKEND

    use_ldap(ldap_env, modes="ldap")  # without local, the local account is no way in
    assert authenticate(username="breakglass", password="local-Passw0rd!") is None


@pytest.mark.django_db
def test_it_never_logs_a_directory_user_into_a_local_account_of_the_same_name(slapd, ldap_env, use_ldap):
    local = get_user_model().objects.create_superuser("admin", "root@example.org", "local-Passw0rd!")
    use_ldap(ldap_env, modes="ldap,local")
    assert authenticate(username="admin", password=slapd.passwords["admin"]) is None
    user = authenticate(username="admin", password="local-Passw0rd!")
    assert user is not None and backend_of(user) == MODEL_BACKEND
    local.refresh_from_db()
    assert local.first_name == "" and local.is_superuser  # not rewritten from the directory entry


# Secrets


@pytest.mark.django_db
def test_it_keeps_passwords_out_of_the_logs(slapd, use_ldap, caplog):
    use_ldap(starttls_search_env(slapd))
    with caplog.at_level(logging.DEBUG):
        authenticate(username="alice", password=slapd.passwords["alice"])
        authenticate(username="alice", password=slapd.passwords["bob"])
        authenticate(username="alice", password="")
    assert "Binding as" in caplog.text  # django-auth-ldap did log, at DEBUG
    for secret in (slapd.passwords["alice"], slapd.passwords["bob"], slapd.passwords["service"]):
        assert secret not in caplog.text


# Configuration


def valid_env() -> dict[str, str]:
    return {
        "AUTH_LDAP_SERVER_URI": "ldaps://ldap.example.org",
        "AUTH_LDAP_BIND_DN": SERVICE_DN,
        "AUTH_LDAP_BIND_PASSWORD": "s3cret-Bind-passw0rd",
        "AUTH_LDAP_USER_SEARCH_BASE": PEOPLE,
        "AUTH_LDAP_GROUP_SEARCH_BASE": GROUPS,
    }


def test_it_builds_django_auth_ldaps_settings_from_the_environment(tmp_path):
    values = settings_from_env(valid_env())
    assert values["AUTH_LDAP_SERVER_URI"] == "ldaps://ldap.example.org"
    assert values["AUTH_LDAP_USER_SEARCH"].filterstr == "(uid=%(user)s)"
    assert values["AUTH_LDAP_USER_DN_TEMPLATE"] is None
    assert type(values["AUTH_LDAP_GROUP_TYPE"]).__name__ == "GroupOfNamesType"
    assert values["AUTH_LDAP_BIND_AS_AUTHENTICATING_USER"] is False
    assert values["AUTH_LDAP_USER_ATTR_MAP"] == {
        "first_name": "givenName",
        "last_name": "sn",
        "email": "mail",
    }
    assert values["AUTH_LDAP_FIND_GROUP_PERMS"] is False and values["AUTH_LDAP_MIRROR_GROUPS"] is False
    assert values["AUTH_LDAP_ALWAYS_UPDATE_USER"] is True
    options = values["AUTH_LDAP_CONNECTION_OPTIONS"]
    assert options[ldap.OPT_X_TLS_REQUIRE_CERT] == ldap.OPT_X_TLS_DEMAND
    assert ldap.OPT_X_TLS_CACERTFILE not in options  # the system's CAs
    assert list(options)[-1] == ldap.OPT_X_TLS_NEWCTX

    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    active_directory = settings_from_env(
        {
            **valid_env(),
            "AUTH_LDAP_CA_FILE": str(ca_file),
            "AUTH_LDAP_USER_SEARCH_FILTER": "(sAMAccountName=%(user)s)",
            "AUTH_LDAP_GROUP_TYPE": "NestedActiveDirectory",
        }
    )
    assert active_directory["AUTH_LDAP_CONNECTION_OPTIONS"][ldap.OPT_X_TLS_CACERTFILE] == str(ca_file)
    assert active_directory["AUTH_LDAP_USER_SEARCH"].filterstr == "(sAMAccountName=%(user)s)"
    assert type(active_directory["AUTH_LDAP_GROUP_TYPE"]).__name__ == "NestedActiveDirectoryGroupType"
    assert active_directory["AUTH_LDAP_GROUP_SEARCH"].filterstr == "(objectClass=group)"


MISSING = "/nonexistent/backupsite-test"
BAD_VALUES = {
    "no-uri": ({"AUTH_LDAP_SERVER_URI": None}, "AUTH_LDAP_SERVER_URI"),
    "plain-ldap": ({"AUTH_LDAP_SERVER_URI": "ldap://ldap.example.org"}, "AUTH_LDAP_SERVER_URI"),
    "plain-ldap-start-tls-off": (
        {"AUTH_LDAP_SERVER_URI": "ldap://ldap.example.org", "AUTH_LDAP_START_TLS": "false"},
        "AUTH_LDAP_SERVER_URI",
    ),
    "second-uri-plain": (
        {"AUTH_LDAP_SERVER_URI": "ldaps://a.example.org ldap://b.example.org"},
        "AUTH_LDAP_SERVER_URI",
    ),
    "http-uri": ({"AUTH_LDAP_SERVER_URI": "https://ldap.example.org"}, "AUTH_LDAP_SERVER_URI"),
    "no-host": ({"AUTH_LDAP_SERVER_URI": "ldaps://"}, "AUTH_LDAP_SERVER_URI"),
    "start-tls-on-ldaps": ({"AUTH_LDAP_START_TLS": "true"}, "AUTH_LDAP_START_TLS"),
    "start-tls-not-a-bool": (
        {"AUTH_LDAP_SERVER_URI": "ldap://ldap.example.org", "AUTH_LDAP_START_TLS": "sometimes"},
        "AUTH_LDAP_START_TLS",
    ),
    "ca-file-missing": ({"AUTH_LDAP_CA_FILE": MISSING}, "AUTH_LDAP_CA_FILE"),
    "ca-file-not-pem": ({"AUTH_LDAP_CA_FILE": "/etc/hostname"}, "AUTH_LDAP_CA_FILE"),
    "password-file-unreadable": (
        {"AUTH_LDAP_BIND_PASSWORD": None, "AUTH_LDAP_BIND_PASSWORD_FILE": MISSING},
        "AUTH_LDAP_BIND_PASSWORD_FILE",
    ),
    "password-and-file": ({"AUTH_LDAP_BIND_PASSWORD_FILE": "/etc/hostname"}, "AUTH_LDAP_BIND_PASSWORD_FILE"),
    "bind-dn-without-password": ({"AUTH_LDAP_BIND_PASSWORD": None}, "AUTH_LDAP_BIND_DN"),
    "password-without-bind-dn": ({"AUTH_LDAP_BIND_DN": None}, "AUTH_LDAP_BIND_PASSWORD"),
    "bind-dn-not-a-dn": ({"AUTH_LDAP_BIND_DN": "backupsite"}, "AUTH_LDAP_BIND_DN"),
    "no-user-lookup": ({"AUTH_LDAP_USER_SEARCH_BASE": None}, "AUTH_LDAP_USER_DN_TEMPLATE"),
    "filter-without-base": (
        {"AUTH_LDAP_USER_SEARCH_BASE": None, "AUTH_LDAP_USER_SEARCH_FILTER": "(uid=%(user)s)"},
        "AUTH_LDAP_USER_SEARCH_BASE",
    ),
    "template-and-search": (
        {"AUTH_LDAP_USER_DN_TEMPLATE": f"uid=%(user)s,{PEOPLE}"},
        "AUTH_LDAP_USER_DN_TEMPLATE",
    ),
    "template-without-user": (
        {"AUTH_LDAP_USER_SEARCH_BASE": None, "AUTH_LDAP_USER_DN_TEMPLATE": f"uid=alice,{PEOPLE}"},
        "AUTH_LDAP_USER_DN_TEMPLATE",
    ),
    "template-stray-percent": (
        {"AUTH_LDAP_USER_SEARCH_BASE": None, "AUTH_LDAP_USER_DN_TEMPLATE": f"uid=%(user)s,o=100%,{PEOPLE}"},
        "AUTH_LDAP_USER_DN_TEMPLATE",
    ),
    "filter-without-user": ({"AUTH_LDAP_USER_SEARCH_FILTER": "(uid=alice)"}, "AUTH_LDAP_USER_SEARCH_FILTER"),
    "filter-not-a-filter": ({"AUTH_LDAP_USER_SEARCH_FILTER": "uid=%(user)s"}, "AUTH_LDAP_USER_SEARCH_FILTER"),
    "search-base-not-a-dn": ({"AUTH_LDAP_USER_SEARCH_BASE": "people"}, "AUTH_LDAP_USER_SEARCH_BASE"),
    "unknown-group-type": ({"AUTH_LDAP_GROUP_TYPE": "groupOfUniqueNames"}, "AUTH_LDAP_GROUP_TYPE"),
    "group-type-without-base": (
        {"AUTH_LDAP_GROUP_SEARCH_BASE": None, "AUTH_LDAP_GROUP_TYPE": "posixGroup"},
        "AUTH_LDAP_GROUP_TYPE",
    ),
    "require-group-without-base": (
        {"AUTH_LDAP_GROUP_SEARCH_BASE": None, "AUTH_LDAP_REQUIRE_GROUP": group_dn("all-staff")},
        "AUTH_LDAP_REQUIRE_GROUP",
    ),
    "deny-group-not-a-dn": ({"AUTH_LDAP_DENY_GROUP": "blocked"}, "AUTH_LDAP_DENY_GROUP"),
    "misspelt-variable": ({"AUTH_LDAP_REQUIRE_GROUPS": group_dn("all-staff")}, "AUTH_LDAP_REQUIRE_GROUPS"),
}


@pytest.mark.parametrize("overrides, variable", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_it_stops_start_up_on_a_bad_value_naming_the_variable(overrides, variable):
    env = {name: value for name, value in {**valid_env(), **overrides}.items() if value is not None}
    with pytest.raises(ImproperlyConfigured) as raised:
        settings_from_env(env)
    message = str(raised.value)
    assert message.startswith(f"{variable}:"), message
    assert "s3cret-Bind-passw0rd" not in message


def test_it_reads_the_bind_password_from_a_file_and_refuses_an_empty_one(tmp_path):
    password_file = tmp_path / "bind-password"
    password_file.write_text("  spaces kept: yes  \n")
    env = {**valid_env(), "AUTH_LDAP_BIND_PASSWORD_FILE": str(password_file)}
    del env["AUTH_LDAP_BIND_PASSWORD"]
    assert settings_from_env(env)["AUTH_LDAP_BIND_PASSWORD"] == "  spaces kept: yes  "
    password_file.write_text("\n")
    with pytest.raises(ImproperlyConfigured, match=r"^AUTH_LDAP_BIND_PASSWORD_FILE: .* is empty"):
        settings_from_env(env)


# Login modes


def test_it_maps_login_modes_to_backends_in_the_listed_order():
    assert parse_modes("local") == ["local"]
    assert parse_modes(" LDAP , local ") == ["ldap", "local"]
    assert backends_for(parse_modes("ldap,local")) == [LDAP_BACKEND, MODEL_BACKEND]
    assert backends_for(parse_modes("local,ldap")) == [MODEL_BACKEND, LDAP_BACKEND]


@pytest.mark.parametrize(
    "text, message",
    [
        ("kerberos", f"BACKUPSITE_AUTH: unknown mode 'kerberos'; use {KNOWN_MODES}"),
        ("ldap,lcoal", f"BACKUPSITE_AUTH: unknown mode 'lcoal'; use {KNOWN_MODES}"),
        ("none,ldap", "BACKUPSITE_AUTH: mode 'none' (no login) cannot be combined with others"),
        ("ldap,ldap", "BACKUPSITE_AUTH: mode 'ldap' is listed twice"),
        (" , ", f"BACKUPSITE_AUTH: name at least one login mode; use {KNOWN_MODES}"),
    ],
)
def test_it_refuses_unknown_login_modes(text, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_modes(text)
    assert str(raised.value) == message


def start_up(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Load backupsite.settings in a fresh interpreter with ``env``; print the login settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_LDAP_", "BACKUPSITE_"))}
    base.update(BACKUPSITE_HOME=str(tmp_path / "home"), DJANGO_SETTINGS_MODULE="backupsite.settings", **env)
    script = (
        "import django, json; from django.conf import settings as s; django.setup();"
        "print(json.dumps([s.AUTHENTICATION_BACKENDS, getattr(s, 'AUTH_LDAP_SERVER_URI', None)]))"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=base, capture_output=True, text=True)


def test_it_builds_the_login_settings_at_start_up(tmp_path):
    result = start_up(tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[THROTTLE, MODEL_BACKEND], None]

    ldap_env = {
        **valid_env(),
        "BACKUPSITE_AUTH": "ldap,local",
        "BACKUPSITE_ROLE_MAP": '{"cn=a,dc=b": "Viewer"}',
    }
    result = start_up(tmp_path, **ldap_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[THROTTLE, LDAP_BACKEND, MODEL_BACKEND], "ldaps://ldap.example.org"]

    result = start_up(tmp_path, **{**ldap_env, "AUTH_LDAP_SERVER_URI": "ldap://ldap.example.org"})
    assert result.returncode != 0 and "ImproperlyConfigured: AUTH_LDAP_SERVER_URI:" in result.stderr
    assert "s3cret-Bind-passw0rd" not in result.stderr
    result = start_up(tmp_path, BACKUPSITE_AUTH="ldap,sso")
    assert result.returncode != 0 and "BACKUPSITE_AUTH: unknown mode 'sso'" in result.stderr
    result = start_up(tmp_path, BACKUPSITE_ROLE_MAP='{"cn=a,dc=b": "Boss"}')
    assert (
        result.returncode != 0
        and "BACKUPSITE_ROLE_MAP: group 'cn=a,dc=b': unknown role 'Boss'" in result.stderr
    )


# The role map


def test_it_grants_roles_from_groups_case_and_blank_insensitively():
    role_map = parse_role_map(
        """{"cn=backup-restorers,ou=groups,dc=example,dc=org": "Restorer",
            "CN=Team-Shop, OU=Groups, DC=Example, DC=Org": ["operator@shop", "Viewer"],
            "ops": "ADMINISTRATOR"}"""
    )
    assert role_map.grants_for(["CN=Backup-Restorers, ou=groups,dc=example,dc=org"]) == [Grant("Restorer")]
    assert role_map.grants_for(["cn=team-shop,ou=groups,dc=example,dc=org", "Ops", "unknown"]) == [
        Grant("Operator", "shop"),
        Grant("Viewer"),
        Grant("Administrator"),
    ]
    assert role_map.grants_for([]) == []
    assert parse_role_map("").grants_for(["ops"]) == []
    assert normalise_group(" CN=A ,  DC=B ") == "cn=a,dc=b"
    with pytest.raises(AttributeError):
        Grant("Viewer").role = "Administrator"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "BACKUPSITE_ROLE_MAP: not valid JSON"),
        ('["Viewer"]', "BACKUPSITE_ROLE_MAP: expected a JSON object"),
        ('{"ops": "Boss"}', "BACKUPSITE_ROLE_MAP: group 'ops': unknown role 'Boss' in 'Boss'"),
        ('{"ops": "Viewer@"}', "BACKUPSITE_ROLE_MAP: group 'ops': 'Viewer@' names no tag"),
        ('{"ops": 3}', "BACKUPSITE_ROLE_MAP: group 'ops': expected a role or a list of roles, got 3"),
        ('{"ops": []}', "BACKUPSITE_ROLE_MAP: group 'ops': expected a role or a list of roles, got []"),
        ('{"ops": "Viewer", "ops": "Operator"}', "BACKUPSITE_ROLE_MAP: group 'ops' is listed twice"),
        (
            '{"cn=a,dc=b": "Viewer", "CN=A, DC=B": "Operator"}',
            "BACKUPSITE_ROLE_MAP: group 'CN=A, DC=B' is listed twice",
        ),
        ('{" ": "Viewer"}', "BACKUPSITE_ROLE_MAP: a group name is empty"),
    ],
)
def test_it_refuses_a_bad_role_map_naming_the_key_or_value(text, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_role_map(text)
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.django_db
def test_it_gives_directory_users_their_roles_at_each_login_and_takes_them_away(
    slapd, use_ldap, settings, client
):
    from django.contrib.auth.models import User

    from backups.access import directory
    from backups.models import RoleGrant, Target

    use_ldap(starttls_search_env(slapd))
    settings.BACKUPSITE_AUTH = ["ldap"]
    settings.BACKUPSITE_ROLE_MAP = parse_role_map(
        json.dumps(
            {
                group_dn("backup-restorers"): "Restorer",
                group_dn("all-staff"): ["Viewer@shop", "Operator@shop"],
            }
        )
    )
    shop = Target.objects.create(name="shop-db", engine="sqlite", database="/shop", tags=["shop"])
    billing = Target.objects.create(name="billing-db", engine="sqlite", database="/billing", tags=["billing"])
    directory.connect()
    try:
        assert (
            client.post(
                "/admin/login/", {"username": "alice", "password": slapd.passwords["alice"]}
            ).status_code
            == 302
        )
        alice = User.objects.get(username="alice")
        assert alice.is_staff and list(alice.groups.values_list("name", flat=True)) == ["Restorer"]
        client.logout()

        # bob is in all-staff through team-shop (nested): Operator on the shop's targets only.
        assert (
            client.post("/admin/login/", {"username": "bob", "password": slapd.passwords["bob"]}).status_code
            == 302
        )
        bob = User.objects.get(username="bob")
        assert set(RoleGrant.objects.filter(user=bob).values_list("role", "tag", "source")) == {
            ("Viewer", "shop", "ldap"),
            ("Operator", "shop", "ldap"),
        }
        page = client.get("/admin/").content.decode()
        assert f'data-target="{shop.pk}"' in page and f'data-target="{billing.pk}"' not in page
        assert client.post(f"/backups/targets/{billing.pk}/run/").status_code == 403
        client.logout()

        # The directory drops the mapping: at the next login the role is gone, and so is the door.
        settings.BACKUPSITE_ROLE_MAP = parse_role_map(json.dumps({group_dn("all-staff"): "Viewer@shop"}))
        response = client.post("/admin/login/", {"username": "alice", "password": slapd.passwords["alice"]})
        assert response.status_code == 200 and b"staff account" in response.content
        alice.refresh_from_db()
        assert not alice.is_staff and not alice.groups.exists()
    finally:
        disconnect_signals()
