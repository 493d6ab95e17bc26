"""The s3 storage's server and fixtures (being built in issue 4)."""

from __future__ import annotations

import pytest

from backups.storages import BackupStorage


@pytest.fixture
def storage_s3() -> BackupStorage:
    pytest.skip("the s3 storage is not built yet")
