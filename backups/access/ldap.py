"""The ``ldap`` login mode: django-auth-ldap configured only from ``AUTH_LDAP_*`` variables.

:func:`settings_from_env` turns an environment mapping into django-auth-ldap's settings (a plain
dict the settings module adds to its own); every bad value raises ImproperlyConfigured naming the
variable, and no message ever holds the bind password. The connection is always encrypted
(``ldaps://``, or ``ldap://`` with StartTLS) and always verifies the server's certificate.

:class:`LDAPBackend` is django-auth-ldap's backend with two refusals of its own: an empty
password (an unauthenticated bind that many servers accept as success) and taking over a local
account that has a password (the break-glass administrator of ``ldap,local``).

Imported by the settings only when ``ldap`` is a login mode: no models at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ldap  # type: ignore[import-untyped]
import ldapurl  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured
from django_auth_ldap.backend import LDAPBackend as BaseLDAPBackend
from django_auth_ldap.backend import populate_user
from django_auth_ldap.config import (
    GroupOfNamesType,
    LDAPSearch,
    NestedActiveDirectoryGroupType,
    NestedGroupOfNamesType,
    PosixGroupType,
)

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.http import HttpRequest

# A dead server must not hang a login: connecting, and then each LDAP operation, give up after these.
CONNECT_TIMEOUT_SECONDS = 10.0
OPERATION_TIMEOUT_SECONDS = 30.0

VARIABLES = (
    "AUTH_LDAP_SERVER_URI",
    "AUTH_LDAP_START_TLS",
    "AUTH_LDAP_CA_FILE",
    "AUTH_LDAP_BIND_DN",
    "AUTH_LDAP_BIND_PASSWORD",
    "AUTH_LDAP_BIND_PASSWORD_FILE",
    "AUTH_LDAP_USER_DN_TEMPLATE",
    "AUTH_LDAP_USER_SEARCH_BASE",
    "AUTH_LDAP_USER_SEARCH_FILTER",
    "AUTH_LDAP_GROUP_SEARCH_BASE",
    "AUTH_LDAP_GROUP_TYPE",
    "AUTH_LDAP_REQUIRE_GROUP",
    "AUTH_LDAP_DENY_GROUP",
)
DEFAULT_USER_SEARCH_FILTER = "(uid=%(user)s)"
# name -> (django-auth-ldap group type, the filter that finds such groups)
GROUP_TYPES: dict[str, tuple[Callable[[], Any], str]] = {
    "groupOfNames": (GroupOfNamesType, "(objectClass=groupOfNames)"),
    "nestedGroupOfNames": (NestedGroupOfNamesType, "(objectClass=groupOfNames)"),
    "posixGroup": (PosixGroupType, "(objectClass=posixGroup)"),
    "nestedActiveDirectory": (NestedActiveDirectoryGroupType, "(objectClass=group)"),
}
USER_ATTRIBUTES = {"first_name": "givenName", "last_name": "sn", "email": "mail"}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """django-auth-ldap's ``AUTH_LDAP_*`` settings from the variables in ``env`` (every setting
    this mode decides, so applying the result twice leaves nothing of the first)."""
    unknown = sorted(name for name in env if name.startswith("AUTH_LDAP_") and name not in VARIABLES)
    if unknown:
        # A misspelt AUTH_LDAP_REQUIRE_GROUP would otherwise let everyone in, silently.
        raise ImproperlyConfigured(
            f"{unknown[0]}: unknown variable; the LDAP mode reads {', '.join(VARIABLES)}"
        )
    values = {name: env.get(name, "").strip() for name in VARIABLES if name != "AUTH_LDAP_BIND_PASSWORD"}
    uri, start_tls = _server(values["AUTH_LDAP_SERVER_URI"], values["AUTH_LDAP_START_TLS"])
    bind_dn, bind_password = _bind_credentials(env, values)
    template, user_search = _user_lookup(values)
    group_type, group_search = _group_lookup(values)
    return {
        "AUTH_LDAP_SERVER_URI": uri,
        "AUTH_LDAP_START_TLS": start_tls,
        "AUTH_LDAP_CONNECTION_OPTIONS": _connection_options(values["AUTH_LDAP_CA_FILE"]),
        "AUTH_LDAP_BIND_DN": bind_dn,
        "AUTH_LDAP_BIND_PASSWORD": bind_password,
        # Without a service account the directory is read as the user who logs in.
        "AUTH_LDAP_BIND_AS_AUTHENTICATING_USER": not bind_dn,
        "AUTH_LDAP_USER_DN_TEMPLATE": template,
        "AUTH_LDAP_USER_SEARCH": user_search,
        "AUTH_LDAP_GROUP_TYPE": group_type,
        "AUTH_LDAP_GROUP_SEARCH": group_search,
        "AUTH_LDAP_REQUIRE_GROUP": _group_dn(values, "AUTH_LDAP_REQUIRE_GROUP", group_search),
        "AUTH_LDAP_DENY_GROUP": _group_dn(values, "AUTH_LDAP_DENY_GROUP", group_search),
        "AUTH_LDAP_USER_ATTR_MAP": dict(USER_ATTRIBUTES),
        "AUTH_LDAP_ALWAYS_UPDATE_USER": True,
        # Roles come from BACKUPSITE_ROLE_MAP, never from Django groups named after LDAP groups.
        "AUTH_LDAP_FIND_GROUP_PERMS": False,
        "AUTH_LDAP_MIRROR_GROUPS": False,
        "AUTH_LDAP_PERMIT_EMPTY_PASSWORD": False,
        "AUTH_LDAP_CACHE_TIMEOUT": 0,
    }


def _server(text: str, start_tls_text: str) -> tuple[str, bool]:
    name = "AUTH_LDAP_SERVER_URI"
    if not text:
        raise ImproperlyConfigured(f"{name}: not set; e.g. ldaps://ldap.example.org")
    start_tls = _bool("AUTH_LDAP_START_TLS", start_tls_text)
    uris = text.split()  # libldap tries a space-separated list in turn
    for uri in uris:
        scheme = uri.partition("://")[0].lower()
        if "://" not in uri or scheme not in ("ldap", "ldaps") or not _host(uri):
            raise ImproperlyConfigured(
                f"{name}: expected ldaps://host[:port] (or ldap://host[:port] with AUTH_LDAP_START_TLS=true), got {uri!r}"
            )
        if scheme == "ldap" and not start_tls:
            raise ImproperlyConfigured(
                f"{name}: {uri} would send passwords unencrypted; use ldaps:// or set AUTH_LDAP_START_TLS=true"
            )
        if scheme == "ldaps" and start_tls:
            raise ImproperlyConfigured(
                f"AUTH_LDAP_START_TLS: {uri} is already encrypted; StartTLS is for ldap:// only"
            )
    return " ".join(uris), start_tls


def _host(uri: str) -> str:
    try:
        return str(ldapurl.LDAPUrl(uri).hostport)
    except ValueError:
        return ""


def _connection_options(ca_file: str) -> dict[int, Any]:
    options: dict[int, Any] = {
        ldap.OPT_NETWORK_TIMEOUT: CONNECT_TIMEOUT_SECONDS,
        ldap.OPT_TIMEOUT: OPERATION_TIMEOUT_SECONDS,
        # libldap 2.5 bounds an ldaps:// handshake by the network timeout only when it connects
        # asynchronously: otherwise a server that accepts and never answers hangs the login.
        ldap.OPT_CONNECT_ASYNC: 1,
        # Active Directory answers searches at the domain root with referrals that libldap would
        # follow anonymously (and fail); the directory we bind to has what we need.
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_X_TLS_PROTOCOL_MIN: ldap.OPT_X_TLS_PROTOCOL_TLS1_2,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
    }
    if ca_file:
        options[ldap.OPT_X_TLS_CACERTFILE] = _ca_file(ca_file)
    # Last: builds this connection's TLS context from the options above (dicts keep their order).
    options[ldap.OPT_X_TLS_NEWCTX] = 0
    return options


def _ca_file(path: str) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ImproperlyConfigured(f"AUTH_LDAP_CA_FILE: cannot read {path}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ImproperlyConfigured(f"AUTH_LDAP_CA_FILE: {path} holds no PEM certificate")
    return path


def _bind_credentials(env: Mapping[str, str], values: dict[str, str]) -> tuple[str, str]:
    bind_dn = values["AUTH_LDAP_BIND_DN"]
    password = env.get("AUTH_LDAP_BIND_PASSWORD", "")
    password_file = values["AUTH_LDAP_BIND_PASSWORD_FILE"]
    if password and password_file:
        raise ImproperlyConfigured(
            "AUTH_LDAP_BIND_PASSWORD_FILE: set it or AUTH_LDAP_BIND_PASSWORD, not both"
        )
    if password_file:
        try:
            password = Path(password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(
                f"AUTH_LDAP_BIND_PASSWORD_FILE: cannot read {password_file}: {exc.strerror}"
            ) from None
        if not password:
            raise ImproperlyConfigured(f"AUTH_LDAP_BIND_PASSWORD_FILE: {password_file} is empty")
    if bind_dn:
        _check_dn("AUTH_LDAP_BIND_DN", bind_dn)
        if not password:
            raise ImproperlyConfigured(
                "AUTH_LDAP_BIND_DN: needs AUTH_LDAP_BIND_PASSWORD_FILE or AUTH_LDAP_BIND_PASSWORD"
            )
    elif password:
        name = "AUTH_LDAP_BIND_PASSWORD_FILE" if password_file else "AUTH_LDAP_BIND_PASSWORD"
        raise ImproperlyConfigured(f"{name}: set AUTH_LDAP_BIND_DN too (the account it belongs to)")
    return bind_dn, password


def _user_lookup(values: dict[str, str]) -> tuple[str | None, Any]:
    template = values["AUTH_LDAP_USER_DN_TEMPLATE"]
    base = values["AUTH_LDAP_USER_SEARCH_BASE"]
    search_filter = values["AUTH_LDAP_USER_SEARCH_FILTER"]
    if template and (base or search_filter):
        raise ImproperlyConfigured(
            "AUTH_LDAP_USER_DN_TEMPLATE: set it or AUTH_LDAP_USER_SEARCH_BASE (and _FILTER), not both"
        )
    if template:
        _check_dn("AUTH_LDAP_USER_DN_TEMPLATE", _fill("AUTH_LDAP_USER_DN_TEMPLATE", template))
        return template, None
    if not base:
        name = "AUTH_LDAP_USER_SEARCH_BASE" if search_filter else "AUTH_LDAP_USER_DN_TEMPLATE"
        raise ImproperlyConfigured(
            f"{name}: set AUTH_LDAP_USER_DN_TEMPLATE (uid=%(user)s,ou=people,dc=example,dc=org) "
            "or AUTH_LDAP_USER_SEARCH_BASE (ou=people,dc=example,dc=org)"
        )
    _check_dn("AUTH_LDAP_USER_SEARCH_BASE", base)
    search_filter = search_filter or DEFAULT_USER_SEARCH_FILTER
    _check_filter("AUTH_LDAP_USER_SEARCH_FILTER", _fill("AUTH_LDAP_USER_SEARCH_FILTER", search_filter))
    return None, LDAPSearch(base, ldap.SCOPE_SUBTREE, search_filter)


def _group_lookup(values: dict[str, str]) -> tuple[Any, Any]:
    base = values["AUTH_LDAP_GROUP_SEARCH_BASE"]
    type_name = values["AUTH_LDAP_GROUP_TYPE"]
    if not base:
        if type_name:
            raise ImproperlyConfigured("AUTH_LDAP_GROUP_TYPE: set AUTH_LDAP_GROUP_SEARCH_BASE too")
        return None, None
    _check_dn("AUTH_LDAP_GROUP_SEARCH_BASE", base)
    by_lower_name = {name.lower(): name for name in GROUP_TYPES}
    try:
        group_type, group_filter = GROUP_TYPES[by_lower_name[(type_name or "groupOfNames").lower()]]
    except KeyError:
        raise ImproperlyConfigured(
            f"AUTH_LDAP_GROUP_TYPE: unknown group type {type_name!r}; use {', '.join(GROUP_TYPES)}"
        ) from None
    return group_type(), LDAPSearch(base, ldap.SCOPE_SUBTREE, group_filter)


def _group_dn(values: dict[str, str], name: str, group_search: Any) -> str | None:
    dn = values[name]
    if not dn:
        return None
    if group_search is None:
        raise ImproperlyConfigured(f"{name}: set AUTH_LDAP_GROUP_SEARCH_BASE too")
    _check_dn(name, dn)
    # As the server writes DNs (no blanks after commas), for the nested types' string compare.
    return str(ldap.dn.dn2str(ldap.dn.str2dn(dn)))


def _fill(name: str, template: str) -> str:
    if "%(user)s" not in template:
        raise ImproperlyConfigured(f"{name}: must contain %(user)s, got {template!r}")
    try:
        return template % {"user": "someone"}
    except (ValueError, TypeError, KeyError):
        raise ImproperlyConfigured(
            f"{name}: only %(user)s may follow a '%' (write %% for a literal one), got {template!r}"
        ) from None


def _check_dn(name: str, dn: str) -> None:
    if not ldap.dn.is_dn(dn) or not ldap.dn.str2dn(dn):
        raise ImproperlyConfigured(f"{name}: not a distinguished name (e.g. dc=example,dc=org): {dn!r}")


def _check_filter(name: str, text: str) -> None:
    if not (text.startswith("(") and text.endswith(")")) or text.count("(") != text.count(")"):
        raise ImproperlyConfigured(f"{name}: not an LDAP filter (e.g. (uid=%(user)s)): {text!r}")


def _bool(name: str, text: str) -> bool:
    value = text.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false (1/0, yes/no, on/off), got {text!r}")


class LDAPBackend(BaseLDAPBackend):
    """django-auth-ldap's backend that refuses an empty password before connecting (whatever
    the settings say) and never logs an LDAP user into a local account that has a password."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        if not password:
            return None
        user: AbstractBaseUser | None = super().authenticate(request, username, password, **kwargs)
        return user

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[AbstractBaseUser, bool]:
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and user.has_usable_password():
            # A directory entry that happens to share the name of the local administrator.
            raise ldap_user.AuthenticationFailed(f"{username} is a local account (it has a password)")
        return user, built


GroupsReceiver = Callable[["AbstractBaseUser", list[str]], None]
_RECEIVER_UID = "backups.access.ldap.groups"


def connect_signals(receive_groups: GroupsReceiver) -> None:
    """Call ``receive_groups(user, group_dns)`` on each LDAP login, with the DNs (lower case) of
    every group the user is in, nested ones included, or [] without AUTH_LDAP_GROUP_SEARCH_BASE.
    It runs before the user is saved: a first login's user has no primary key yet. Connecting
    again replaces the receiver."""

    def on_populate_user(sender: type, user: AbstractBaseUser, ldap_user: Any, **kwargs: Any) -> None:
        group_dns = sorted(ldap_user.group_dns) if ldap_user.settings.GROUP_SEARCH is not None else []
        receive_groups(user, group_dns)

    disconnect_signals()
    populate_user.connect(on_populate_user, sender=LDAPBackend, weak=False, dispatch_uid=_RECEIVER_UID)


def disconnect_signals() -> None:
    populate_user.disconnect(sender=LDAPBackend, dispatch_uid=_RECEIVER_UID)
