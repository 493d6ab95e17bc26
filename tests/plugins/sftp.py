"""The sftp storage's server and fixtures: one real OpenSSH sshd per session, a fresh remote
directory per test (so ``list_objects()`` starts empty)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backups.storages.sftp import SFTPStorage
from tests.servers.sshd import SSHServer, running_sshd


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[SSHServer]:
    with running_sshd() as server:
        yield server


@pytest.fixture
def storage_sftp(sshd_server: SSHServer, tmp_path: Path) -> Iterator[SFTPStorage]:
    """Key auth, host key checked against a known_hosts file."""
    root = sshd_server.fresh_dir("contract")
    options = sshd_server.options(
        str(root),
        host_key_fingerprint=None,
        known_hosts=str(sshd_server.known_hosts(tmp_path / "known_hosts")),
    )
    storage = SFTPStorage("sftp", options, prefix="contract")
    yield storage
    storage.close()
