"""Fault suite case 9: a restore that hits a real server error midway, for each database engine
(SQLite and files: tests/test_restore_safety.py; Redis, ClickHouse and MongoDB:
test_restore_midway_redis_clickhouse.py).

Each case restores a real backup into a real destination that already holds data, and makes the
destination itself fail the restore partway through. The invariant is what the engine can
promise, and the error carries the server's own words:

- PostgreSQL: one transaction (``pg_restore --single-transaction --exit-on-error``), so the
  destination is exactly as it was, also when the server is killed mid-restore; a database the
  restore created is dropped again.
- MariaDB/MySQL: DDL commits implicitly, so nothing can be rolled back; the message says which
  tables were replaced, which one was half done, and which were never reached (those are
  checked to be untouched).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backups.models import Backup, Storage
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import pg_target, server_target, unique_name
from tests.reliability.midway import backed_up, name
from tests.servers import wait_for
from tests.servers.mariadb import MariaDBServer, table_rows
from tests.servers.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.django_db


# -- PostgreSQL ---------------------------------------------------------------------------------------


def pg_state(server: PostgresServer, database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every user table's rows, sorted: what "as it was" means."""
    tables = server.execute(
        database,
        "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2",
    )
    return {
        f"{schema}.{table}": sorted(server.execute(database, f'SELECT * FROM "{schema}"."{table}"'))
        for schema, table in tables
    }


def wal_position(server: PostgresServer) -> str:
    return str(server.execute("postgres", "SELECT pg_current_wal_lsn()")[0][0])


def wal_since(server: PostgresServer, position: str) -> int:
    """Bytes of WAL the server has written since ``position``: rows loaded, committed or not."""
    return int(
        server.execute("postgres", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (position,))[0][0]
    )


def test_it_rolls_back_a_postgresql_restore_that_fails_after_loading_the_data(
    pg_server: PostgresServer, local_storage: Storage
) -> None:
    role = unique_name("reporting")
    source = pg_server.create_database(unique_name("grants"))
    pg_server.execute("postgres", f'CREATE ROLE "{role}"')
    pg_server.execute(
        source,
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text);"
        "INSERT INTO accounts SELECT g, 'owner ' || g FROM generate_series(1, 5000) g;"
        "CREATE TABLE orders (id int PRIMARY KEY, account int REFERENCES accounts);"
        "INSERT INTO orders SELECT g, 1 + g % 5000 FROM generate_series(1, 20000) g;"
        f'GRANT SELECT ON orders TO "{role}"',
    )
    backup = backed_up(pg_target(pg_server, name("grants"), source, local_storage))
    # The role is gone by restore time: the dump's GRANT, which pg_restore runs after every
    # table's data, fails on the destination.
    pg_server.execute(source, f'REVOKE ALL ON orders FROM "{role}"')
    pg_server.execute("postgres", f'DROP ROLE "{role}"')
    destination = pg_server.create_database(unique_name("grants_dst"))
    pg_server.execute(
        destination,
        "CREATE TABLE accounts (id int, owner text); INSERT INTO accounts VALUES (7, 'keep me');"
        "CREATE TABLE notes (line text); INSERT INTO notes VALUES ('mine')",
    )
    before, position = pg_state(pg_server, destination), wal_position(pg_server)
    try:
        log = restore_backup(backup, pg_target(pg_server, name("grants-dst"), destination))
        assert log.status == RestoreStatus.FAILED
        assert f'ERROR:  role "{role}" does not exist' in log.error_message
        assert f"Command was: GRANT SELECT ON TABLE public.orders TO {role};" in log.error_message
        assert "(nothing was changed: the restore ran in one transaction)" in log.error_message
        assert pg_state(pg_server, destination) == before
        # Midway indeed: the server had loaded the 25000 rows (about 1 MB of WAL) before it rolled
        # them back (the GRANT comes after the data in pg_restore's order).
        assert wal_since(pg_server, position) > 500_000

        missing = unique_name("grants_new")  # a database the restore creates is dropped again
        log = restore_backup(backup, pg_target(pg_server, name("grants-new"), missing))
        assert log.status == RestoreStatus.FAILED
        assert f'role "{role}" does not exist' in log.error_message
        assert (
            f"nothing was changed: database {missing}, which this restore had created, was dropped again"
            in (log.error_message)
        )
        assert not pg_server.database_exists(missing)
    finally:
        pg_server.drop_database(source)
        pg_server.drop_database(destination)


def copy_backend(server: PostgresServer) -> int | None:
    """The server process running pg_restore's COPY (pg_restore reports as "backupsite")."""
    with contextlib.suppress(Exception):
        rows = server.execute(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'backupsite' "
            "AND state = 'active' AND query LIKE 'COPY %'",
        )
        return int(rows[0][0]) if rows else None
    return None


def accepts_queries(server: PostgresServer) -> bool:
    with contextlib.suppress(Exception):
        return server.execute("postgres", "SELECT 1") == [(1,)]
    return False


@pytest.fixture
def own_pg_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """A cluster of its own: the test crashes it."""
    with running_postgres() as server:
        monkeypatch.setenv("TEST_PG_OWN_PASSWORD", server.password)
        yield server


def test_it_leaves_a_postgresql_destination_as_it_was_when_the_server_is_killed_mid_restore(
    own_pg_server: PostgresServer, local_storage: Storage
) -> None:
    server = own_pg_server
    source = server.create_database("big")
    server.execute(
        source,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 300000) g",
    )
    target = server_target("postgresql", server, "TEST_PG_OWN_PASSWORD", local_storage, database=source)
    backup = backed_up(target)
    destination = server.create_database("big_copy")
    server.execute(destination, "CREATE TABLE big (id int, pad text); INSERT INTO big VALUES (1, 'precious')")
    killed: list[int] = []

    def kill_the_copy() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pid = copy_backend(server)
            if pid is not None:
                time.sleep(0.05)  # a few MB into the table
                os.kill(pid, signal.SIGKILL)  # the postmaster then resets every session and recovers
                killed.append(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_copy)
    killer.start()
    log = restore_backup(
        backup, server_target("postgresql", server, "TEST_PG_OWN_PASSWORD", database=destination)
    )
    killer.join()
    assert killed, "the test must have killed the server process loading the data"
    assert log.status == RestoreStatus.FAILED
    assert (
        f"the PostgreSQL server at {server.host}:{server.port} closed the connection: " in log.error_message
    )
    assert "server closed the connection unexpectedly" in log.error_message
    assert "nothing was changed: the restore ran in one transaction" in log.error_message
    wait_for(lambda: accepts_queries(server), "the server's crash recovery")
    assert pg_state(server, destination) == {"public.big": [(1, "precious")]}  # crash recovery rolled it back


# -- MariaDB / MySQL ----------------------------------------------------------------------------------

MARIADB_ENV = "TEST_MARIADB_PASSWORD"
RESTORER_ENV = "TEST_MARIADB_RESTORER_PASSWORD"


@pytest.fixture
def mariadb_env(mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> MariaDBServer:
    monkeypatch.setenv(MARIADB_ENV, mariadb_server.password)
    return mariadb_server


def mariadb_pair(server: MariaDBServer, storage: Storage, big_row: bool = False) -> tuple[Backup, str, str]:
    """A backup of three tables (``accounts``, ``orders``, ``zones``, dumped in that order) and a
    destination that holds older versions of ``accounts`` and ``zones`` and a table of its own.
    ``orders`` has a trigger whose DEFINER is another account, and with ``big_row`` a 2 MB row."""
    source = server.create_database(unique_name("midway"))
    for statement in (
        "CREATE TABLE accounts (id INT PRIMARY KEY, owner VARCHAR(40))",
        "INSERT INTO accounts VALUES (1, 'new one'), (2, 'new two')",
        "CREATE TABLE orders (id INT PRIMARY KEY, note LONGTEXT)",
        "INSERT INTO orders VALUES (1, 'small')" + (", (2, REPEAT('x', 2000000))" if big_row else ""),
        "CREATE DEFINER = 'auditor'@'%' TRIGGER orders_audit BEFORE INSERT ON orders "
        "FOR EACH ROW SET NEW.note = NEW.note",
        "CREATE TABLE zones (id INT PRIMARY KEY, label VARCHAR(40))",
        "INSERT INTO zones VALUES (1, 'new zone')",
    ):
        server.execute(source, statement)
    backup = backed_up(server_target("mariadb", server, MARIADB_ENV, storage, database=source))
    destination = server.create_database(unique_name("midway_dst"))
    for statement in (
        "CREATE TABLE accounts (id INT, owner VARCHAR(40))",
        "INSERT INTO accounts VALUES (9, 'old account')",
        "CREATE TABLE zones (id INT, label VARCHAR(40))",
        "INSERT INTO zones VALUES (9, 'old zone')",
        "CREATE TABLE own (id INT)",
        "INSERT INTO own VALUES (42)",
    ):
        server.execute(destination, statement)
    return backup, source, destination


def test_it_says_which_mariadb_tables_a_restore_replaced_when_it_fails_midway(
    mariadb_env: MariaDBServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mariadb_env
    backup, source, destination = mariadb_pair(server, local_storage)
    # The restoring account may do anything in the destination database, but not create objects
    # that run as another account (the trigger's DEFINER): the server refuses once the rows of
    # ``orders`` are in.
    restorer = unique_name("restorer")
    monkeypatch.setenv(RESTORER_ENV, "restorer-pw")
    server.execute(None, f"CREATE USER '{restorer}'@'127.0.0.1' IDENTIFIED BY 'restorer-pw'")
    server.execute(None, f"GRANT ALL ON `{destination}`.* TO '{restorer}'@'127.0.0.1'")
    try:
        into = server_target("mariadb", server, RESTORER_ENV, database=destination, user=restorer)
        log = restore_backup(backup, into)
        assert log.status == RestoreStatus.FAILED
        assert (
            "Access denied; you need (at least one of) the SUPER, SET USER privilege(s)" in log.error_message
        )
        assert "The database may be partially restored (MySQL DDL is not transactional)" in log.error_message
        assert (
            "table(s) restored before the error: accounts; the error came in table orders's part (DROP, "
            "CREATE, rows, triggers): it may be missing, empty or partly restored; table(s) not reached, "
            "left as they were: zones."
        ) in log.error_message
        rows = table_rows(server, destination)
        assert rows["accounts"] == [(1, "new one"), (2, "new two")]  # replaced, as the message says
        assert rows["orders"] == [(1, "small")]  # its rows were in when the trigger was refused
        assert rows["zones"] == [(9, "old zone")]  # not reached, as the message says
        assert rows["own"] == [(42,)]
    finally:
        server.execute(None, f"DROP USER '{restorer}'@'127.0.0.1'")
        server.drop_database(source)
        server.drop_database(destination)


def test_it_names_max_allowed_packet_when_the_mariadb_server_drops_a_restore_midway(
    mariadb_env: MariaDBServer, local_storage: Storage
) -> None:
    server = mariadb_env
    backup, source, destination = mariadb_pair(server, local_storage, big_row=True)
    previous = server.execute(None, "SELECT @@GLOBAL.max_allowed_packet")[0][0]
    server.execute(None, "SET GLOBAL max_allowed_packet = 1048576")  # new sessions: the restore's
    try:
        log = restore_backup(backup, server_target("mariadb", server, MARIADB_ENV, database=destination))
        assert log.status == RestoreStatus.FAILED
        # The server says why and hangs up; the client reports whichever it notices first.
        limit = "max_allowed_packet is 1048576 bytes on this server: raise it there for larger rows)"
        assert re.search(
            r"ERROR 1153 \(08S01\) at line \d+: Got a packet bigger than 'max_allowed_packet' bytes \("
            + re.escape(limit)
            + r"|ERROR 20(06|13) \(HY000\) at line \d+: (Server has gone away|Lost connection to server during "
            r"query) \(the server closed the connection: it stopped, or a statement was larger than its "
            r"max_allowed_packet; " + re.escape(limit),
            log.error_message,
        ), log.error_message
        assert "table(s) restored before the error: accounts; the error came in table orders's part" in (
            log.error_message
        )
        assert "left as they were: zones." in log.error_message
        rows = table_rows(server, destination)
        assert rows["accounts"] == [(1, "new one"), (2, "new two")]
        assert rows["zones"] == [(9, "old zone")] and rows["own"] == [(42,)]
    finally:
        server.execute(None, f"SET GLOBAL max_allowed_packet = {int(previous)}")
        server.drop_database(source)
        server.drop_database(destination)
