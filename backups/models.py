"""The backup catalog: what to back up (Target), where to (Storage), and every run (Backup)
with its steps and stored copies. ``Backup`` is the ``backup_history`` table."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone as django_timezone

from backups.retention.policy import Policy, PolicyError
from backups.streaming.codecs import COMPRESSIONS

from . import secrets
from .engines import engine_choices
from .notifiers import notifier_kind_choices
from .storages import STORAGE_KINDS


def storage_kind_choices() -> list[tuple[str, str]]:
    return [(kind, kind.upper() if len(kind) <= 3 else kind.capitalize()) for kind in STORAGE_KINDS]


def validate_secret_reference(value: str) -> None:
    if not secrets.is_reference_only(value):
        raise ValidationError(
            "Write secrets as ${ENV_VAR} or ${file:/path/to/file}; plaintext secrets are never stored."
        )


COMPRESSION_CHOICES = [(name, name) for name in COMPRESSIONS]


class BackupType(models.TextChoices):
    FULL = "full", "Full"
    DATABASE = "database", "Database"
    FILES = "files", "Files"
    INCREMENTAL = "incremental", "Incremental"
    CONFIGURATION = "configuration", "Configuration"


class Storage(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=storage_kind_choices)
    options = models.JSONField(
        default=dict, blank=True, help_text="Kind-specific settings; secrets as ${ENV_VAR} references."
    )
    prefix = models.CharField(max_length=255, blank=True, help_text="Path prefix inside the storage.")
    required = models.BooleanField(
        default=True,
        help_text="A backup succeeds only when its copy here is stored and confirmed. An optional "
        "storage that fails is retried, then noted, and the backup still succeeds.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="storage_name_ci_unique")]

    def __str__(self) -> str:
        return self.name


def validate_retention(policy: Any, timezone: str) -> None:
    """Raise a ValidationError on the ``retention`` field (or ``timezone``) naming the bad rule."""
    try:
        Policy.from_mapping(policy, timezone=timezone)
    except PolicyError as exc:
        field = "timezone" if exc.field == "timezone" else "retention"
        raise ValidationError({field: str(exc) if field == "retention" else exc.message}) from None


class Target(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    engine = models.CharField(max_length=32, choices=engine_choices)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(max_length=1024, blank=True, help_text="Database name; for SQLite, its path.")
    user = models.CharField(max_length=255, blank=True)
    password = models.CharField(
        max_length=512,
        blank=True,
        validators=[validate_secret_reference],
        help_text="A reference, resolved only at run time: ${ENV_VAR} or ${file:/path}.",
    )
    options = models.JSONField(default=dict, blank=True)
    include_tables = models.JSONField(default=list, blank=True)
    exclude_tables = models.JSONField(default=list, blank=True)
    paths = models.JSONField(default=list, blank=True, help_text="Directories (files engine).")
    config_paths = models.JSONField(
        default=list,
        blank=True,
        help_text="Configuration files and directories (absolute paths) saved by backups of type "
        '"configuration", e.g. ["/etc/postgresql/15/main/postgresql.conf", "/etc/backupsite.toml"].',
    )
    timezone = models.CharField(max_length=64, default="UTC")
    compression = models.CharField(max_length=16, choices=COMPRESSION_CHOICES, default="gzip")
    retention = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"keep_daily": 7, "keep_weekly": 4, "tiers": ["1h:72h"], "retention_days": 90}; '
        "see the README's Retention section. Empty: nothing is ever deleted.",
    )
    is_active = models.BooleanField(default=True)
    skip_unchanged = models.BooleanField(
        default=False,
        help_text="Record a run SKIPPED when the engine can tell for sure that nothing changed since "
        "the last successful backup (PostgreSQL: same WAL position).",
    )
    sandbox = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="sandbox_for",
        help_text="A server of the same engine where backup_verify --deep restores into a scratch "
        "database, compares row counts with the manifest and drops it.",
    )
    storages = models.ManyToManyField(Storage, related_name="targets", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="target_name_ci_unique")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        validate_retention(self.retention, self.timezone)
        from .engines.configuration import path_problems

        if not isinstance(self.config_paths, list):
            raise ValidationError({"config_paths": 'a list of absolute paths, e.g. ["/etc/my.cnf"]'})
        problems = path_problems(self.config_paths)
        if problems:
            raise ValidationError({"config_paths": problems})
        if self.sandbox_id is None:
            return
        if self.pk is not None and self.sandbox_id == self.pk:
            raise ValidationError(
                {"sandbox": "a target cannot be its own sandbox; pick another server or user"}
            )
        if self.sandbox is not None and self.sandbox.engine != self.engine:
            raise ValidationError(
                {
                    "sandbox": f"{self.sandbox.name} uses the {self.sandbox.engine} engine; pick a {self.engine} target"
                }
            )


class BackupStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CORRUPT = "corrupt", "Corrupt"


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
    encryption = models.CharField(max_length=16, default="none")
    encryption_key_id = models.CharField(max_length=255, blank=True)
    verified = models.BooleanField(default=False)
    verified_at = models.DateTimeField(null=True, blank=True)
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "backup_history"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target", "status", "-started_at"], name="backup_target_status_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["target"],
                condition=models.Q(status="running"),
                name="one_running_backup_per_target",
            )
        ]
        permissions = [("download_backup", "Can download backup files")]

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
        if status == BackupStatus.SUCCESS and self.retention_days:
            fields["expires_at"] = (self.started_at or now) + timedelta(days=self.retention_days)
        return fields

    def finish(self, status: str, now: datetime | None = None) -> list[str]:
        """End the run as ``status`` (not saved); returns the names of the fields it set."""
        fields = self.closing_fields(status, now or django_timezone.now())
        for name, value in fields.items():
            setattr(self, name, value)
        return list(fields)

    def as_record(self) -> dict[str, Any]:
        """The row as plain JSON-ready values, keyed by ``backup_history`` column names."""
        record: dict[str, Any] = {"id": self.pk, "target": self.target.name}
        for name in RECORD_COLUMNS:
            value = getattr(self, name)
            record[name] = value.isoformat() if hasattr(value, "isoformat") else value
        record["schedule"] = self.schedule.name if self.schedule_id and self.schedule else None
        record["base_file_path"] = self.base.file_path if self.base_id and self.base else None
        return record


RECORD_COLUMNS = (
    "backup_type", "backup_name", "file_path", "file_size", "checksum", "status", "started_at",
    "completed_at", "duration_seconds", "tables_included", "files_included", "compression",
    "encryption", "encryption_key_id", "verified", "verified_at", "retention_days", "expires_at",
    "initiated_by", "notes", "error_message", "created_at", "raw_size", "progress", "deleted_at",
    "fingerprint",
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

    def __str__(self) -> str:
        return f"{self.storage.name}:{self.path}"

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
    status = models.CharField(
        max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.PENDING, db_index=True
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
