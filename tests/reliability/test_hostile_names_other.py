"""Fault suite case 10, hostile names, for Redis, SQLite and files: keys, tables, columns and paths
with a quote, a double quote, a backtick, a space, a newline, a leading dash, ``..``, a semicolon,
unicode and (where the system allows) bytes that are not UTF-8 are backed up and restored exactly
(PostgreSQL, MariaDB, ClickHouse: test_hostile_names_sql.py; names in the TOML file:
tests/test_config_fuzz.py, tests/test_hostile_config.py)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from backups import services
from backups.engines.base import Connection
from backups.engines.mongodb.engine import MongoDBEngine
from backups.engines.mongodb.settings import settings_for as mongodb_settings_for
from backups.models import BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import server_target, unique_name
from tests.engine_checks import ProcessWatch, runs
from tests.reliability.test_hostile_names_sql import EMOJI, HOSTILE, only_whole_arguments
from tests.servers.redis import RedisServer, contents, reset, running_redis

pytestmark = pytest.mark.django_db

#: A directory or file name of each hostile kind (a path part cannot be ".." itself: "..x", "x..").
PATH_NAMES = (*(name.replace("..", "..x") for name in HOSTILE), EMOJI, "x..", "-")
#: Bytes that are not UTF-8 (a Linux file name may hold any byte but "/" and NUL).
RAW_NAME = os.fsdecode(b"raw-\xff\xfe-\x01")


# -- Redis -------------------------------------------------------------------------------------------

REDIS_SOURCE_ENV = "TEST_HOSTILE_REDIS_PASSWORD"
REDIS_DESTINATION_ENV = "TEST_REDIS_DESTINATION_PASSWORD"
REDIS_KEYS = (
    *(name.encode() for name in (*HOSTILE, EMOJI)),
    b"\x00\xff\xfe binary\r\n",
    b"",
    b"*",
    b"-" * 3,
)


@pytest.fixture(scope="module")
def redis_hostile() -> Iterator[RedisServer]:
    """A server of its own (the shared source must not change) with every hostile key in every
    type, in databases 0 and 3."""
    with running_redis("-x 'pw' --help") as server:
        for db in (0, 3):
            with contextlib.closing(server.client(db)) as client:
                for index, key in enumerate(REDIS_KEYS):
                    client.set(key, key + b" value")
                    client.hset(b"hash:" + key, key, key)
                    client.rpush(b"list:" + key, key, b"-x")
                    client.sadd(b"set:" + key, key, b"--help")
                    client.zadd(b"zset:" + key, {key: index})
                    client.xadd(b"stream:" + key, {key or b"empty": key})
        yield server


def test_it_round_trips_redis_keys_with_hostile_names_and_bytes(
    redis_hostile: RedisServer,
    redis_destination: RedisServer,
    local_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REDIS_SOURCE_ENV, redis_hostile.password)
    monkeypatch.setenv(REDIS_DESTINATION_ENV, redis_destination.password)
    reset(redis_destination)
    source = server_target("redis", redis_hostile, REDIS_SOURCE_ENV, local_storage)
    destination = server_target("redis", redis_destination, REDIS_DESTINATION_ENV, local_storage)
    with ProcessWatch([], runs("redis-cli")) as watch:
        backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    only_whole_arguments(watch, ["--help", "-x"])  # the password is never an argument
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    expected = contents(redis_hostile, (0, 3))
    assert len(expected[0]) == len(expected[3]) == 6 * len(REDIS_KEYS)
    assert contents(redis_destination, (0, 3)) == expected


# -- SQLite ------------------------------------------------------------------------------------------


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_contents(path: Path) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        ]
        found = {}
        for table in tables:
            cursor = db.execute(f"SELECT * FROM {quoted(table)} ORDER BY 1")
            found[table] = ([column[0] for column in cursor.description], cursor.fetchall())
        return found


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    """A directory whose name holds a leading dash, quotes, a space, a line break and unicode."""
    directory = tmp_path / f'-x it\'s "q" `b` ..; zół {EMOJI}\nline'
    directory.mkdir()
    return directory


def sqlite_hostile(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for hostile in (*HOSTILE, EMOJI):
            db.execute(f"CREATE TABLE {quoted(hostile)} (id INTEGER PRIMARY KEY, {quoted(hostile)} TEXT)")
            db.executemany(
                f"INSERT INTO {quoted(hostile)} VALUES (?, ?)",
                [(1, hostile), (2, f"{hostile} 🚀 \x00")],
            )
    return path


@pytest.mark.parametrize("file_name", ["--help.sqlite3", '-x it\'s "q" ?#%20 ..;.db', "..x..", "db\nline"])
def test_it_round_trips_a_sqlite_file_with_a_hostile_path_and_table_names(
    file_name: str, hostile_dir: Path, local_storage: Storage
) -> None:
    source_path = sqlite_hostile(hostile_dir / file_name)
    # Written with a ".." part, through the hostile directory's own name.
    written = f"{hostile_dir}/../{hostile_dir.name}/{file_name}"
    source = Target.objects.create(
        name=unique_name("sqlite-src").replace("_", "-"), engine="sqlite", database=written
    )
    source.storages.add(local_storage)
    destination_path = hostile_dir / f"{file_name}-copy"
    sqlite_hostile(destination_path)  # holds the same tables already: replaced, kept aside
    with contextlib.closing(sqlite3.connect(destination_path)) as db, db:
        db.execute(f"DELETE FROM {quoted('--help')}")
    destination = Target.objects.create(
        name=unique_name("sqlite-copy").replace("_", "-"), engine="sqlite", database=str(destination_path)
    )
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sqlite_contents(destination_path) == sqlite_contents(source_path)
    assert len(sqlite_contents(destination_path)) == len(HOSTILE) + 1
    kept = [
        path for path in hostile_dir.iterdir() if path.name.startswith(f"{file_name}-copy.before-restore-")
    ]
    assert len(kept) == 1 and sqlite_contents(kept[0])["--help"][1] == []


def test_it_filters_sqlite_tables_with_hostile_names(hostile_dir: Path, local_storage: Storage) -> None:
    source_path = sqlite_hostile(hostile_dir / "-source.db")
    included = ["--help", "-x", "..", "line\nbreak", 'say "hi"', EMOJI]
    source = Target.objects.create(
        name="sqlite-filtered", engine="sqlite", database=str(source_path), include_tables=included
    )
    source.storages.add(local_storage)
    destination = Target.objects.create(
        name="sqlite-filtered-copy", engine="sqlite", database=str(hostile_dir / "-copy.db")
    )
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sorted(sqlite_contents(hostile_dir / "-copy.db")) == sorted(included)

    source.include_tables, source.exclude_tables = [], included
    source.save()
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sorted(sqlite_contents(hostile_dir / "-copy.db")) == sorted(set((*HOSTILE, EMOJI)) - set(included))


# -- files -------------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry under ``root`` (names as the bytes the filesystem holds)."""
    entries: dict[str, tuple[str, object]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = os.fsencode(path.relative_to(root)).hex()
            if path.is_symlink():
                entries[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[relative] = ("dir", None)
            else:
                entries[relative] = ("file", path.read_bytes())
    return entries


@pytest.fixture
def files_hostile(hostile_dir: Path) -> Path:
    root = hostile_dir / "--help root"
    for name in (*PATH_NAMES, RAW_NAME):
        sub = root / name
        sub.mkdir(parents=True)
        for inner in (*PATH_NAMES, RAW_NAME):
            (sub / inner).write_bytes(os.fsencode(inner) + b"\n")
        (sub / "link -x").symlink_to(f"../{name}/{PATH_NAMES[0]}")
    return root


@pytest.mark.parametrize("backup_type", ["full", "incremental"])
def test_it_round_trips_a_file_tree_with_hostile_names(
    backup_type: str, files_hostile: Path, hostile_dir: Path, local_storage: Storage
) -> None:
    source = Target.objects.create(name="files-hostile", engine="files", paths=[str(files_hostile)])
    source.storages.add(local_storage)
    backup = services.run_backup(source, backup_type="full")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    if backup_type == "incremental":
        (files_hostile / "-x" / "--help").write_bytes(b"changed\n")
        (files_hostile / "a;b" / "..x").unlink()
        (files_hostile / RAW_NAME / f"{RAW_NAME} new").write_bytes(b"new\n")
        backup = services.run_backup(source, backup_type="incremental")
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
    copy = hostile_dir / "-copy ..; it's"
    destination = Target.objects.create(name="files-hostile-copy", engine="files", paths=[str(copy)])
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert tree(copy) == tree(files_hostile)
    assert len(tree(copy)) > len(PATH_NAMES) ** 2


def test_it_applies_file_globs_that_start_with_a_dash(
    files_hostile: Path, hostile_dir: Path, local_storage: Storage
) -> None:
    source = Target.objects.create(
        name="files-globs", engine="files", paths=[str(files_hostile)], options={"exclude": ["--help", "-x*"]}
    )
    source.storages.add(local_storage)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    copy = hostile_dir / "-globbed"
    destination = Target.objects.create(name="files-globs-copy", engine="files", paths=[str(copy)])
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    names = {path.name for path in copy.rglob("*")}
    assert "--help" not in names and not any(name.startswith("-x") for name in names)
    assert "it's" in names and "-" in names and RAW_NAME in names


# -- MongoDB (no server here) and the TOML file -------------------------------------------------------


@pytest.mark.parametrize("database", ["--help", "-x;zażółć", "it's`🚀"])
def test_it_keeps_mongodb_names_inside_their_own_tool_options(database: str, tmp_path: Path) -> None:
    """No mongod can be installed here (tests/servers/mongodb.py says why; the round trips in
    tests/test_engine_mongodb.py skip): the argument lists the engine hands mongodump and
    mongorestore are checked instead, and the names MongoDB forbids are refused by field."""
    engine = MongoDBEngine()
    connection = Connection(
        name="m", engine="mongodb", host="127.0.0.1", database=database, exclude_tables=("--help", "-x y")
    )
    assert engine.validate(connection) == []
    settings = mongodb_settings_for(connection)
    dump = engine.dump_argv(tmp_path / "c.yaml", settings, connection)
    restore = engine.restore_argv(tmp_path / "c.yaml", settings, "-source")
    for argv in (dump, restore):
        loose = [a for a in argv[1:] if a not in ("--archive", "--stopOnError", "--drop") and "=" not in a]
        assert not loose, argv  # every name is glued to its option: --db=--help
    assert f"--db={database}" in dump and "--excludeCollection=--help" in dump
    for name in ("a b", 'say "hi"', "..", "a/b"):
        problems = engine.validate(Connection(name="m", engine="mongodb", host="127.0.0.1", database=name))
        assert [field for field, _ in problems] == ["database"], problems


def test_it_takes_hostile_names_from_the_toml_file_as_data_and_refuses_them_as_names(tmp_path: Path) -> None:
    """Target and storage names are refused by key (generated ones: tests/test_config_fuzz.py);
    a database and table names are data, written to the target exactly as the file has them."""
    from backups.config.loader import ConfigInvalid, apply, load
    from tests.config_builder import write_config

    database = '--help it\'s "q" `b` ..;\nzażółć 🚀'
    tables = ["public.-x", "public...", "public.a;b"]
    target = {"engine": "postgresql", "host": "127.0.0.1", "user": "u", "database": database}
    good = write_config(
        tmp_path / "good.toml",
        storage_dir=tmp_path / "s",
        targets={"app": {**target, "include_tables": tables}},
    )
    apply(load(good), probe=False)
    assert Target.objects.get(name="app").database == database
    assert Target.objects.get(name="app").include_tables == tables

    bad_names = ["-x", "--help", "it's", "a b", "..", "a;b", "zażółć", "line\nbreak"]
    bad = write_config(
        tmp_path / "bad.toml",
        storage_dir=tmp_path / "s",
        storages={name: {"kind": "local", "path": str(tmp_path / "t")} for name in bad_names},
        targets={name: target for name in bad_names},
    )
    with pytest.raises(ConfigInvalid) as refused:
        apply(load(bad), probe=False)
    for section in ("storages", "targets"):
        for name in bad_names:
            assert any(e.startswith(f"{section}.{name}: invalid name") for e in refused.value.errors), name
