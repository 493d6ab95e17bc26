from __future__ import annotations

from backups import services
from backups.models import BackupStatus


def test_it_backs_up_a_sqlite_target(sqlite_target):
    backup = services.run_backup(sqlite_target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
