"""Backup schedules (table ``backup_schedule``): the source of truth for when a target is
backed up, where to, and how long backups are kept."""

from __future__ import annotations

from django.db import models

from backups.models import (
    COMPRESSION_CHOICES,
    BackupType,
    Storage,
    Target,
    managed_by_field,
    validate_retention,
)


class VerifyMode(models.TextChoices):
    AFTER_BACKUP = "after-backup", "After every backup"
    DAILY = "daily", "Daily: the newest backup, if not verified in the last day"
    NEVER = "never", "Never (copies are still re-read and checked when stored)"


class BackupSchedule(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="schedules")
    backup_type = models.CharField(max_length=32, choices=BackupType.choices, default=BackupType.FULL)
    cron_expression = models.CharField(
        max_length=100, help_text="Five fields: minute hour day month weekday."
    )
    timezone = models.CharField(max_length=64, default="UTC")
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    retention = models.JSONField(
        default=dict,
        blank=True,
        help_text="Retention rules for this schedule's backups; empty: the target's policy applies.",
    )
    compression = models.CharField(max_length=16, choices=COMPRESSION_CHOICES, default="gzip")
    encryption = models.CharField(
        max_length=100,
        blank=True,
        help_text="An encryption key name for this schedule's backups; empty: the target's key.",
    )
    escrow = models.JSONField(
        default=list, blank=True, help_text="Escrow keys added to the target's for this schedule's backups."
    )
    include_files = models.JSONField(default=list, blank=True)
    include_tables = models.JSONField(default=list, blank=True)
    exclude_tables = models.JSONField(default=list, blank=True)
    storage_path = models.CharField(max_length=255, blank=True, help_text="Sub-path inside each storage.")
    remote_storage = models.CharField(max_length=100, blank=True)
    storages = models.ManyToManyField(Storage, related_name="schedules", blank=True)
    notification_email = models.CharField(max_length=500, blank=True)
    notify_channels = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    managed_by = managed_by_field()
    verify = models.CharField(
        max_length=16,
        choices=VerifyMode.choices,
        default=VerifyMode.NEVER,
        help_text="Deep verification (every copy re-read plus the engine's trial restore or a sandbox restore).",
    )
    last_verify_at = models.DateTimeField(
        null=True, blank=True, help_text="When the daily verification last started."
    )
    grace_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="How long after a due run a missing successful backup raises a 'missed' alert "
        "(empty: BACKUPSITE_MISSED_GRACE_MINUTES).",
    )
    missed_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The due run that was missed; cleared when a backup of a run on time succeeds again.",
    )
    missed_alert_due = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When a missed alert was found due and not yet handed to its channels (the watch "
        "sends it if the process that found it stopped first).",
    )
    behind = models.BooleanField(
        default=False,
        editable=False,
        help_text="The latest firing found run times before its own that no firing ran (workers "
        "behind, firings lost); its success does not end a missed alert, an on-time one does.",
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    latest_slot = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="The latest cron slot ever claimed; it never moves back, so a clock set back "
        "never runs a slot twice.",
    )
    next_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "backup_schedule"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .cron import cron_problem

        problem = cron_problem(self.cron_expression)
        if problem:
            raise ValidationError({"cron_expression": problem})
        validate_retention(self.retention, self.timezone)
        from backups.models.catalog import encryption_problems

        inherited = self.target.encryption if self.target_id is not None else ""
        key_problems = encryption_problems(self.encryption, self.escrow, inherited)
        if key_problems:
            raise ValidationError(key_problems)
        if self.target_id is not None:
            from backups.services import type_problem

            problem = type_problem(self.target, self.backup_type)
            if problem:
                raise ValidationError({"backup_type": problem})
