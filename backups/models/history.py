"""Every run (Backup, the ``backup_history`` table) with its steps, stored copies and downloads."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone as django_timezone

from backups.models.catalog import COMPRESSION_CHOICES, BackupType, Storage, Target


class BackupStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CORRUPT = "corrupt", "Corrupt"


class Proof(models.TextChoices):
    """How far a successful backup has been proven restorable, weakest first."""

    STORED = "stored", "Stored (size and SHA-256 of every copy confirmed at write)"
    VERIFIED = "verified", "Verified (every copy re-read later)"
    TRIAL = "trial", "Trial restore (the engine read the whole backup)"
    DRILLED = "drilled", "Drilled (restored into a sandbox and checked)"


PROOF_ORDER = (Proof.STORED, Proof.VERIFIED, Proof.TRIAL, Proof.DRILLED)


class Backup(models.Model):
    """One backup run (table ``backup_history``)."""

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="backups")
    schedule = models.ForeignKey(
        "schedules.BackupSchedule", on_delete=models.SET_NULL, null=True, blank=True, related_name="backups"
    )
    backup_type = models.CharField(max_length=32, choices=BackupType.choices, default=BackupType.FULL)
    backup_name = models.CharField(max_length=255)
    file_path = models.CharField(max_length=1024, blank=True, help_text="Object path inside each storage.")
    file_size = models.BigIntegerField(null=True, blank=True, help_text="Stored (compressed) bytes.")
    raw_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes produced by the dump.")
    checksum = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the stored bytes.")
    status = models.CharField(
        max_length=16, choices=BackupStatus.choices, default=BackupStatus.PENDING, db_index=True
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    tables_included = models.JSONField(default=list, blank=True)
    files_included = models.JSONField(default=list, blank=True)
    engine_info = models.JSONField(
        default=dict, blank=True, help_text="What the engine reported: server and tool versions, row counts."
    )
    fingerprint = models.CharField(
        max_length=255, blank=True, help_text="The source's change token when the dump started, if any."
    )
    base = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="incrementals",
        help_text="For an incremental backup: the backup it was built on (the previous link of its chain).",
    )
    compression = models.CharField(max_length=16, choices=COMPRESSION_CHOICES, default="gzip")
    encryption = models.CharField(
        max_length=16, default="none", choices=[("none", "None"), ("age", "age (X25519)")]
    )
    encryption_key_id = models.CharField(
        max_length=255, blank=True, help_text="The fingerprint of the encryption key it was encrypted to."
    )
    encryption_recipients = models.JSONField(
        default=list,
        blank=True,
        help_text="Every public key (age1...) it was encrypted to: its key's and the escrow keys'.",
    )
    verified = models.BooleanField(default=False)
    verified_at = models.DateTimeField(null=True, blank=True)
    proof = models.CharField(
        max_length=16,
        choices=Proof.choices,
        blank=True,
        default="",
        help_text="The strongest proof that it restores (stored < verified < trial < drilled); "
        "empty: none (not a success).",
    )
    proof_at = models.DateTimeField(null=True, blank=True, help_text="When its strongest proof was obtained.")
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    initiated_by = models.CharField(max_length=150, blank=True)
    notes = models.TextField(blank=True)
    error_message = models.TextField(blank=True)
    progress = models.BigIntegerField(default=0, help_text="Bytes dumped so far.")
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid of the process running it.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the process running it (every few seconds)."
    )
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="When retention removed its files.")
    alert_pending = models.BooleanField(
        default=False,
        help_text="Failed and its backup_failed alert not yet handed to the channels (the watch sends it).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "backup_history"
        ordering = ["-created_at", "-id"]
        indexes = [
            # A target's newest run of a status (last success, last failure) and its runs of a
            # status since a date (the dashboard's 30-day counts), without a sort.
            models.Index(fields=["target", "status", "-started_at", "-id"], name="backup_target_status_idx"),
            # A target's last runs whatever their status (the dashboard's strip, its newest
            # finished run), newest first; the status rides along for index-only reads.
            models.Index(
                fields=["target", "-started_at", "-id"], include=["status"], name="backup_target_started_idx"
            ),
            # A target's newest verification (most runs are never verified: a partial index).
            models.Index(
                fields=["target", "-verified_at"],
                condition=models.Q(verified_at__isnull=False),
                name="backup_target_verified_idx",
            ),
            # The backup list: newest first, and its date filter; filtered by status (failures).
            models.Index(fields=["-created_at", "-id"], name="backup_created_idx"),
            models.Index(fields=["status", "-created_at", "-id"], name="backup_status_created_idx"),
            # Failures whose alert is not out yet (the watch's outbox; almost always empty).
            models.Index(
                fields=["completed_at"],
                condition=models.Q(alert_pending=True),
                name="backup_alert_pending_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["target"],
                condition=models.Q(status="running"),
                name="one_running_backup_per_target",
            )
        ]
        permissions = [
            ("download_backup", "Can download backup files"),
            ("run_backup", "Can run a backup now from the browser"),
            ("verify_backup", "Can verify a backup from the browser"),
        ]

    def __str__(self) -> str:
        return self.backup_name or f"backup {self.pk}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def closing_fields(self, status: str, now: datetime) -> dict[str, Any]:
        """The fields that end a run as ``status`` at ``now``: completed_at, the duration since it
        started (None if it never started) and, for a success kept ``retention_days``, its expiry.
        The one place a run's end is computed; :meth:`finish` applies it."""
        fields: dict[str, Any] = {
            "status": status,
            "completed_at": now,
            "duration_seconds": (now - self.started_at).total_seconds() if self.started_at else None,
        }
        if status == BackupStatus.FAILED:
            fields["alert_pending"] = True  # cleared once the alert is handed to its channels
        if status == BackupStatus.SUCCESS and self.retention_days:
            fields["expires_at"] = (self.started_at or now) + timedelta(days=self.retention_days)
        return fields

    def finish(self, status: str, now: datetime | None = None) -> list[str]:
        """End the run as ``status`` (not saved); returns the names of the fields it set."""
        fields = self.closing_fields(status, now or django_timezone.now())
        for name, value in fields.items():
            setattr(self, name, value)
        return list(fields)

    def as_record(self, schedule_name: str | None = None) -> dict[str, Any]:
        """The row as plain JSON-ready values, keyed by ``backup_history`` column names
        (``schedule_name``: the schedule's, when the caller knows it, saving a query)."""
        record: dict[str, Any] = {"id": self.pk, "target": self.target.name}
        for name in RECORD_COLUMNS:
            value = getattr(self, name)
            record[name] = value.isoformat() if hasattr(value, "isoformat") else value
        if schedule_name is not None and self.schedule_id:
            record["schedule"] = schedule_name
        else:
            record["schedule"] = self.schedule.name if self.schedule_id and self.schedule else None
        record["base_file_path"] = self.base.file_path if self.base_id and self.base else None
        return record


RECORD_COLUMNS = (
    "backup_type", "backup_name", "file_path", "file_size", "checksum", "status", "started_at",
    "completed_at", "duration_seconds", "tables_included", "files_included", "compression",
    "encryption", "encryption_key_id", "verified", "verified_at", "retention_days", "expires_at",
    "initiated_by", "notes", "error_message", "created_at", "raw_size", "progress", "deleted_at",
    "fingerprint", "encryption_recipients",
)  # fmt: skip


class StepStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class BackupStep(models.Model):
    """One step of a run (validate, dump, compress, upload, verify, ...), shown as a timeline."""

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.RUNNING)
    started_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    bytes = models.BigIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.status}"

    @property
    def duration_seconds(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()


class CopyStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    STORED = "stored", "Stored"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted"


class BackupCopy(models.Model):
    """One stored copy of a backup in one storage."""

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="copies")
    # The backup's target, kept on the copy (a backup never changes target) so the dashboard
    # sums stored bytes per target from one index, without joining a million backups.
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="+", editable=False)
    storage = models.ForeignKey(Storage, on_delete=models.PROTECT, related_name="copies")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField(null=True, blank=True)
    etag = models.CharField(max_length=255, blank=True)
    version = models.CharField(max_length=255, blank=True, help_text="The storage's object version, if any.")
    status = models.CharField(max_length=16, choices=CopyStatus.choices, default=CopyStatus.PENDING)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["backup", "storage"], name="one_copy_per_storage")]
        indexes = [
            # The dashboard's stored bytes per target and per storage read only stored copies,
            # and only these columns (a partial, covering index, in the GROUP BY's order).
            models.Index(
                fields=["target", "storage", "size"],
                condition=models.Q(status=CopyStatus.STORED),
                name="backupcopy_stored_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.storage.name}:{self.path}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.target_id is None:
            self.target_id = self.backup.target_id
        super().save(*args, **kwargs)

    @property
    def manifest_path(self) -> str:
        return f"{self.path}.manifest.json"


class DownloadMethod(models.TextChoices):
    STREAM = "stream", "Streamed by the application"
    SIGNED_URL = "signed_url", "Redirected to a signed URL"


class BackupDownload(models.Model):
    """One download of a backup file: who, when, which copy, how."""

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="downloads")
    storage = models.ForeignKey(Storage, on_delete=models.SET_NULL, null=True, related_name="downloads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    username = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    method = models.CharField(max_length=16, choices=DownloadMethod.choices)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"backup {self.backup_id} by {self.username} at {self.created_at:%Y-%m-%d %H:%M}"
