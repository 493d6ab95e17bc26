"""The azure storage's server and fixtures: Azurite in its own process, one container for the
session and a fresh prefix per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from backups.storages.azure import AzureStorage
from tests.servers.azurite import AzuriteServer, running_azurite

CONTAINER = "backupsite-tests"
_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    with running_azurite() as server:
        with BlobServiceClient.from_connection_string(server.connection_string()) as client:
            client.create_container(CONTAINER)
        yield server


def azure_options(server: AzuriteServer, **extra: Any) -> dict[str, Any]:
    return {
        "account_name": server.account,
        "account_key": server.key,
        "container": CONTAINER,
        "endpoint_url": server.endpoint,
        # 1 MiB blocks (the smallest allowed) so the contract's 1.3 MB dead writer has staged a
        # block, i.e. left something a sweep must find; production defaults to 8 MiB.
        "block_size_mib": 1,
        "timeout_seconds": 10,
        **extra,
    }


@pytest.fixture
def storage_azure(azurite_server: AzuriteServer) -> Iterator[AzureStorage]:
    store = AzureStorage("azure", azure_options(azurite_server), prefix=f"contract-{next(_prefixes)}")
    yield store
    store.close()
