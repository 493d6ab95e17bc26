"""Role grants scoped to targets by tag. Unscoped roles are Django groups (Viewer, Operator,
Restorer, Administrator, kept in step by ``backups.access.roles``); a grant here gives a role
on the targets carrying one tag only."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    VIEWER = "Viewer", "Viewer"
    OPERATOR = "Operator", "Operator"
    RESTORER = "Restorer", "Restorer"
    ADMINISTRATOR = "Administrator", "Administrator"


class GrantSource(models.TextChoices):
    LOCAL = "local", "Given in the admin"
    LDAP = "ldap", "LDAP group"
    OIDC = "oidc", "OpenID Connect claim"
    PROXY = "proxy", "Proxy group header"


class RoleGrant(models.Model):
    """``role`` on the targets tagged ``tag``, for ``user``. Grants from a directory are
    replaced at each of the user's logins through it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_grants")
    role = models.CharField(max_length=16, choices=Role.choices)
    tag = models.CharField(max_length=63, help_text="The targets carrying this tag.")
    source = models.CharField(max_length=8, choices=GrantSource.choices, default=GrantSource.LOCAL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "role", "tag", "source"], name="one_grant_per_source")
        ]
        ordering = ["user", "tag", "role"]

    def __str__(self) -> str:
        return f"{self.role}@{self.tag}"
