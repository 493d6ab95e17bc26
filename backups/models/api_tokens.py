"""Personal API tokens (ApiToken): what lets a script act as its user on /api/v1/.

The clear token (``bks_<key id>_<secret>``) is shown once and never stored: a row keeps the key
id that finds it and the SHA-256 of the whole token. A token acts as its user, never more, and
when it has a ``scope`` tag only on the targets carrying that tag."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

DEFAULT_LIFETIME = timedelta(days=90)


def default_expiry() -> datetime:
    return timezone.now() + DEFAULT_LIFETIME


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for, e.g. ci-deploy.")
    key_id = models.CharField(
        max_length=8,
        unique=True,
        editable=False,
        help_text="The token's public part (8 hex digits) that finds its row; not a secret.",
    )
    digest = models.CharField(
        max_length=64,
        editable=False,
        help_text="SHA-256 of the whole token; the token itself is never stored.",
    )
    scope = models.CharField(
        max_length=63,
        blank=True,
        help_text="A target tag: the token acts only on targets carrying it (and never beyond its user's "
        "roles). Empty: everything its user may do.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=default_expiry)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name or 'token'} ({self.key_id})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()
