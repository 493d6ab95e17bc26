"""The s3 storage on moto's S3 server: one server per session, a fresh bucket per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backups.storages.s3 import S3Storage
from tests.servers.s3 import S3Server, running_s3

_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[S3Server]:
    """A second moto server that checks signatures (for wrong-credential tests)."""
    with running_s3(auth=True) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Callable[..., str]:
    """Create a fresh bucket (extra arguments go to CreateBucket) and return its name."""

    def create(**kwargs: Any) -> str:
        name = f"test-{os.getpid()}-{next(_buckets)}"
        s3_server.client().create_bucket(Bucket=name, **kwargs)
        return name

    return create


@pytest.fixture
def storage_s3(s3_server: S3Server, s3_bucket: Callable[..., str]) -> Iterator[S3Storage]:
    storage = S3Storage("s3", s3_server.options(s3_bucket()), prefix="contract/site")
    yield storage
    storage.close()
