"""Notification channels (Notifier) and every delivery (Notification)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower

from backups.models.catalog import Target, managed_by_field
from backups.models.history import Backup
from backups.notifiers import notifier_kind_choices

# -- notifications ---------------------------------------------------------------------------------


class Event(models.TextChoices):
    """What a notification is about (the contract of ``backups.notifications.notify``)."""

    BACKUP_FAILED = "backup_failed", "Backup failed"
    BACKUP_SUCCEEDED = "backup_succeeded", "Backup succeeded"
    MISSED = "missed", "Backup missed"
    RECOVERED = "recovered", "Backups resumed"
    ANOMALY = "anomaly", "Anomaly"
    VERIFICATION_FAILED = "verification_failed", "Verification failed"
    RESTORE_FINISHED = "restore_finished", "Restore finished"
    RESTORE_REQUESTED = "restore_requested", "Restore awaiting approval"
    DRILL_FAILED = "drill_failed", "Restore drill failed"
    DRILL_RECOVERED = "drill_recovered", "Restore drills pass again"


def default_notifier_events() -> list[str]:
    """Every event except ``backup_succeeded``, which a channel must ask for."""
    return [event for event in Event.values if event != Event.BACKUP_SUCCEEDED]


def validate_events(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError('a list of event names, e.g. ["backup_failed", "missed"]')
    unknown = [item for item in value if item not in Event.values]
    if unknown:
        raise ValidationError(f"unknown event(s) {', '.join(unknown)}; events are {', '.join(Event.values)}")


class Notifier(models.Model):
    """A notification channel (email, webhook, Slack, Teams, audit file) and the events it gets."""

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=notifier_kind_choices)
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text="Kind-specific settings; URLs and secrets as ${ENV_VAR} references.",
    )
    events = models.JSONField(
        default=default_notifier_events,
        blank=True,
        validators=[validate_events],
        help_text="The events this channel receives; backup_succeeded only when listed.",
    )
    is_default = models.BooleanField(
        default=False, help_text="Used for schedules that name no channel and for runs without a schedule."
    )
    is_active = models.BooleanField(default=True)
    managed_by = managed_by_field()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="notifier_name_ci_unique")]

    def __str__(self) -> str:
        return self.name


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """One delivery of one event through one channel, with its outcome."""

    notifier = models.ForeignKey(
        Notifier, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    channel = models.CharField(max_length=100, help_text="The notifier's name, kept when it is deleted.")
    kind = models.CharField(max_length=32, blank=True)
    event = models.CharField(max_length=32, choices=Event.choices, db_index=True)
    subject = models.CharField(max_length=255)
    text = models.TextField(blank=True, help_text="The message as sent (redacted), kept to send it again.")
    fields = models.JSONField(default=dict, blank=True, help_text="The message's fields (redacted).")
    status = models.CharField(
        max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.PENDING, db_index=True
    )
    sender = models.CharField(
        max_length=255, blank=True, help_text="host:pid of the process sending it, while it is pending."
    )
    resent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the watch last took it over from a sender that stopped."
    )
    attempts = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    backup = models.ForeignKey(
        Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    schedule = models.ForeignKey(
        "schedules.BackupSchedule",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="notifications",
    )
    target = models.ForeignKey(
        Target, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event} via {self.channel}: {self.status}"
