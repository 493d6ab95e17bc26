"""Personal API tokens: created (shown once), checked, revoked, and their use recorded.

A token is ``bks_<key id>_<secret>``: 8 hex digits that find its row, then 43 url-safe base64
characters (256 random bits). The row keeps only the SHA-256 of the whole token, compared in
constant time, so a copy of the catalog lets nobody in. A token acts as its user and never more:
:func:`token_can` asks the same :func:`~backups.access.roles.can` as the web, narrowed to the
targets carrying the token's scope tag when it has one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from backups.models import ApiToken, Target, tag_problem
from backups.models.api_tokens import DEFAULT_LIFETIME
from backups.services import can, record_audit

PREFIX = "bks"
TOKEN = re.compile(r"bks_(?P<key_id>[0-9a-f]{8})_[A-Za-z0-9_-]{43}")
USE_RECORDED_EVERY = timedelta(minutes=1)  # one write a minute per token, not one per request
LIFETIME = re.compile(r"(?P<count>\d{1,4})(?P<unit>h|d|w)")
UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_UNUSED_DIGEST = hashlib.sha256(b"no such token").hexdigest()


class Refusal(StrEnum):
    """Why a token was not accepted (the API's 401 says which, never echoing the token)."""

    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Actor:
    """Who creates or revokes a token, for the audit trail: a request (the admin), or a user or
    a name (``cli:<OS user>``) with how they came (``auth_method``: "cli")."""

    request: HttpRequest | None = None
    user: Any = None
    username: str | None = None
    auth_method: str | None = None


class TokenProblem(ValueError):
    """A token cannot be created as asked; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def max_lifetime() -> timedelta:
    return timedelta(days=settings.BACKUPSITE_API_TOKEN_MAX_DAYS)


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """When a token asked to live ``text`` expires: a lifetime (``90d``, ``12h``, ``4w``) or an
    ISO date or time (``2027-03-01``). :class:`TokenProblem` naming ``expires`` and the fix."""
    now = now or timezone.now()
    text = text.strip()
    match = LIFETIME.fullmatch(text)
    if match:
        moment = now + int(match["count"]) * UNIT[match["unit"]]
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TokenProblem(
                "expires", f"{text!r} is not a lifetime (e.g. 90d, 12h, 4w) or an ISO date (e.g. 2027-03-01)"
            ) from None
        moment = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)
    check_expiry(moment, now)
    return moment


def check_expiry(moment: datetime, now: datetime | None = None) -> None:
    now = now or timezone.now()
    if moment <= now:
        raise TokenProblem("expires", "the expiry is in the past: give a lifetime such as 90d")
    if moment > now + max_lifetime() + timedelta(minutes=1):
        raise TokenProblem(
            "expires",
            f"at most {settings.BACKUPSITE_API_TOKEN_MAX_DAYS} days (BACKUPSITE_API_TOKEN_MAX_DAYS): "
            "create a new token before this one expires",
        )


def check_scope(scope: str) -> str:
    scope = scope.strip()
    if scope:
        problem = tag_problem([scope])
        if problem:
            raise TokenProblem("scope", f"scope: {problem}")
    return scope


def create_token(
    user: Any,
    *,
    name: str = "",
    expires_at: datetime | None = None,
    scope: str = "",
    by: Actor | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``user`` and return its row and the clear token, which exists only
    in this return value: show it once. ``by`` is who asked, for the audit event (default: the
    user, in the request being served). :class:`TokenProblem` for a bad expiry, scope or name
    (nothing created)."""
    now = timezone.now()
    expires_at = expires_at or now + DEFAULT_LIFETIME
    check_expiry(expires_at, now)
    scope = check_scope(scope)
    name = name.strip()
    if len(name) > 100:
        raise TokenProblem("name", f"name: at most 100 characters (it has {len(name)})")
    for _attempt in range(5):
        key_id = secrets.token_hex(4)
        clear = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                row = ApiToken.objects.create(
                    user=user,
                    name=name,
                    key_id=key_id,
                    digest=digest(clear),
                    scope=scope,
                    expires_at=expires_at,
                )
        except IntegrityError:
            continue  # another token drew the same key id: draw again
        break
    else:
        raise RuntimeError("could not draw an unused token key id in 5 attempts")
    _audit(by or Actor(user=user), row, "token.create")
    return row, clear


def authenticate(token: str | None, now: datetime | None = None) -> ApiToken | Refusal:
    """The live token ``token`` is (with its user), or why it is refused. Unknown tokens and
    wrong secrets look alike; expired and revoked are said only to the holder of the secret."""
    if not token:
        return Refusal.MISSING
    match = TOKEN.fullmatch(token.strip())
    row = ApiToken.objects.select_related("user").filter(key_id=match["key_id"]).first() if match else None
    expected = row.digest if row is not None else _UNUSED_DIGEST
    if not hmac.compare_digest(expected, digest(token.strip())) or row is None:
        return Refusal.UNKNOWN
    if row.revoked_at is not None:
        return Refusal.REVOKED
    if row.expires_at <= (now or timezone.now()):
        return Refusal.EXPIRED
    return row


def record_use(token: ApiToken, address: str | None, now: datetime | None = None) -> bool:
    """Remember when and from where ``token`` was last used, at most once a minute (one
    conditional update, so several web processes write it once). Returns whether it wrote."""
    now = now or timezone.now()
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - USE_RECORDED_EVERY)
    written = ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now, last_used_address=address)
    if written:
        token.last_used_at, token.last_used_address = now, address
    return bool(written)


def revoke(token: ApiToken, *, by: Actor | None = None) -> bool:
    """Revoke ``token`` at once; False (nothing changed, nothing audited) when it already was."""
    now = timezone.now()
    if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
        return False
    token.revoked_at = now
    _audit(by or Actor(user=token.user), token, "token.revoke")
    return True


def may_manage(user: Any, token: ApiToken) -> bool:
    """Whether ``user`` may revoke ``token`` (or create one for its user): their own, or an
    Administrator's (the right to change the configuration everywhere) for anyone."""
    return bool(user.is_active and (token.user_id == user.pk or can(user, "configure")))


def token_can(token: ApiToken, action: str, target: Target | None) -> bool:
    """What the token's user may do through it: ``can`` for the user, and with a scope tag only
    on targets carrying that tag (nothing that is not a target's, like creating one)."""
    if token.scope and (target is None or token.scope not in (target.tags or ())):
        return False
    return can(token.user, action, target)


def _audit(actor: Actor, token: ApiToken, action: str) -> None:
    record_audit(
        action,
        request=actor.request,
        user=actor.user,
        username=actor.username,
        auth_method=actor.auth_method,
        obj=token,
        details={
            "owner": token.user.get_username(),
            "key_id": token.key_id,
            "scope": token.scope,
            "expires_at": token.expires_at.isoformat(),
        },
    )
