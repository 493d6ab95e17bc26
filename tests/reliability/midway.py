"""What the restore-midway cases share: a backup that must succeed, unique target names."""

from __future__ import annotations

from backups import services
from backups.models import Backup, BackupStatus, Target
from tests.conftest import unique_name


def backed_up(target: Target) -> Backup:
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    return backup


def name(prefix: str) -> str:
    """A unique target name."""
    return unique_name(prefix).replace("_", "-")
