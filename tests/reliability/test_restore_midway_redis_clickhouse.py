"""Fault suite case 9, continued: a Redis or ClickHouse restore that hits a real server error
midway (and MongoDB's, which cannot run here). PostgreSQL and MariaDB: test_restore_midway.py.

- Redis: the keys a failed restore wrote are deleted again (each was absent before); with
  ``replace = true`` the overwritten values are gone, and the message says it is partial.
- ClickHouse: the tables and views a failed restore created are dropped again, or the database
  when it created it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from backups.models import Storage
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import server_target, unique_name
from tests.engine_checks import children_named
from tests.plugins.redis import FAST_SNAPSHOTS, redis_password
from tests.reliability.midway import backed_up
from tests.servers import wait_for
from tests.servers.clickhouse import ClickHouseServer
from tests.servers.redis import RedisServer, contents, running_redis

pytestmark = pytest.mark.django_db


# -- PostgreSQL ---------------------------------------------------------------------------------------

# -- Redis --------------------------------------------------------------------------------------------

REDIS_SOURCE_ENV = "TEST_REDIS_MIDWAY_SOURCE_PASSWORD"
REDIS_DESTINATION_ENV = "TEST_REDIS_MIDWAY_DESTINATION_PASSWORD"


@pytest.fixture(scope="module")
def redis_pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A source holding 4000 keys of 1 KiB (4 MB) and 3 keys in db3, and a destination of its
    own (the tests limit its memory)."""
    with (
        running_redis(redis_password(), extra_args=FAST_SNAPSHOTS) as source,
        running_redis(redis_password()) as destination,
    ):
        with contextlib.closing(source.client()) as client:
            pipe = client.pipeline(transaction=False)
            for i in range(4000):
                pipe.set(f"blob:{i}", os.urandom(1024))
            pipe.execute()
        with contextlib.closing(source.client(3)) as client:
            client.mset({"late:1": "a", "late:2": "b", "late:3": "c"})
        yield source, destination


@pytest.mark.parametrize("replace", [False, True])
def test_it_deletes_what_a_redis_restore_wrote_when_the_destination_runs_out_of_memory(
    redis_pair: tuple[RedisServer, RedisServer],
    local_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
    replace: bool,
) -> None:
    source, destination = redis_pair
    monkeypatch.setenv(REDIS_SOURCE_ENV, source.password)
    monkeypatch.setenv(REDIS_DESTINATION_ENV, destination.password)
    backup = backed_up(server_target("redis", source, REDIS_SOURCE_ENV, local_storage, prefix="redis-src"))
    with contextlib.closing(destination.client()) as client:
        client.flushall()
        client.mset({"app:1": "mine", "app:2": "also mine"})
        used = int(client.info("memory")["used_memory"])
        # Room for about 1.5 MB of the backup's 4 MB: RESTORE is refused partway through db0.
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(used + 1_500_000))
    before = contents(destination, (0, 3))
    try:
        into = server_target(
            "redis", destination, REDIS_DESTINATION_ENV, prefix="redis-dst", options={"replace": replace}
        )
        log = restore_backup(backup, into)
    finally:
        with contextlib.closing(destination.client()) as client:
            client.config_set("maxmemory", "0")
    assert log.status == RestoreStatus.FAILED
    message = log.error_message
    assert (
        "into db0 on" in message
        and "failed: OOM command not allowed when used memory > 'maxmemory'" in message
    )
    written = int(message.split(". ", 1)[1].split(" key(s) had been restored")[0])
    assert 0 < written < 4000, message
    after = contents(destination, (0, 3))
    if not replace:
        assert (
            f"{written} key(s) had been restored; they were deleted again, so the destination is as it was"
            in (message)
        )
        assert after == before
    else:
        assert f"{written} key(s) had been restored: the destination is partially restored" in message
        assert len(after[0]) == len(before[0]) + written and 3 not in after  # db3 never reached
        assert {key: after[0][key] for key in before[0]} == before[0]


def test_it_blames_the_redis_scratch_server_killed_mid_restore_and_deletes_what_it_wrote(
    redis_pair: tuple[RedisServer, RedisServer], local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, destination = redis_pair
    monkeypatch.setenv(REDIS_SOURCE_ENV, source.password)
    monkeypatch.setenv(REDIS_DESTINATION_ENV, destination.password)
    backup = backed_up(server_target("redis", source, REDIS_SOURCE_ENV, local_storage, prefix="redis-src"))
    with contextlib.closing(destination.client()) as client:
        client.flushall()
        client.mset({"app:1": "mine", "app:2": "also mine"})
    before = contents(destination, (0, 3))
    servers = set(children_named("redis-server"))  # the source and the destination
    killed: list[int] = []

    def kill_the_scratch_server() -> None:
        # The destination holds the first batch of RESTOREs (a write pause) while the scratch
        # server, which the next batch is read from, is killed; then lets it through.
        with contextlib.closing(destination.client()) as admin:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and int(admin.info("clients")["blocked_clients"]) == 0:
                time.sleep(0.005)
            scratch = set(children_named("redis-server")) - servers
            for pid in scratch:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            admin.execute_command("CLIENT", "UNPAUSE")

    with contextlib.closing(destination.client()) as client:
        client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    killer = threading.Thread(target=kill_the_scratch_server)
    killer.start()
    try:
        into = server_target("redis", destination, REDIS_DESTINATION_ENV, prefix="redis-dst")
        log = restore_backup(backup, into)
    finally:
        killer.join()
        with contextlib.closing(destination.client()) as client:
            client.execute_command("CLIENT", "UNPAUSE")
    assert len(killed) == 1, "the test must have killed the scratch server"
    assert log.status == RestoreStatus.FAILED
    assert log.error_message.startswith("reading the backup from the scratch redis-server failed: "), (
        log.error_message
    )
    assert destination.host not in log.error_message.split(". ")[0]  # not blamed on the destination
    assert "1000 key(s) had been restored; they were deleted again, so the destination is as it was" in (
        log.error_message
    )
    assert contents(destination, (0, 3)) == before


# -- MongoDB ------------------------------------------------------------------------------------------


@pytest.mark.skip(
    reason="MongoDB: mongod and the Database Tools are not packaged in the registries this project can "
    "reach (Debian, PyPI, npm), so no real server can fail a restore midway here"
)
def test_it_reports_a_mongodb_restore_that_fails_midway() -> None:
    """Not built: needs a real mongod (see tests/test_engine_mongodb.py for the same limit)."""


# -- ClickHouse ---------------------------------------------------------------------------------------

CLICKHOUSE_ENV = "TEST_CLICKHOUSE_PASSWORD"


def ch_state(server: ClickHouseServer, database: str) -> dict[str, tuple[str, str]]:
    """name -> (engine, every row as TSV) of each table and view of ``database``."""
    state = {}
    for table, engine in server.tables(database).items():
        rows = (
            ""
            if engine in ("View", "Distributed")
            else server.query(f"SELECT * FROM `{database}`.`{table}` ORDER BY tuple(*)")
        )
        state[table] = (engine, rows)
    return state


@pytest.fixture
def ch(clickhouse_server: ClickHouseServer, monkeypatch: pytest.MonkeyPatch) -> ClickHouseServer:
    monkeypatch.setenv(CLICKHOUSE_ENV, clickhouse_server.password)
    return clickhouse_server


def test_it_drops_what_a_clickhouse_restore_created_when_a_view_fails_after_the_data(
    ch: ClickHouseServer, local_storage: Storage
) -> None:
    source, elsewhere = unique_name("ch_midway"), unique_name("ch_elsewhere")
    ch.query(
        f"CREATE DATABASE `{elsewhere}`; CREATE TABLE `{elsewhere}`.prices (id UInt32) ENGINE = Memory;\n"
        f"CREATE DATABASE `{source}`;\n"
        f"CREATE TABLE `{source}`.events (id UInt32, note String) ENGINE = MergeTree ORDER BY id;\n"
        f"INSERT INTO `{source}`.events SELECT number, toString(number) FROM system.numbers LIMIT 5000;\n"
        f"CREATE TABLE `{source}`.people (id UInt32) ENGINE = Log; INSERT INTO `{source}`.people VALUES (1), (2);\n"
        f"CREATE VIEW `{source}`.priced AS SELECT * FROM `{elsewhere}`.prices"
    )
    backup = backed_up(server_target("clickhouse", ch, CLICKHOUSE_ENV, local_storage, database=source))
    ch.drop_database(elsewhere)  # the view's statement now names a database the server lacks
    destination = unique_name("ch_midway_dst")
    ch.query(
        f"CREATE DATABASE `{destination}`; CREATE TABLE `{destination}`.own (id UInt8) ENGINE = Log;\n"
        f"INSERT INTO `{destination}`.own VALUES (42)"
    )
    before = ch_state(ch, destination)
    try:
        log = restore_backup(backup, server_target("clickhouse", ch, CLICKHOUSE_ENV, database=destination))
        assert log.status == RestoreStatus.FAILED
        assert (
            f"restore into database {destination} on {ch.host}:{ch.port} failed at priced: "
            in log.error_message
        )
        assert f"Code: 81. Database {elsewhere} doesn't exist." in log.error_message
        assert (
            "The 2 table(s) and view(s) it had created were dropped again (events, people): "
            f"database {destination} is as it was."
        ) in log.error_message
        assert ch_state(ch, destination) == before
    finally:
        ch.drop_database(source)
        ch.drop_database(destination)


def test_it_drops_the_database_a_clickhouse_restore_created_when_the_server_refuses_a_table_engine(
    ch: ClickHouseServer, local_storage: Storage
) -> None:
    cluster = ch.base / "config.d" / "cluster.xml"
    cluster.parent.mkdir(exist_ok=True)

    def clusters() -> str:
        return ch.query("SELECT cluster FROM system.clusters")

    # A cluster that exists at backup time and not at restore time (the server rereads its
    # configuration every few seconds): restoring a cluster's database onto a lone server.
    cluster.write_text(
        '<?xml version="1.0"?><yandex><remote_servers><elsewhere><shard><replica>'
        f"<host>{ch.host}</host><port>{ch.port}</port></replica></shard></elsewhere></remote_servers></yandex>"
    )
    source = unique_name("ch_cluster")
    try:
        wait_for(lambda: "elsewhere" in clusters(), "the cluster in the server's configuration")
        ch.query(
            f"CREATE DATABASE `{source}`;\n"
            f"CREATE TABLE `{source}`.a_local (id UInt32) ENGINE = MergeTree ORDER BY id;\n"
            f"INSERT INTO `{source}`.a_local VALUES (1), (2), (3);\n"
            f"CREATE TABLE `{source}`.m_everywhere (id UInt32) ENGINE = Distributed(elsewhere, `{source}`, a_local);\n"
            f"CREATE TABLE `{source}`.z_later (id UInt32) ENGINE = Log"
        )
        backup = backed_up(server_target("clickhouse", ch, CLICKHOUSE_ENV, local_storage, database=source))
    finally:
        cluster.unlink()
    wait_for(lambda: "elsewhere" not in clusters(), "the cluster gone from the server's configuration")
    destination = unique_name("ch_cluster_dst")
    try:
        log = restore_backup(backup, server_target("clickhouse", ch, CLICKHOUSE_ENV, database=destination))
        assert log.status == RestoreStatus.FAILED
        assert "failed at m_everywhere: " in log.error_message
        assert "Code: 170. Requested cluster 'elsewhere' not found." in log.error_message
        assert f"Database {destination} did not exist before this restore and was dropped again." in (
            log.error_message
        )
        assert not ch.database_exists(destination)
    finally:
        ch.drop_database(source)
        ch.drop_database(destination)
