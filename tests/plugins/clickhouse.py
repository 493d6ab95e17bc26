"""A real ClickHouse server (Debian's clickhouse-server) for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.clickhouse import ClickHouseServer, running_clickhouse, server_binary


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    if server_binary() is None:
        pytest.skip("clickhouse-server is not installed (Debian package clickhouse-server)")
    with running_clickhouse() as server:
        yield server
