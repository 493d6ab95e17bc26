"""The ``oidc`` mode's authentication backend: mozilla-django-oidc's, with users found by a
claim, roles from a claim, and the checks the library leaves out.

- The user is the one whose username is the ``OIDC_USERNAME_CLAIM`` claim (created at the first
  login, without a usable password); names and email follow the provider at every login.
- Roles: the values of the ``OIDC_ROLES_CLAIM`` claim go through ``BACKUPSITE_ROLE_MAP`` at every
  login (:func:`backups.access.directory.remember_groups`, source ``oidc``).
- A local account that has a password is never taken over (the break-glass administrator).
- The ID token must name this client as its audience and the configured issuer as its issuer
  (mozilla-django-oidc checks the signature, the expiry and the nonce only).
- Claims come from the userinfo endpoint, completed by the ID token's (some providers put the
  groups in one of them only); both must be about the same subject.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.db import models
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from backups.access.directory import remember_groups

from . import provider, setting
from .views import redirect_uri

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.db.models import QuerySet

logger = logging.getLogger(__name__)

# The claims a user's names and email are refreshed from (OpenID Connect Core 5.1).
USER_FIELDS = {"first_name": "given_name", "last_name": "family_name", "email": "email"}


class OIDCBackend(OIDCAuthenticationBackend):
    """Logs in the user an OpenID Connect provider vouches for (the authorization-code flow)."""

    def __init__(self) -> None:
        # Not the library's __init__: it reads the provider's endpoints from the settings, and
        # Django builds a backend for every request of a logged-in user; they are discovered
        # (see the properties below) only when a login needs them.
        self.OIDC_RP_CLIENT_ID = setting("OIDC_RP_CLIENT_ID")
        self.OIDC_RP_CLIENT_SECRET = setting("OIDC_RP_CLIENT_SECRET")
        self.OIDC_RP_SIGN_ALGO = setting("OIDC_RP_SIGN_ALGO")
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    # The library reads the provider's endpoints from these attributes.
    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return provider.endpoints().token_endpoint

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:
        return provider.endpoints().userinfo_endpoint

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return provider.endpoints().jwks_uri

    def get_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        # The same redirect URI as the authorization request's (the provider compares them).
        token: dict[str, Any] = super().get_token({**payload, "redirect_uri": redirect_uri(self.request)})
        return token

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super().verify_token(token, **kwargs)
        if "nonce" in kwargs:  # the ID token (a signed userinfo answer is checked without one)
            check_id_token(payload, issuer=setting("OIDC_ISSUER"), client_id=self.OIDC_RP_CLIENT_ID)
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the userinfo answer is not about the ID token's subject")
        return {**payload, **userinfo}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if username_from(claims):
            return True
        logger.warning(
            "OpenID Connect login refused: the provider sent no %s claim (OIDC_USERNAME_CLAIM) for subject %s",
            setting("OIDC_USERNAME_CLAIM"),
            claims.get("sub"),
        )
        return False

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[User]:
        username = username_from(claims)
        return self.UserModel.objects.filter(**{self.UserModel.USERNAME_FIELD: username})

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"username {username_from(claims)}"

    def create_user(self, claims: dict[str, Any]) -> User:
        user = self.UserModel.objects.create_user(username_from(claims))  # no usable password
        return self._refresh(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if user.has_usable_password():
            # A provider account that happens to share the name of the local administrator.
            raise SuspiciousOperation(f"{user.get_username()} is a local account (it has a password)")
        return self._refresh(user, claims)

    def _refresh(self, user: User, claims: dict[str, Any]) -> User:
        """Names, email and roles as the provider says now."""
        for field, claim in USER_FIELDS.items():
            value = claims.get(claim)
            model_field = user._meta.get_field(field)
            if isinstance(value, str) and isinstance(model_field, models.CharField):
                setattr(user, field, value[: model_field.max_length])
        # Replaces the role groups and grants, and sets is_staff (the admin's door) on the object.
        remember_groups(user, groups_from(claims), "oidc")
        user.save(update_fields=[*USER_FIELDS, "is_staff"])
        return user


def username_from(claims: dict[str, Any]) -> str:
    """The ``OIDC_USERNAME_CLAIM`` claim, or "" when it is missing or not a string."""
    value = claims.get(setting("OIDC_USERNAME_CLAIM"))
    return value.strip() if isinstance(value, str) else ""


def groups_from(claims: dict[str, Any]) -> list[str]:
    """The values of the ``OIDC_ROLES_CLAIM`` claim: a list of strings (or one string)."""
    value = claims.get(setting("OIDC_ROLES_CLAIM"))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def check_id_token(payload: dict[str, Any], *, issuer: str, client_id: str) -> None:
    """SuspiciousOperation unless the ID token was issued by ``issuer`` for ``client_id``
    (OpenID Connect Core 3.1.3.7, steps 2-5)."""
    if str(payload.get("iss", "")).rstrip("/") != issuer:
        raise SuspiciousOperation(f"the ID token's issuer {payload.get('iss')!r} is not {issuer!r}")
    audience = payload.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise SuspiciousOperation(f"the ID token is not meant for this client (aud {audience!r})")
    if len(audiences) > 1 and payload.get("azp") != client_id:
        raise SuspiciousOperation(f"the ID token was issued to {payload.get('azp')!r}, not this client")
