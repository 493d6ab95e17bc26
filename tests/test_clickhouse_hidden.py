"""Credentials ClickHouse hides from ``SHOW CREATE TABLE`` (``'[HIDDEN]'``) never reach a restore.

From 22.12 on (ClickHouse #43227, "mask secret parts in the output of SHOW CREATE TABLE and
SELECT FROM system.tables") the server prints ``'[HIDDEN]'`` for the secret arguments of
MySQL, PostgreSQL, S3, URL ... tables, unless the server setting, the
``displaySecretsInShowAndSelect`` grant and the ``format_display_secrets_in_show_and_select``
setting all allow them. Debian's 18.16, the server here, prints them in clear (shown below), so
the 22.12 output is made with the server's own hands: a table whose password *is* the text
``[HIDDEN]`` has exactly the statement a newer server prints for a hidden one. A backup refuses
such a table, and a restore (or deep verify) of an archive that holds one (a backup taken by an
older Backupsite from a newer server, rebuilt here from a real dump) refuses before changing
anything.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from backups import services
from backups.engines import get_engine
from backups.engines.base import EngineError, RestoreOptions
from backups.engines.clickhouse.sql import hides_secrets
from backups.models import BackupStatus, Storage
from tests.conftest import unique_name
from tests.servers.clickhouse import ClickHouseServer
from tests.test_engine_clickhouse import PASSWORD_ENV, connection, dump_bytes, make_target, members, rebuild

pytestmark = pytest.mark.django_db

MYSQL_PASSWORD = "Mysq1-pa55word"


@pytest.fixture(autouse=True)
def _password_reference(clickhouse_server: ClickHouseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, clickhouse_server.password)


def mysql_table(password: str) -> str:
    # The MySQL engine connects only when read, so no MySQL server is needed to create one.
    return f"(id UInt32) ENGINE = MySQL('127.0.0.1:3306', 'shop', 'orders', 'reader', '{password}')"


@pytest.fixture
def linked_db(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    """A MergeTree table with rows and a MySQL table whose password 18.16 shows in clear."""
    name = unique_name("linked")
    clickhouse_server.query(
        f"""
        CREATE DATABASE `{name}`;
        CREATE TABLE `{name}`.events (id UInt64, note String) ENGINE = MergeTree ORDER BY id;
        INSERT INTO `{name}`.events SELECT number, toString(number) FROM system.numbers LIMIT 100;
        CREATE TABLE `{name}`.orders {mysql_table(MYSQL_PASSWORD)};
        """
    )
    yield name
    clickhouse_server.drop_database(name)


def test_it_finds_the_placeholder_only_in_string_literals() -> None:
    assert hides_secrets("CREATE TABLE d.t (id UInt32) ENGINE = MySQL('h:3306', 'd', 't', 'u', '[HIDDEN]')")
    assert hides_secrets("CREATE TABLE d.t (x String) ENGINE = URL('http://u:[HIDDEN]@h/x.csv', CSV)")
    assert not hides_secrets("CREATE TABLE d.t (`[HIDDEN]` String) ENGINE = Memory")  # a column's name
    assert not hides_secrets("CREATE TABLE d.t (id UInt32) ENGINE = Memory -- '[HIDDEN]'")
    assert not hides_secrets(f"CREATE TABLE d.t {mysql_table(MYSQL_PASSWORD)}")


def test_it_sees_18_16_print_the_credentials_in_clear(
    clickhouse_server: ClickHouseServer, linked_db: str
) -> None:
    # What the server here does: no hiding (so the archive holds the password, like the catalog).
    statement = clickhouse_server.query(f"SHOW CREATE TABLE `{linked_db}`.orders")
    assert clickhouse_server.query("SELECT version()").startswith("18.16.")
    assert MYSQL_PASSWORD in statement and "[HIDDEN]" not in statement


def test_it_backs_up_a_table_whose_credentials_the_server_shows(
    clickhouse_server: ClickHouseServer, linked_db: str, tmp_path: Path
) -> None:
    data, _ = dump_bytes(clickhouse_server, linked_db, tmp_path)
    statements = [text for name, text in members(data).items() if name.startswith("schema/")]
    assert any(MYSQL_PASSWORD.encode() in text for text in statements)


def test_it_fails_a_backup_loudly_when_the_server_hid_a_credential(
    clickhouse_server: ClickHouseServer, linked_db: str, local_storage: Storage
) -> None:
    clickhouse_server.query(f"CREATE TABLE `{linked_db}`.mirror {mysql_table('[HIDDEN]')}")
    backup = services.run_backup(make_target(clickhouse_server, linked_db, local_storage))
    assert backup.status == BackupStatus.FAILED
    assert "the statement of mirror in database" in backup.error_message
    assert "holds '[HIDDEN]' where ClickHouse hid a credential" in backup.error_message
    assert "exclude_tables" in backup.error_message
    assert backup.copies.filter(status="stored").count() == 0  # nothing half-usable was kept

    # Leaving it out, as the message says, backs up the rest.
    target = make_target(clickhouse_server, linked_db, local_storage, exclude_tables=["mirror"])
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message


def test_it_refuses_to_restore_or_verify_an_archive_with_a_hidden_credential(
    clickhouse_server: ClickHouseServer, linked_db: str, tmp_path: Path
) -> None:
    data, _ = dump_bytes(clickhouse_server, linked_db, tmp_path)
    archive = members(data)
    (schema,) = [name for name in archive if name.startswith("schema/") and name.endswith("-orders.sql")]
    # What an older Backupsite stored from a 22.12+ server: the real dump, the password hidden.
    archive[schema] = archive[schema].replace(MYSQL_PASSWORD.encode(), b"[HIDDEN]")
    assert b"'[HIDDEN]'" in archive[schema]
    engine = get_engine("clickhouse")
    options = RestoreOptions(scratch_dir=tmp_path)
    destination = connection(clickhouse_server, unique_name("hidden_restore"))
    try:
        with pytest.raises(
            EngineError, match=r"the statement of orders in the backup of database .* '\[HIDDEN\]'"
        ):
            engine.restore(destination, io.BytesIO(rebuild(archive)), options)
        assert not clickhouse_server.database_exists(destination.database)  # nothing was changed
        with pytest.raises(EngineError, match=r"the statement of orders .* holds '\[HIDDEN\]'"):
            engine.trial_restore(io.BytesIO(rebuild(archive)), options)
    finally:
        engine.drop_database(destination)

    # The same archive with the password in clear restores, the MySQL table's statement intact.
    intact = members(data)
    try:
        result = engine.restore(destination, io.BytesIO(rebuild(intact)), options)
        assert sorted(result.tables) == ["events", "orders"]
        restored = clickhouse_server.query(f"SHOW CREATE TABLE `{destination.database}`.orders")
        assert MYSQL_PASSWORD in restored
    finally:
        engine.drop_database(destination)
