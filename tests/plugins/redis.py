"""Real Redis servers for the session: the production Celery broker (no password), and a
password-protected source (filled with a sample of every data type) and destination for the
Redis engine's tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.servers.redis import RedisServer, fill_sample, running_redis

#: Servers stream a snapshot to a new replica only after this many seconds (5 by default),
#: waiting for more replicas to share it; the engine's tests do not wait.
FAST_SNAPSHOTS = ("--repl-diskless-sync-delay", "0")


def redis_password() -> str:
    """Spaces, quotes, a '#' and non-ASCII: what a config file or an argv would mangle."""
    return f"pw {secrets.token_urlsafe(12)} 'q' \"dq\" #ü"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_source() -> Iterator[RedisServer]:
    """The Redis engine's source: the sample data set; tests must not change it."""
    with running_redis(redis_password(), extra_args=FAST_SNAPSHOTS) as server:
        fill_sample(server)
        yield server


@pytest.fixture(scope="session")
def redis_destination() -> Iterator[RedisServer]:
    """Where the Redis engine's tests restore; each test empties it first (tests.servers.redis.reset)."""
    with running_redis(redis_password(), extra_args=FAST_SNAPSHOTS) as server:
        yield server
