"""Restore runs (table ``backup_restore_log``)."""

from __future__ import annotations

from django.db import models

from backups.models import Backup, Target


class RestoreStatus(models.TextChoices):
    AWAITING = "awaiting", "Awaiting approval"  # a protected destination: a second person decides
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired unapproved"
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"


PHASE_LENGTH = 200  # RestoreLog.phase: a sentence, cut there


class RestoreLog(models.Model):
    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="restores")
    destination = models.ForeignKey(
        Target, on_delete=models.PROTECT, null=True, blank=True, related_name="restores"
    )
    restore_type = models.CharField(max_length=32, default="full")
    status = models.CharField(max_length=16, choices=RestoreStatus.choices, default=RestoreStatus.RUNNING)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    tables_restored = models.JSONField(default=list, blank=True)
    files_restored = models.JSONField(default=list, blank=True)
    initiated_by = models.CharField(max_length=150, blank=True)
    confirmed_by = models.CharField(max_length=150, blank=True)
    notes = models.TextField(blank=True)
    reason = models.TextField(blank=True, help_text="Why the restore was asked for (four-eyes requests).")
    decided_by = models.CharField(
        max_length=150, blank=True, help_text="Who approved or rejected the request (four-eyes)."
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="An unapproved request expires then (four-eyes)."
    )
    error_message = models.TextField(blank=True)
    progress = models.BigIntegerField(
        default=0, help_text="Bytes read from storage so far (the checksum pass, then the restore pass)."
    )
    total_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes the restore reads in all: twice the stored size of its backups.",
    )
    phase = models.CharField(
        max_length=PHASE_LENGTH,
        blank=True,
        help_text="Where the restore is, as its engine last said (e.g. pg_restore's tables loaded).",
    )
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid of the process running it.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the process running it (every few seconds)."
    )
    announce_pending = models.BooleanField(
        default=False,
        help_text="Ended, and its audit event and restore_finished alert not yet recorded (the watch does it).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "backup_restore_log"
        ordering = ["-created_at", "-id"]
        permissions = [
            ("restore_backup", "Can restore backups"),
            ("approve_restore", "Can approve another person's restore of a protected target"),
        ]

    def __str__(self) -> str:
        return f"restore of {self.backup_id} ({self.status})"

    @property
    def is_queued(self) -> bool:
        """Confirmed and recorded, not yet picked up by a worker."""
        return self.status == RestoreStatus.RUNNING and self.started_at is None


class Provision(models.Model):
    """A copy of a backup restored into a new database on a sandbox for developers, with a
    database user of its own (its password shown once, never stored), dropped after its TTL."""

    restore = models.OneToOneField(RestoreLog, on_delete=models.PROTECT, related_name="provision")
    sandbox = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="provisions")
    database = models.CharField(max_length=128, unique=True, help_text="<target>_<yyyymmdd>_<random>")
    username = models.CharField(max_length=128, help_text="The database user with rights on it only.")
    masked = models.BooleanField(default=False, help_text="A masking script ran before the user existed.")
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    dropped_at = models.DateTimeField(null=True, blank=True)
    drop_error = models.TextField(blank=True)

    class Meta:
        db_table = "backup_provision"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.database} on {self.sandbox_id}"
