"""The ``proxy`` login mode: a reverse proxy that has signed the user in (oauth2-proxy, Apache's
mod_auth_openidc or mod_auth_mellon, nginx ``auth_request``) names them in a request header,
``BACKUPSITE_PROXY_USER_HEADER`` (default ``X-Remote-User``), and their groups, comma-separated,
in ``BACKUPSITE_PROXY_GROUPS_HEADER`` (default ``X-Remote-Groups``; empty: roles are not taken
from the proxy but given in the admin).

The headers are believed only on a connection from ``BACKUPSITE_TRUSTED_PROXIES`` (the peer's
``REMOTE_ADDR``, never X-Forwarded-For): anyone else can write them, so from anywhere else they
are removed from the request, and that is logged once per address. :class:`ProxyUserMiddleware`
is Django's ``RemoteUserMiddleware`` with that check; it logs the named user in (a session, so
the login is audited once) and out again when a proxied request no longer names them.
:class:`ProxyBackend` creates a user at first sight without a usable password and never opens a
local account that has one (refused and logged: only its password opens it). The groups go
through ``BACKUPSITE_ROLE_MAP`` (``directory.remember_groups``) at the login and whenever the
header's groups change; a user they give no role has no admin.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.hashers import make_password
from django.contrib.auth.middleware import RemoteUserMiddleware
from django.http import HttpRequest

from backups.access.directory import remember_groups

logger = logging.getLogger(__name__)

SOURCE = "proxy"
BACKEND = f"{__name__}.ProxyBackend"
GROUPS_SESSION_KEY = "backupsite_proxy_groups"  # the groups last applied to the session's user
AUTH_METHOD_SESSION_KEY = "backupsite_auth_method"  # backups.audit's mark: events say "proxy"
WARN_LIMIT = 10_000  # addresses and names remembered as logged about; then forgotten, all at once


def meta_key(header: str) -> str:
    """The ``request.META`` key of an HTTP header: ``X-Remote-User`` -> ``HTTP_X_REMOTE_USER``."""
    return "HTTP_" + header.upper().replace("-", "_")


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the connection comes from one of ``BACKUPSITE_TRUSTED_PROXIES``."""
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer in network for network in settings.BACKUPSITE_TRUSTED_PROXIES)


def parse_groups(value: str) -> list[str]:
    """The groups of a groups header: comma-separated, blanks around them ignored, sorted, once."""
    return sorted({group.strip() for group in value.split(",") if group.strip()})


def is_local_account(username: str) -> bool:
    """Whether ``username`` is an account with a usable password (the header must not open it)."""
    user_model = get_user_model()
    user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    return user is not None and user.has_usable_password()


def end_proxy_login(request: HttpRequest) -> None:
    """Log out the session's user if the proxy logged them in (a local login stays)."""
    if request.session.get(BACKEND_SESSION_KEY) == BACKEND:
        auth.logout(request)


class ProxyBackend(RemoteUserBackend):
    """Django's remote-user backend: users created at first sight have no usable password; an
    existing account that has one is refused."""

    # The remote user's signature, as Django's RemoteUserBackend (django-stubs ignores it there too).
    def authenticate(self, request: HttpRequest | None, remote_user: str) -> Any:  # type: ignore[override]
        if not remote_user:
            return None
        username = self.clean_username(remote_user)
        user_model = get_user_model()
        # One save, with the unusable password (a second would be audited as a password change).
        user, created = user_model._default_manager.get_or_create(
            **{user_model.USERNAME_FIELD: username}, defaults={"password": make_password(None)}
        )
        if not created and user.has_usable_password():
            logger.warning("proxy login refused: %s is a local account (it has a password)", username)
            return None
        return user if self.user_can_authenticate(user) else None

    async def aauthenticate(self, request: HttpRequest | None, remote_user: str) -> Any:  # type: ignore[override]
        return await sync_to_async(self.authenticate)(request, remote_user)


class ProxyUserMiddleware(RemoteUserMiddleware):
    """After ``AuthenticationMiddleware`` and the audit's ``RequestMiddleware``: the user the
    trusted proxy names, logged in; their roles from the groups header. A proxy login's session
    ends at the first request that does not name that user (another name, no header, or a
    connection from elsewhere); a local login's session is left alone."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        self.user_key = meta_key(settings.BACKUPSITE_PROXY_USER_HEADER)
        groups_header = settings.BACKUPSITE_PROXY_GROUPS_HEADER
        self.groups_key = meta_key(groups_header) if groups_header else ""
        self._logged: set[tuple[str, str]] = set()

    def process_request(self, request: HttpRequest) -> None:
        name = self._named_user(request)
        if request.user.is_authenticated and request.user.get_username() != name:
            end_proxy_login(request)
        if name and not request.user.is_authenticated:
            if is_local_account(name):
                self._warn_once(
                    ("name", name),
                    "proxy login refused: %s is a local account (it has a password); only that password opens it",
                    name,
                )
                return
            user = auth.authenticate(request, remote_user=name)
            if user is None:
                return
            request.user = user
            auth.login(request, user)
        if name and request.session.get(BACKEND_SESSION_KEY) == BACKEND:
            if request.session.get(AUTH_METHOD_SESSION_KEY) != SOURCE:
                request.session[AUTH_METHOD_SESSION_KEY] = SOURCE
            if self.groups_key:
                self._apply_groups(request, parse_groups(request.META.get(self.groups_key, "")))

    async def aprocess_request(self, request: HttpRequest) -> None:
        await sync_to_async(self.process_request, thread_sensitive=True)(request)

    def _named_user(self, request: HttpRequest) -> str:
        """The user the proxy names ("" for none); the headers of anyone else are removed."""
        headers = [key for key in (self.user_key, self.groups_key) if key and key in request.META]
        if headers and not from_trusted_proxy(request):
            address = str(request.META.get("REMOTE_ADDR") or "")
            self._warn_once(
                ("address", address),
                "ignored the proxy login headers from %s: it is not in BACKUPSITE_TRUSTED_PROXIES",
                address,
            )
            for key in headers:
                del request.META[key]
        return str(request.META.get(self.user_key, "")).strip()

    def _apply_groups(self, request: HttpRequest, groups: list[str]) -> None:
        """The header's groups -> the user's roles, at the login and whenever they change (an
        absent header: no groups, so a user the proxy stops listing loses the roles)."""
        if request.session.get(GROUPS_SESSION_KEY) == groups:
            return
        user: Any = request.user
        staff = user.is_staff
        remember_groups(user, groups, SOURCE)
        if user.is_staff != staff:
            user.save(update_fields=["is_staff"])
        request.session[GROUPS_SESSION_KEY] = groups

    def _warn_once(self, key: tuple[str, str], message: str, *args: str) -> None:
        """Log ``message`` once per key: a client sending headers at every request must not fill the log."""
        if key in self._logged:
            return
        if len(self._logged) >= WARN_LIMIT:
            self._logged.clear()
        self._logged.add(key)
        logger.warning(message, *args)
