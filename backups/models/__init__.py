"""The backup catalog: what to back up (Target), where to (Storage), every run (Backup, the
``backup_history`` table) with its steps and stored copies, and notifications."""

from backups.models.catalog import (
    COMPRESSION_CHOICES,
    BackupType,
    Storage,
    Target,
    storage_kind_choices,
    validate_retention,
    validate_secret_reference,
)
from backups.models.history import (
    RECORD_COLUMNS,
    Backup,
    BackupCopy,
    BackupDownload,
    BackupStatus,
    BackupStep,
    CopyStatus,
    DownloadMethod,
    StepStatus,
)
from backups.models.notifications import (
    Event,
    Notification,
    NotificationStatus,
    Notifier,
    default_notifier_events,
    validate_events,
)

__all__ = [
    "COMPRESSION_CHOICES",
    "RECORD_COLUMNS",
    "Backup",
    "BackupCopy",
    "BackupDownload",
    "BackupStatus",
    "BackupStep",
    "BackupType",
    "CopyStatus",
    "DownloadMethod",
    "Event",
    "Notification",
    "NotificationStatus",
    "Notifier",
    "StepStatus",
    "Storage",
    "Target",
    "default_notifier_events",
    "storage_kind_choices",
    "validate_events",
    "validate_retention",
    "validate_secret_reference",
]
