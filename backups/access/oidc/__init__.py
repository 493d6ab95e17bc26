"""The ``oidc`` login mode: OpenID Connect through mozilla-django-oidc, configured only from
``OIDC_*`` variables.

:func:`settings_from_env` turns an environment mapping into mozilla-django-oidc's settings plus
this mode's own (a plain dict the settings module adds to its own); every bad value raises
ImproperlyConfigured naming the variable, and no message ever holds the client secret. What is
not a choice is fixed here: the authorization-code flow with PKCE (S256) and a nonce, ID tokens
signed with RS256 and checked against the provider's published keys (JWKS).

The provider's endpoints are not settings: :mod:`.provider` reads them from
``OIDC_ISSUER``/.well-known/openid-configuration at the first login and caches them, so a
process starts while the provider is down. :mod:`.backend` is the authentication backend,
:mod:`.views` the login start, the callback and the login page's button.

This module runs while the settings load: the standard library and Django's exceptions and lazy
settings only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

VARIABLES = (
    "OIDC_ISSUER",
    "OIDC_RP_CLIENT_ID",
    "OIDC_RP_CLIENT_SECRET",
    "OIDC_RP_CLIENT_SECRET_FILE",
    "OIDC_RP_SCOPES",
    "OIDC_ROLES_CLAIM",
    "OIDC_USERNAME_CLAIM",
    "OIDC_PROVIDER_NAME",
    "OIDC_CA_FILE",
)
DEFAULT_SCOPES = "openid email profile"
DEFAULT_ROLES_CLAIM = "groups"
DEFAULT_USERNAME_CLAIM = "preferred_username"
DEFAULT_PROVIDER_NAME = "single sign-on"
SIGN_ALGORITHM = "RS256"
# Each call to the provider (discovery, token, keys, userinfo) gives up after this many seconds.
TIMEOUT_SECONDS = 10
_LOOPBACK_NAMES = {"localhost"}


def setting(name: str) -> Any:
    """One of this mode's settings, set only while the mode is on (so not among the test
    settings django-stubs type-checks against)."""
    return getattr(settings, name)


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``OIDC_*`` settings from the variables in ``env`` (every setting this mode decides, so
    applying the result twice leaves nothing of the first)."""
    unknown = sorted(name for name in env if name.startswith("OIDC_") and name not in VARIABLES)
    if unknown:
        # A misspelt OIDC_ROLES_CLAIM would otherwise fall back to the default without a word.
        raise ImproperlyConfigured(
            f"{unknown[0]}: unknown variable; the OpenID Connect mode reads {', '.join(VARIABLES)}"
        )
    values = {name: env.get(name, "").strip() for name in VARIABLES if name != "OIDC_RP_CLIENT_SECRET"}
    client_id = values["OIDC_RP_CLIENT_ID"]
    if not client_id:
        raise ImproperlyConfigured("OIDC_RP_CLIENT_ID: not set; the client id registered at the provider")
    return {
        "OIDC_ISSUER": _issuer(values["OIDC_ISSUER"]),
        "OIDC_PROVIDER_NAME": values["OIDC_PROVIDER_NAME"] or DEFAULT_PROVIDER_NAME,
        "OIDC_ROLES_CLAIM": _claim("OIDC_ROLES_CLAIM", values["OIDC_ROLES_CLAIM"] or DEFAULT_ROLES_CLAIM),
        "OIDC_USERNAME_CLAIM": _claim(
            "OIDC_USERNAME_CLAIM", values["OIDC_USERNAME_CLAIM"] or DEFAULT_USERNAME_CLAIM
        ),
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": _client_secret(env, values["OIDC_RP_CLIENT_SECRET_FILE"]),
        "OIDC_RP_SCOPES": _scopes(values["OIDC_RP_SCOPES"]),
        "OIDC_RP_SIGN_ALGO": SIGN_ALGORITHM,
        "OIDC_RP_IDP_SIGN_KEY": None,  # the keys come from the provider's JWKS
        "OIDC_USE_PKCE": True,
        "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
        "OIDC_USE_NONCE": True,
        "OIDC_CREATE_USER": True,
        # Tokens are used once, at login, and never kept: nothing to leak from a session.
        "OIDC_STORE_ACCESS_TOKEN": False,
        "OIDC_STORE_ID_TOKEN": False,
        # requests' verify: the system's CAs, or the CA file given.
        "OIDC_VERIFY_SSL": _ca_file(values["OIDC_CA_FILE"]) or True,
        "OIDC_TIMEOUT": TIMEOUT_SECONDS,
        "OIDC_AUTHENTICATE_CLASS": "backups.access.oidc.views.LoginStartView",
        "OIDC_CALLBACK_CLASS": "backups.access.oidc.views.CallbackView",
    }


def _issuer(text: str) -> str:
    name = "OIDC_ISSUER"
    if not text:
        raise ImproperlyConfigured(f"{name}: not set; e.g. https://keycloak.example.org/realms/staff")
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name}: expected the provider's https:// URL without query or fragment, got {text!r}"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ImproperlyConfigured(
            f"{name}: {text} would send the client secret and tokens unencrypted; use https://"
        )
    # The issuer is compared as a string with the one the provider announces: no trailing slash.
    return text.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client_secret(env: Mapping[str, str], secret_file: str) -> str:
    secret = env.get("OIDC_RP_CLIENT_SECRET", "").strip()
    if secret and secret_file:
        raise ImproperlyConfigured("OIDC_RP_CLIENT_SECRET_FILE: set it or OIDC_RP_CLIENT_SECRET, not both")
    if secret_file:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"OIDC_RP_CLIENT_SECRET_FILE: cannot read {secret_file}: {exc.strerror}"
            ) from None
        if not secret:
            raise ImproperlyConfigured(f"OIDC_RP_CLIENT_SECRET_FILE: {secret_file} is empty")
    if not secret:
        raise ImproperlyConfigured(
            "OIDC_RP_CLIENT_SECRET_FILE: not set; a file holding the client secret (or OIDC_RP_CLIENT_SECRET)"
        )
    return secret


def _scopes(text: str) -> str:
    scopes = (text or DEFAULT_SCOPES).split()
    if "openid" not in scopes:
        raise ImproperlyConfigured(f"OIDC_RP_SCOPES: must contain openid, got {text!r}")
    return " ".join(dict.fromkeys(scopes))


def _claim(name: str, text: str) -> str:
    if any(character.isspace() for character in text):
        raise ImproperlyConfigured(f"{name}: a claim name has no blanks, got {text!r}")
    return text


def _ca_file(path: str) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ImproperlyConfigured(f"OIDC_CA_FILE: cannot read {path}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ImproperlyConfigured(f"OIDC_CA_FILE: {path} holds no PEM certificate")
    return path
