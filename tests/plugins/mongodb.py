"""A real MongoDB server for the session, or a skip that says why there is none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.mongodb import MongoServer, missing_programs, running_mongod, skip_reason


@pytest.fixture(scope="session")
def mongodb_server() -> Iterator[MongoServer]:
    missing = missing_programs()
    if missing:
        pytest.skip(skip_reason(missing))
    with running_mongod() as server:
        yield server
