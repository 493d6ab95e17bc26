"""The sftp storage's server and fixtures (being built in issue 4)."""

from __future__ import annotations

import pytest

from backups.storages import BackupStorage


@pytest.fixture
def storage_sftp() -> BackupStorage:
    pytest.skip("the sftp storage is not built yet")
