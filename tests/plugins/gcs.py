"""The gcs storage's server and fixtures (being built in issue 4)."""

from __future__ import annotations

import pytest

from backups.storages import BackupStorage


@pytest.fixture
def storage_gcs() -> BackupStorage:
    pytest.skip("the gcs storage is not built yet")
