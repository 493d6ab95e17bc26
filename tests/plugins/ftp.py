"""The ftp storage's server and fixtures (being built in issue 4)."""

from __future__ import annotations

import pytest

from backups.storages import BackupStorage


@pytest.fixture
def storage_ftp() -> BackupStorage:
    pytest.skip("the ftp storage is not built yet")
