"""Fault suite case 10, hostile names, for the SQL servers (PostgreSQL, MariaDB, ClickHouse):
databases, schemas, tables and columns named with a quote, a double quote, a backtick, a space,
a newline, a leading dash, ``..``, a semicolon and unicode are backed up and restored exactly,
and a name given to an engine option (database, include/exclude tables) never reaches a tool as
an option of its own (Redis, SQLite and files: test_hostile_names_other.py; names in the TOML
file: tests/test_config_fuzz.py and tests/test_hostile_config.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from backups import services
from backups.models import BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import PG_PASSWORD_ENV, server_target, unique_name
from tests.engine_checks import ProcessWatch, runs
from tests.servers.clickhouse import ClickHouseServer
from tests.servers.mariadb import MariaDBServer, quote_name
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.django_db

#: One of each kind of hostile name; every engine below makes a table (and a column) of each.
HOSTILE = ("it's", 'say "hi"', "back`tick", "two words", "line\nbreak", "-x", "--help", "..", "a;b", "zażółć")
EMOJI = "🚀 rocket"
MARIADB_PASSWORD_ENV = "TEST_MARIADB_PASSWORD"
CLICKHOUSE_PASSWORD_ENV = "TEST_CLICKHOUSE_PASSWORD"


def database_name(tag: str) -> str:
    """A database name with a leading dash and every other hostile character (PostgreSQL and
    MariaDB allow 63 and 64 characters: kept short)."""
    return f"--{tag} 'q\"`..;\nż{unique_name('')[1:]}"


def only_whole_arguments(watch: ProcessWatch, names: list[str]) -> list[list[bytes]]:
    """The tools' argument lists seen by ``watch``, after checking that none of ``names`` (or any
    argument starting with one of them) stands alone as an argument, where a tool would read it
    as an option."""
    argvs = [line.rstrip(b"\0").split(b"\0") for line in watch.seen]
    assert argvs, "no tool was seen running"
    for argv in argvs:
        loose = [arg for arg in argv[1:] for name in names if arg.startswith(name.encode())]
        assert not loose, (loose, argv)
    return argvs


# -- PostgreSQL ---------------------------------------------------------------------------------------


def pg_contents(server: PostgresServer, database: str) -> dict[tuple[str, str], Any]:
    """Every user table: its columns and its rows in order."""
    with contextlib.closing(server.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        contents: dict[tuple[str, str], Any] = {}
        for schema, table in cur.fetchall():
            name = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            cur.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(name))
            columns = [column.name for column in cur.description or []]
            contents[schema, table] = (columns, cur.fetchall())
        return contents


@pytest.fixture
def pg_hostile(pg_server: PostgresServer) -> Iterator[str]:
    """A database with a hostile name holding a table per hostile name (its column too) in
    ``public``, and one in a schema whose name holds dots, a quote and a space."""
    database = database_name("help")
    pg_server.create_database(database.replace('"', '""'))
    with contextlib.closing(pg_server.connect(database)) as conn, conn.cursor() as cur:
        for index, hostile in enumerate((*HOSTILE, EMOJI, "-x..; it's")):
            schema = "s.. it's" if index == len(HOSTILE) + 1 else "public"
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(hostile))
            cur.execute(
                sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {} text)").format(
                    table, sql.Identifier(hostile)
                )
            )
            cur.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s), (%s, %s)").format(table),
                (1, hostile, 2, f"{hostile}\\ 🚀 \x01"),
            )
    yield database
    pg_server.drop_database(database.replace('"', '""'))
    pg_server.drop_database(restored_name(database).replace('"', '""'))


def restored_name(database: str) -> str:
    return "-" + database[2:].replace("help", "copy", 1)


def pg_targets(
    server: PostgresServer, storage: Storage, database: str, **fields: Any
) -> tuple[Target, Target]:
    source = server_target(
        "postgresql",
        server,
        PG_PASSWORD_ENV,
        storage,
        name=unique_name("pg-src").replace("_", "-"),
        database=database,
        **fields,
    )
    copy = server_target(
        "postgresql",
        server,
        PG_PASSWORD_ENV,
        storage,
        name=unique_name("pg-copy").replace("_", "-"),
        database=restored_name(database),
    )
    return source, copy


def test_it_round_trips_postgresql_tables_and_a_database_with_hostile_names(
    pg_server: PostgresServer, local_storage: Storage, pg_hostile: str
) -> None:
    source, copy = pg_targets(pg_server, local_storage, pg_hostile)
    with ProcessWatch([], runs("pg_dump", "pg_restore")) as watch:
        backup = services.run_backup(source)
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        log = restore_backup(backup, copy, initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert pg_contents(pg_server, copy.database) == pg_contents(pg_server, pg_hostile)
    assert len(pg_contents(pg_server, copy.database)) == len(HOSTILE) + 2
    assert backup.engine_info["row_counts"]["s.. it's.-x..; it's"] == 2
    argvs = only_whole_arguments(watch, ["--help", "-x", "-copy"])
    assert {a for argv in argvs for a in argv if a.startswith(b"--dbname")} == {
        b"--dbname=" + copy.database.encode()
    }

    # Into the same database again (the restore drops and re-creates each table).
    log = restore_backup(backup, source, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert pg_contents(pg_server, copy.database) == pg_contents(pg_server, pg_hostile)


def test_it_passes_postgresql_table_filters_with_hostile_names_as_exact_patterns(
    pg_server: PostgresServer, local_storage: Storage, pg_hostile: str
) -> None:
    included = [
        "public.--help",
        "public.-x",
        "public...",
        'public.say "hi"',
        "public.line\nbreak",
        "s.. it's.-x..; it's",  # a schema whose own name holds dots
    ]
    source, copy = pg_targets(
        pg_server, local_storage, pg_hostile, include_tables=included, exclude_tables=[]
    )
    with ProcessWatch([], runs("pg_dump")) as watch:
        backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert sorted(backup.tables_included) == sorted(included)
    argvs = only_whole_arguments(watch, ["--help", "-x"])
    assert b'--table="public"."--help"' in argvs[0]
    # pg_dump --table leaves out CREATE SCHEMA (whatever the names): the destination has it.
    pg_server.create_database(copy.database.replace('"', '""'))
    pg_server.execute(copy.database, 'CREATE SCHEMA "s.. it\'s"')
    log = restore_backup(backup, copy, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    restored = pg_contents(pg_server, copy.database)
    assert sorted(f"{schema}.{table}" for schema, table in restored) == sorted(included)

    excluded = [name for name in included if name != "public.--help"]
    source.include_tables, source.exclude_tables = [], excluded
    source.save()
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert "public.--help" in backup.tables_included
    assert not set(excluded) & set(backup.tables_included)


# -- MariaDB / MySQL ----------------------------------------------------------------------------------


@pytest.fixture
def mariadb_hostile(mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database with a hostile name holding a table per hostile name, its column named alike."""
    monkeypatch.setenv(MARIADB_PASSWORD_ENV, mariadb_server.password)
    database = mariadb_server.create_database(database_name("help"))
    for hostile in HOSTILE:
        table = quote_name(hostile)
        mariadb_server.execute(
            database, f"CREATE TABLE {table} (id INT PRIMARY KEY, {table} TEXT) ENGINE = InnoDB"
        )
        mariadb_server.execute(
            database,
            f"INSERT INTO {table} VALUES (1, %s), (2, %s)",
            (hostile, f"{hostile}\\ 🚀 \x01"),
        )
    yield database
    mariadb_server.drop_database(database)
    mariadb_server.drop_database(restored_name(database))


def mariadb_contents(server: MariaDBServer, database: str) -> dict[str, Any]:
    tables = server.execute(
        None,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY 1",
        (database,),
    )
    contents: dict[str, Any] = {}
    for (table,) in tables:
        columns = server.execute(
            None,
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        rows = server.execute(database, f"SELECT * FROM {quote_name(table)} ORDER BY 1")
        contents[table] = (columns, rows)
    return contents


@pytest.mark.parametrize("key", ["mariadb", "mysql"])
def test_it_round_trips_mariadb_tables_and_a_database_with_hostile_names(
    key: str, mariadb_server: MariaDBServer, local_storage: Storage, mariadb_hostile: str
) -> None:
    tools = ("mariadb-dump", "mariadb") if key == "mariadb" else ("mysqldump", "mysql")
    source = mariadb_target(key, mariadb_server, local_storage, mariadb_hostile)
    copy = mariadb_target(key, mariadb_server, local_storage, restored_name(mariadb_hostile))
    with ProcessWatch([], runs(*tools)) as watch:
        backup = services.run_backup(source)
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        log = restore_backup(backup, copy, initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert mariadb_contents(mariadb_server, copy.database) == mariadb_contents(
        mariadb_server, mariadb_hostile
    )
    assert len(mariadb_contents(mariadb_server, copy.database)) == len(HOSTILE)
    argvs = only_whole_arguments(watch, ["-x", "-copy"])
    dump_argv = next(argv for argv in argvs if argv[0].endswith(tools[0].encode()) and b"--" in argv)
    assert dump_argv[dump_argv.index(b"--") + 1] == mariadb_hostile.encode()

    log = restore_backup(backup, source, initiated_by="test")  # over itself
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert mariadb_contents(mariadb_server, copy.database) == mariadb_contents(
        mariadb_server, mariadb_hostile
    )


def test_it_passes_mariadb_table_filters_with_hostile_names_after_the_end_of_options(
    mariadb_server: MariaDBServer, local_storage: Storage, mariadb_hostile: str
) -> None:
    included = ["--help", "-x", "..", "line\nbreak", "back`tick"]
    source = mariadb_target(
        "mariadb", mariadb_server, local_storage, mariadb_hostile, include_tables=included
    )
    with ProcessWatch([], runs("mariadb-dump")) as watch:
        backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert sorted(backup.tables_included) == sorted(included)
    argv = next(argv for argv in only_whole_arguments(watch, []) if b"--" in argv)
    assert argv[argv.index(b"--") + 1 :] == [mariadb_hostile.encode(), *(n.encode() for n in included)]
    copy = mariadb_target("mariadb", mariadb_server, local_storage, restored_name(mariadb_hostile))
    log = restore_backup(backup, copy, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sorted(mariadb_contents(mariadb_server, copy.database)) == sorted(included)

    source.include_tables, source.exclude_tables = [], included
    source.save()
    with ProcessWatch([], runs("mariadb-dump")) as watch:
        backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert sorted(backup.tables_included) == sorted(set(HOSTILE) - set(included))
    argv = next(argv for argv in only_whole_arguments(watch, ["-x"]) if b"--" in argv)
    assert f"--ignore-table={mariadb_hostile}.--help".encode() in argv


def test_it_refuses_a_mariadb_name_the_server_cannot_hold_naming_the_field(
    mariadb_server: MariaDBServer, local_storage: Storage, mariadb_hostile: str
) -> None:
    import MySQLdb  # type: ignore[import-untyped]

    # The evidence: MariaDB names hold only the Basic Multilingual Plane (no emoji).
    with pytest.raises(MySQLdb.OperationalError, match="Invalid utf8mb4 character string"):
        mariadb_server.execute(mariadb_hostile, f"CREATE TABLE {quote_name(EMOJI)} (id INT)")
    for field, target in (
        ("database", mariadb_target("mariadb", mariadb_server, local_storage, EMOJI)),
        (
            "include_tables",
            mariadb_target("mariadb", mariadb_server, local_storage, mariadb_hostile, include_tables=[EMOJI]),
        ),
    ):
        backup = services.run_backup(target)
        assert backup.status == BackupStatus.FAILED
        assert f"{field}: {EMOJI!r} is not a valid MySQL name" in backup.error_message, backup.error_message


def mariadb_target(key: str, server: MariaDBServer, storage: Storage, database: str, **fields: Any) -> Target:
    name = unique_name(f"{key}-hostile").replace("_", "-")
    return server_target(key, server, MARIADB_PASSWORD_ENV, storage, name=name, database=database, **fields)


# -- ClickHouse ---------------------------------------------------------------------------------------


def ch_name(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def ch_string(value: str) -> str:
    # A raw line break ends an INSERT's data in clickhouse-client: escaped.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def ch_contents(server: ClickHouseServer, database: str) -> dict[str, str]:
    """Every table's and view's statement (its database's name taken out) and rows, as TSV."""
    listing = server.query(
        f"SELECT name FROM system.tables WHERE database = {ch_string(database)} ORDER BY name FORMAT JSONEachRow"
    )
    names = [json.loads(line)["name"] for line in listing.splitlines()]
    return {
        name: server.query(f"SELECT * FROM {ch_name(database)}.{ch_name(name)} ORDER BY tuple(*) FORMAT TSV")
        for name in names
    }


@pytest.fixture
def clickhouse_hostile(clickhouse_server: ClickHouseServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database with a hostile name holding a MergeTree table per hostile name (and the emoji),
    its column named alike, and a view reading one of them."""
    monkeypatch.setenv(CLICKHOUSE_PASSWORD_ENV, clickhouse_server.password)
    database = database_name("help") + f" {EMOJI}"
    db = ch_name(database)
    statements = [f"CREATE DATABASE {db}"]
    for hostile in (*HOSTILE, EMOJI):
        table = f"{db}.{ch_name(hostile)}"
        statements.append(
            f"CREATE TABLE {table} (id UInt32, {ch_name(hostile)} String) ENGINE = MergeTree ORDER BY id"
        )
        statements.append(
            f"INSERT INTO {table} VALUES (1, {ch_string(hostile)}), (2, {ch_string(hostile + ' 🚀')})"
        )
    statements.append(f"CREATE VIEW {db}.{ch_name('view -x..;')} AS SELECT * FROM {db}.{ch_name('--help')}")
    clickhouse_server.query(";\n".join(statements))
    yield database
    clickhouse_server.query(
        f"DROP DATABASE IF EXISTS {db}; DROP DATABASE IF EXISTS {ch_name(restored_name(database))}"
    )


def clickhouse_target(server: ClickHouseServer, storage: Storage, database: str, **fields: Any) -> Target:
    name = unique_name("ch-hostile").replace("_", "-")
    return server_target(
        "clickhouse", server, CLICKHOUSE_PASSWORD_ENV, storage, name=name, database=database, **fields
    )


def test_it_round_trips_clickhouse_tables_and_a_database_with_hostile_names(
    clickhouse_server: ClickHouseServer, local_storage: Storage, clickhouse_hostile: str
) -> None:
    source = clickhouse_target(clickhouse_server, local_storage, clickhouse_hostile)
    copy = clickhouse_target(clickhouse_server, local_storage, restored_name(clickhouse_hostile))
    with ProcessWatch([], runs("clickhouse-client")) as watch:
        backup = services.run_backup(source)
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        log = restore_backup(backup, copy, initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
    original = ch_contents(clickhouse_server, clickhouse_hostile)
    assert ch_contents(clickhouse_server, copy.database) == original
    assert len(original) == len(HOSTILE) + 2 and all(original.values())
    only_whole_arguments(watch, ["-x", "-copy", "--help"])
    statement = clickhouse_server.query(
        f"SHOW CREATE TABLE {ch_name(copy.database)}.{ch_name('view -x..;')} FORMAT TSVRaw"
    )
    # The view reads the copy (ClickHouse prints the name escaped: no raw line break).
    assert statement.count("`-copy 'q") == 2 and "`--help 'q" not in statement, statement


def test_it_filters_clickhouse_tables_with_hostile_names(
    clickhouse_server: ClickHouseServer, local_storage: Storage, clickhouse_hostile: str
) -> None:
    included = ["--help", "-x", "..", "line\nbreak", "back`tick", EMOJI]
    source = clickhouse_target(clickhouse_server, local_storage, clickhouse_hostile, include_tables=included)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert sorted(backup.tables_included) == sorted(included)
    source.include_tables, source.exclude_tables = [], included
    source.save()
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert not set(included) & set(backup.tables_included)
    assert "it's" in backup.tables_included
