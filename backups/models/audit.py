"""The audit log (AuditEvent, the ``backup_audit_event`` table): who did what, how they had
logged in, from where, to which object, and with what outcome.

Append-only: :meth:`AuditEvent.save` refuses to update a row, :meth:`AuditEvent.delete` and the
manager's ``update()`` and ``delete()`` refuse, and triggers installed by migration 0013 make the
database itself refuse UPDATE and DELETE (SQLite and PostgreSQL). The one change allowed is the
user's deletion setting ``user`` to NULL; ``username`` keeps the name.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone

APPEND_ONLY = "audit events are append-only"

# The actions recorded, as ``area.verb``; record() refuses any other (a typo is a lost event).
ACTIONS = (
    "login.success",
    "login.failure",
    "login.lockout",
    "logout",
    "backup.run",
    "backup.verify",
    "backup.drill",
    "evidence.export",
    "backup.download",
    "download.signed_url",
    "restore.request",
    "restore.approve",
    "restore.reject",
    "restore.expire",
    "restore.start",
    "restore.result",
    "restore.provision",
    "restore.provision_drop",
    "config.change",
    "config.apply",
    "key.generate",
    "key.add",
    "key.rotate",
    "key.retire",
    "object.delete",
    "user.change",
    "role.change",
    "token.create",
    "token.revoke",
)


class AppendOnlyError(Exception):
    """An audit event was about to be changed or deleted."""


class AuthMethod(models.TextChoices):
    """How the person behind an event had logged in."""

    LOCAL = "local", "Local account"
    LDAP = "ldap", "LDAP"
    OIDC = "oidc", "OpenID Connect"
    PROXY = "proxy", "Reverse proxy"
    NONE = "none", "Not logged in"
    CLI = "cli", "Command line"
    TOKEN = "token", "API token"
    SYSTEM = "system", "System"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"
    REFUSED = "refused", "Refused"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{APPEND_ONLY}: update() refused")

    def delete(self) -> NoReturn:
        raise AppendOnlyError(f"{APPEND_ONLY}: delete() refused")


class AuditEvent(models.Model):
    """One thing a person (or the system) did, or tried to do. ``details`` holds names and
    counts, never a secret value (``backups.audit.record`` redacts what it is given)."""

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
        editable=False,
    )
    username = models.CharField(
        max_length=150,
        blank=True,
        help_text="Kept when the user is deleted; the name tried for a failed login.",
    )
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices, blank=True)
    address = models.GenericIPAddressField(
        null=True, blank=True, help_text="The client's address (behind BACKUPSITE_TRUSTED_PROXIES)."
    )
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=100, blank=True, help_text='e.g. "backups.target"')
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        db_table = "backup_audit_event"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="audit_event_recent_idx"),
            models.Index(fields=["action", "-created_at"], name="audit_event_action_idx"),
        ]

    def __str__(self) -> str:
        who = self.username or "-"
        return f"{self.action} by {who} ({self.outcome})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{APPEND_ONLY}: event {self.pk} cannot be changed")
        kwargs["force_insert"] = True  # never an UPDATE, even for an event built with a pk
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{APPEND_ONLY}: event {self.pk} cannot be deleted")

    @property
    def object_label(self) -> str:
        """``backups.target 3 (app-db)``, or "" when the event is about no object."""
        if not self.object_type:
            return ""
        label = f"{self.object_type} {self.object_id}".rstrip()
        return f"{label} ({self.object_repr})" if self.object_repr else label
