"""Local storage for the storage contract: a fresh directory per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from backups.storages import LocalStorage


@pytest.fixture
def storage_local(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local", {"path": str(tmp_path / "store")}, prefix="contract")
