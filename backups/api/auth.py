"""Who calls the API: a personal token in ``Authorization: Bearer <token>``, counted against the
token's rate limit, its use recorded; and what the caller may do through it."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja.security import HttpBearer

from backups import services
from backups.access import tokens
from backups.access.proxies import client_address
from backups.models import ApiToken, AuthMethod, Target
from backups.services import record_audit

from .errors import ApiError

WINDOW_SECONDS = 60
REFUSED = {
    tokens.Refusal.MISSING: "missing token: send the header Authorization: Bearer <token> "
    "(manage.py api_token create, or API tokens in the admin)",
    tokens.Refusal.UNKNOWN: "unknown token: check it was copied whole (bks_...), or create a new one",
    tokens.Refusal.EXPIRED: "expired token: create a new one (manage.py api_token create --expires 90d)",
    tokens.Refusal.REVOKED: "revoked token: create a new one (manage.py api_token create)",
}


class TokenAuth(HttpBearer):
    """Bearer authentication by personal API token. On success ``request.auth`` is the token's
    row and ``request.user`` its user, for the permission checks and the audit trail."""

    def __call__(self, request: HttpRequest) -> ApiToken:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str | None) -> ApiToken:
        found = tokens.authenticate(token)
        if isinstance(found, tokens.Refusal):
            raise ApiError(401, REFUSED[found])
        check_rate(found)
        request.user = found.user
        request.backupsite_auth_method = AuthMethod.TOKEN  # type: ignore[attr-defined]  # for the audit trail
        tokens.record_use(found, address_of(request))
        return found


def address_of(request: HttpRequest) -> str | None:
    return client_address(
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR"),
        settings.BACKUPSITE_TRUSTED_PROXIES,
    )


def check_rate(token: ApiToken, now: float | None = None) -> None:
    """Count one request of ``token`` in the current minute, in the shared cache (every web
    process sees the same count); :class:`ApiError` 429 with ``Retry-After`` past the limit."""
    limit = settings.BACKUPSITE_API_RATE_LIMIT
    if not limit:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    key = f"backupsite:api-rate:{token.key_id}:{window}"
    cache.add(key, 0, timeout=2 * WINDOW_SECONDS)
    try:
        count = cache.incr(key)
    except ValueError:  # the entry expired between add() and incr()
        cache.set(key, 1, timeout=2 * WINDOW_SECONDS)
        count = 1
    if count > limit:
        retry_after = max(1, WINDOW_SECONDS - int(now % WINDOW_SECONDS))
        raise ApiError(
            429,
            f"rate limit: at most {limit} requests a minute per token (BACKUPSITE_API_RATE_LIMIT); "
            f"try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def token_of(request: HttpRequest) -> ApiToken:
    token = getattr(request, "auth", None)
    assert isinstance(token, ApiToken)  # every endpoint but health is behind TokenAuth
    return token


def may(request: HttpRequest, action: str, target: Target | None) -> bool:
    return tokens.token_can(token_of(request), action, target)


def require(
    request: HttpRequest,
    action: str,
    target: Target,
    *,
    audit: str = "",
    obj: Any = None,
    message: str = "",
) -> None:
    """Refuse (403, and with ``audit`` an audit event: a refused action changes nothing) unless
    the caller may do ``action`` on ``target``. Viewing refusals answer 404: what one may not
    see does not exist for them."""
    if may(request, action, target):
        return
    if action == "view":
        raise ApiError(404, f"there is no target {target.name} (or you may not see it)")
    if audit:
        record_audit(
            audit,
            request=request,
            obj=obj if obj is not None else target,
            outcome="refused",
            details={"via": "api", "key_id": token_of(request).key_id, "reason": f"may not {action}"},
        )
    raise ApiError(403, message or f"you may not {action} on target {target.name}: ask for a role that may")


def visible_target_ids(request: HttpRequest) -> set[int] | None:
    """The ids of the targets the caller may view (None: all), as the admin's lists scope them,
    narrowed to the token's scope tag."""
    token = token_of(request)
    ids = services.visible_target_ids(token.user)
    if not token.scope:
        return ids
    scoped = {pk for pk, tags in Target.objects.values_list("pk", "tags") if token.scope in (tags or ())}
    return scoped if ids is None else ids & scoped
