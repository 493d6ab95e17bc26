"""The backup catalog: what to back up (Target), where to (Storage), every run (Backup, the
``backup_history`` table) with its steps and stored copies, and notifications."""

from backups.models.access import GrantSource, Role, RoleGrant
from backups.models.api_tokens import ApiToken
from backups.models.audit import ACTIONS, AppendOnlyError, AuditEvent, AuthMethod, Outcome
from backups.models.catalog import (
    COMPRESSION_CHOICES,
    BackupType,
    Storage,
    Target,
    managed_by_field,
    storage_kind_choices,
    tag_problem,
    validate_retention,
    validate_secret_reference,
)
from backups.models.drills import Drill, DrillStatus, DrillTrigger
from backups.models.history import (
    PROOF_ORDER,
    RECORD_COLUMNS,
    Backup,
    BackupCopy,
    BackupDownload,
    BackupStatus,
    BackupStep,
    CopyStatus,
    DownloadMethod,
    Proof,
    StepStatus,
)
from backups.models.keys import EncryptionKey, validate_recipient
from backups.models.notifications import (
    Event,
    Notification,
    NotificationStatus,
    Notifier,
    default_notifier_events,
    validate_events,
)
from backups.models.site import AppliedConfig, ProcessHeartbeat
from backups.models.watching import ExternalWatch

__all__ = [
    "ACTIONS",
    "COMPRESSION_CHOICES",
    "PROOF_ORDER",
    "RECORD_COLUMNS",
    "ApiToken",
    "AppendOnlyError",
    "AppliedConfig",
    "AuditEvent",
    "AuthMethod",
    "Backup",
    "BackupCopy",
    "BackupDownload",
    "BackupStatus",
    "BackupStep",
    "BackupType",
    "CopyStatus",
    "DownloadMethod",
    "Drill",
    "DrillStatus",
    "DrillTrigger",
    "EncryptionKey",
    "Event",
    "ExternalWatch",
    "GrantSource",
    "Notification",
    "NotificationStatus",
    "Notifier",
    "Outcome",
    "ProcessHeartbeat",
    "Proof",
    "Role",
    "RoleGrant",
    "StepStatus",
    "Storage",
    "Target",
    "default_notifier_events",
    "managed_by_field",
    "storage_kind_choices",
    "tag_problem",
    "validate_events",
    "validate_recipient",
    "validate_retention",
    "validate_secret_reference",
]
