"""The ftp storage's servers and fixtures: pyftpdlib in its own process, FTPS with a test CA.

``ftp_server`` requires TLS on control and data connections; ``ftp_plain_server`` (started only
when a test asks for it) speaks plain FTP for the ``allow_plaintext`` tests. ``storage_ftp``
gets a fresh root directory per test, so ``list_objects()`` starts empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from backups.storages.ftp import FTPStorage
from tests.servers.ftp import FTPServer, running_ftp


@pytest.fixture(scope="session")
def ftp_server() -> Iterator[FTPServer]:
    with running_ftp(tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def ftp_plain_server() -> Iterator[FTPServer]:
    with running_ftp(tls=False) as server:
        yield server


@pytest.fixture
def ftp_root() -> str:
    """A fresh directory on the server (absolute, under the user's home) for one test."""
    return f"/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage_ftp(ftp_server: FTPServer, ftp_root: str) -> Iterator[FTPStorage]:
    store = FTPStorage("ftp", ftp_server.options(root=ftp_root), prefix="contract")
    yield store
    store.close()
