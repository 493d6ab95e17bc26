"""The azure storage's server and fixtures (being built in issue 4)."""

from __future__ import annotations

import pytest

from backups.storages import BackupStorage


@pytest.fixture
def storage_azure() -> BackupStorage:
    pytest.skip("the azure storage is not built yet")
