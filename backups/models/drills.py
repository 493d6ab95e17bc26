"""Restore drills (table ``backup_drill``): a backup restored into a scratch database or
directory on a sandbox target, checked, and dropped; each drill's checks, measured restore time
and the data's age at that moment are kept as evidence."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from backups.models.catalog import Target
from backups.models.history import Backup


class DrillStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class DrillTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"


class Drill(models.Model):
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="drills")
    backup = models.ForeignKey(
        Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="drills"
    )
    sandbox = models.ForeignKey(
        Target, on_delete=models.SET_NULL, null=True, blank=True, related_name="sandbox_drills"
    )
    scratch_name = models.CharField(
        max_length=255, blank=True, help_text="The scratch database or directory it restored into."
    )
    status = models.CharField(
        max_length=16, choices=DrillStatus.choices, default=DrillStatus.RUNNING, db_index=True
    )
    trigger = models.CharField(max_length=16, choices=DrillTrigger.choices, default=DrillTrigger.MANUAL)
    initiated_by = models.CharField(max_length=150, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid of the process running it.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True, help_text="The whole drill.")
    restore_seconds = models.FloatField(
        null=True, blank=True, help_text="The restore alone: what an outage would cost."
    )
    data_age_seconds = models.FloatField(
        null=True, blank=True, help_text="How old the backup's data was when the drill started."
    )
    checks = models.JSONField(
        default=list,
        blank=True,
        help_text='Each check: {"name", "expected", "actual", "ok"}.',
    )
    error_message = models.TextField(blank=True)

    class Meta:
        db_table = "backup_drill"
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["target", "-started_at"], name="drill_target_started_idx")]

    def __str__(self) -> str:
        return f"drill {self.pk} of {self.target_id}: {self.status}"
