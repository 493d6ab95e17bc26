"""The ClickHouse engine against a real clickhouse-server (Debian's 18.16) started by the suite."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backups import services
from backups.engines import get_engine
from backups.engines.base import Connection, DumpOptions, EngineError, RestoreOptions
from backups.engines.clickhouse.engine import ClickHouseEngine
from backups.models import Backup, BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import server_target, unique_name
from tests.engine_checks import ProcessWatch, assert_missing_tools_fail, children_named
from tests.servers import free_port, silent_listener
from tests.servers.clickhouse import ClickHouseServer
from tests.servers.mariadb import make_certificates

pytestmark = pytest.mark.django_db

PASSWORD_ENV = "TEST_CLICKHOUSE_PASSWORD"


@pytest.fixture(autouse=True)
def _password_reference(clickhouse_server: ClickHouseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, clickhouse_server.password)


def make_target(
    server: ClickHouseServer, database: str, storage: Storage | None = None, **fields: Any
) -> Target:
    """A Target on ``server`` whose password is the reference ${TEST_CLICKHOUSE_PASSWORD}."""
    return server_target(
        "clickhouse", server, PASSWORD_ENV, storage, prefix="ch", database=database, **fields
    )


def connection(server: ClickHouseServer, database: str, **fields: Any) -> Connection:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        **fields,
    }
    return Connection(name="t", engine="clickhouse", database=database, **values)


# -- a database with the column types people use -----------------------------------------------------


def fill_sample(server: ClickHouseServer, database: str, rows: int = 500) -> str:
    """MergeTree tables with many column types, a view reading a view, a materialized view.

    Every table is merged to one part per partition (OPTIMIZE FINAL), so no background merge
    changes its parts later and the dump's row counts are exact."""
    db = f"`{database}`"
    server.query(
        f"""
        CREATE DATABASE {db};
        CREATE TABLE {db}.events (
            id UInt64, i8 Int8, i16 Int16, i32 Int32, i64 Int64, u8 UInt8, u16 UInt16, u32 UInt32,
            f Float64, price Decimal(18, 4), s String, code FixedString(4), day Date, at DateTime,
            note Nullable(String), tags Array(String), kind Enum8('click' = 1, 'view' = 2),
            channel LowCardinality(String)
        ) ENGINE = MergeTree() PARTITION BY toYYYYMM(day) ORDER BY id;
        CREATE TABLE {db}.people (id UInt32, name String, born Date) ENGINE = MergeTree ORDER BY id;
        CREATE TABLE {db}.shapes (
            id UInt64, pair Tuple(UInt8, String), uid UUID, maybe Array(Nullable(Int32)),
            nested Array(Array(String)), labels Array(LowCardinality(String)), big Decimal(38, 10),
            ratio Float32, level Enum16('low' = -1000, 'high' = 1000), local DateTime('Europe/Moscow'),
            point Nested(x Int16, y Nullable(FixedString(2)))
        ) ENGINE = MergeTree ORDER BY id;
        CREATE MATERIALIZED VIEW {db}.by_view ENGINE = MergeTree ORDER BY id
            AS SELECT id, s FROM {db}.events WHERE kind = 'view';
        INSERT INTO {db}.events SELECT
            number, toInt8(number % 256 - 128), toInt16(-number), toInt32(number * 7), -toInt64(number * number),
            toUInt8(number % 256), toUInt16(number), toUInt32(number * 3), number / 7,
            toDecimal64(number / 8, 4),
            concat('persön ', toString(number), ' 🚀 ', unhex('00FF27'), '\\t\\n\\\\ end'),
            toFixedString(substring(hex(number), 1, 4), 4),
            toDate('2024-01-01') + number % 90, toDateTime('2024-02-29 12:00:00') + number * 61,
            if(number % 3 = 0, NULL, concat('nöte ', toString(number))),
            arrayMap(x -> concat('tag', toString(x)), range(number % 4)),
            if(number % 2 = 0, 'click', 'view'), concat('channel ', toString(number % 5))
        FROM system.numbers LIMIT {rows};
        INSERT INTO {db}.people SELECT number, concat('Pérson ', toString(number)), toDate('1970-01-01') + number
        FROM system.numbers LIMIT {rows // 5};
        INSERT INTO {db}.shapes SELECT
            number, (toUInt8(number % 200), toString(number)), generateUUIDv4(),
            [if(number % 2 = 0, NULL, toInt32(number)), 1], [[toString(number)], [], ['a', 'b']],
            [toString(number % 3), 'x'], toDecimal128(number / 3, 10), number / 9,
            if(number % 2 = 0, 'low', 'high'), toDateTime('2024-03-31 01:30:00') + number * 600,
            [toInt16(number), -1], [if(number % 3 = 0, NULL, 'ab'), 'cd']
        FROM system.numbers LIMIT {rows // 10};
        CREATE VIEW {db}.recent AS SELECT id, s, kind FROM {db}.events WHERE id >= {rows - 50};
        CREATE VIEW {db}.recent_views AS SELECT id FROM {db}.recent WHERE kind = 'view';
        OPTIMIZE TABLE {db}.events FINAL;
        OPTIMIZE TABLE {db}.people FINAL;
        OPTIMIZE TABLE {db}.shapes FINAL;
        OPTIMIZE TABLE {db}.`.inner.by_view` FINAL;
        """
    )
    return database


def table_rows(server: ClickHouseServer, database: str) -> dict[str, str]:
    """Every table's, materialized view's and view's rows (TabSeparated, ordered by id)."""
    names = [name for name in server.tables(database) if not name.startswith(".inner.")]
    return {name: server.query(f"SELECT * FROM `{database}`.`{name}` ORDER BY id") for name in names}


def schema(server: ClickHouseServer, database: str) -> dict[str, str]:
    """Every object's statement with its database's name taken out (to compare two databases)."""
    return {
        name: server.query(f"SHOW CREATE TABLE `{database}`.`{name}`").replace(f"{database}.", "DB.")
        for name in server.tables(database)
    }


def clickhouse_contract_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Target, Target, Callable[[], None]]:
    """The entry for ``CASES`` in tests/test_engine_contract.py: a small varied source database
    and a destination database that the restore creates."""
    server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
    storage: Storage = request.getfixturevalue("local_storage")
    request.getfixturevalue("monkeypatch").setenv(PASSWORD_ENV, server.password)
    source_db = fill_sample(server, unique_name("contract_ch"), rows=200)
    destination_db = unique_name("contract_ch_restored")

    def drop() -> None:
        server.drop_database(source_db)
        server.drop_database(destination_db)

    request.addfinalizer(drop)
    source = make_target(server, source_db, storage)
    destination = make_target(server, destination_db, storage)

    def compare() -> None:
        original = table_rows(server, source_db)
        assert original["events"] and original["by_view"] and original["recent_views"]
        assert table_rows(server, destination_db) == original
        assert schema(server, destination_db) == schema(server, source_db)

    return source, destination, compare


@pytest.fixture
def sample_db(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    name = fill_sample(clickhouse_server, unique_name("sample"))
    yield name
    clickhouse_server.drop_database(name)


def dump_bytes(server: ClickHouseServer, database: str, tmp_path: Path, **options: Any) -> tuple[bytes, dict]:
    with get_engine("clickhouse").dump(
        connection(server, database, options=options), DumpOptions(scratch_dir=tmp_path)
    ) as dump:
        data = dump.stream.read()
    return data, dump.info


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def rebuild(data: dict[str, bytes]) -> bytes:
    """A tar stream of ``data``'s members, in its order (to make damaged archives)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content in data.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


# -- the whole path ------------------------------------------------------------------------------------


def test_it_backs_up_verifies_and_restores_into_a_new_database(
    clickhouse_server: ClickHouseServer, sample_db: str, local_storage: Storage
) -> None:
    source = make_target(clickhouse_server, sample_db, local_storage)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.file_path.endswith(".tar.gz")
    info = backup.engine_info
    assert info["server_version"] == "18.16.1"
    assert info["tables"] == ["events", "people", "shapes"]
    assert info["views"] == ["by_view", "recent", "recent_views"]  # dependency order: recent first
    assert info["row_counts"] == {"events": 500, "people": 100, "shapes": 50, "by_view": 250}
    assert info["row_counts_exact"] is True

    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages
    assert "4 exact row count(s) match" in outcome.messages[0]

    destination_db = unique_name("sample_restored")
    destination = make_target(clickhouse_server, destination_db)
    try:
        log = restore_backup(backup, destination, initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert log.tables_restored == ["events", "people", "shapes", "by_view", "recent", "recent_views"]
        assert "4 exact row count(s) match the backup" in log.notes
        assert table_rows(clickhouse_server, destination_db) == table_rows(clickhouse_server, sample_db)
        assert schema(clickhouse_server, destination_db) == schema(clickhouse_server, sample_db)
        # The restored materialized view is live: it gets the new rows of its restored source.
        clickhouse_server.query(
            f"INSERT INTO `{destination_db}`.events (id, kind, day) VALUES (100000, 'view', '2024-01-01')"
        )
        assert clickhouse_server.query(f"SELECT count() FROM `{destination_db}`.by_view").strip() == "251"
    finally:
        clickhouse_server.drop_database(destination_db)


def test_it_splits_big_tables_into_parts_that_restore_by_hand(
    clickhouse_server: ClickHouseServer, local_storage: Storage, storage_dir: Path, tmp_path: Path
) -> None:
    database = fill_sample(clickhouse_server, unique_name("parts"), rows=3000)
    try:
        target = make_target(clickhouse_server, database, local_storage, options={"part_size": 8192})
        backup = services.run_backup(target, compression="none")
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        original_rows, original_schema = (
            table_rows(clickhouse_server, database),
            schema(clickhouse_server, database),
        )
        archive = members((storage_dir / backup.file_path).read_bytes())
        names = list(archive)
        assert names[0] == "archive.json" and names[-1] == "complete.json"
        parts = [name for name in names if name.startswith("data/events/")]
        assert len(parts) > 10
        assert parts == [f"data/events/{n:06d}.native" for n in range(1, len(parts) + 1)]
        assert all(len(archive[name]) == 8192 for name in parts[:-1])
        assert "data/%2Einner.by_view/000001.native" in names
        description = json.loads(archive["archive.json"])
        assert [(t["name"], t["kind"]) for t in description["tables"]] == [
            ("events", "table"),
            ("people", "table"),
            ("shapes", "table"),
            ("by_view", "materialized_view"),
            ("recent", "view"),
            ("recent_views", "view"),
        ]
        assert json.loads(archive["complete.json"])["row_counts"]["events"] == 3000
        manifest = json.loads((storage_dir / (backup.file_path + ".manifest.json")).read_text())
        assert "FORMAT Native" in manifest["restore_by_hand"]
        assert manifest["restore_by_hand"].startswith(f"mkdir restore && cat {Path(backup.file_path).name} |")

        # By hand, with tar and clickhouse-client only: tables, their data, views, views' data.
        clickhouse_server.drop_database(database)
        unpacked = tmp_path / "unpacked"
        unpacked.mkdir()
        subprocess.run(["tar", "-xf", str(storage_dir / backup.file_path), "-C", str(unpacked)], check=True)
        client = " ".join(f"'{arg}'" for arg in clickhouse_server.client())
        clickhouse_server.query(f"CREATE DATABASE `{database}`")
        for entry in description["tables"]:
            if entry["kind"] == "table":
                subprocess.run(
                    f"{client} --allow_experimental_low_cardinality_type=1 --multiquery < {entry['schema']}",
                    shell=True, check=True, cwd=unpacked,
                )  # fmt: skip
        for entry in description["tables"]:
            if entry["kind"] != "table":
                subprocess.run(
                    f"{client} --multiquery < {entry['schema']}", shell=True, check=True, cwd=unpacked
                )
            if entry["data"]:
                insert = f"INSERT INTO `{database}`.`{entry['data_table']}` FORMAT Native"
                subprocess.run(
                    f"cat {entry['data']}/*.native | {client} --query '{insert}'",
                    shell=True,
                    check=True,
                    cwd=unpacked,
                )
        assert table_rows(clickhouse_server, database) == original_rows
        assert schema(clickhouse_server, database) == original_schema
    finally:
        clickhouse_server.drop_database(database)


def test_it_deep_verifies_by_restoring_into_a_scratch_database_on_the_sandbox(
    clickhouse_server: ClickHouseServer, sample_db: str, local_storage: Storage
) -> None:
    backup = services.run_backup(make_target(clickhouse_server, sample_db, local_storage))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    outcome = services.verify_backup(backup, deep=True, sandbox=make_target(clickhouse_server, "unused"))
    assert outcome.ok, outcome.messages
    assert "restored into scratch database backupsite_verify_" in outcome.messages[0]
    assert "4 table(s), 900 row(s), row counts match the backup" in outcome.messages[0]
    leftovers = clickhouse_server.query(
        "SELECT name FROM system.databases WHERE name LIKE 'backupsite_verify_%'"
    )
    assert leftovers == ""


def test_it_backs_up_only_the_tables_asked_for(
    clickhouse_server: ClickHouseServer, sample_db: str, local_storage: Storage
) -> None:
    only = services.run_backup(
        make_target(clickhouse_server, sample_db, local_storage, include_tables=["people"])
    )
    assert only.status == BackupStatus.SUCCESS, only.error_message
    assert (only.engine_info["tables"], only.engine_info["views"]) == (["people"], [])
    but = services.run_backup(
        make_target(clickhouse_server, sample_db, local_storage, exclude_tables=["recent_views", "by_view"])
    )
    assert but.status == BackupStatus.SUCCESS, but.error_message
    assert but.engine_info["tables"] == ["events", "people", "shapes"]
    assert but.engine_info["views"] == ["recent"]
    unknown = services.run_backup(
        make_target(clickhouse_server, sample_db, local_storage, include_tables=["nope"])
    )
    assert unknown.status == BackupStatus.FAILED
    assert f"table(s) not found in database {sample_db}: nope" in unknown.error_message


def test_it_counts_rows_approximately_for_tables_without_parts(
    clickhouse_server: ClickHouseServer, tmp_path: Path
) -> None:
    database = fill_sample(clickhouse_server, unique_name("log"), rows=50)
    clickhouse_server.query(
        f"CREATE TABLE `{database}`.notes (id UInt8) ENGINE = Log; INSERT INTO `{database}`.notes VALUES (1)"
    )
    try:
        data, info = dump_bytes(clickhouse_server, database, tmp_path)
        assert info["row_counts"]["notes"] == 1
        assert info["row_counts_exact"] is False and "notes" in info["row_counts_note"]
        assert json.loads(members(data)["complete.json"])["exact"] == [
            "events",
            "people",
            "shapes",
            "by_view",
        ]
        assert get_engine("clickhouse").fingerprint(connection(clickhouse_server, database)) is None
    finally:
        clickhouse_server.drop_database(database)


# -- restores that must not happen, or fail -----------------------------------------------------------


def test_it_refuses_to_restore_onto_existing_tables_and_changes_nothing(
    clickhouse_server: ClickHouseServer, sample_db: str, local_storage: Storage
) -> None:
    backup = services.run_backup(make_target(clickhouse_server, sample_db, local_storage))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    destination_db = clickhouse_server.create_database(unique_name("occupied"))
    clickhouse_server.query(
        f"CREATE TABLE `{destination_db}`.people (id UInt8) ENGINE = Log; INSERT INTO `{destination_db}`.people VALUES (7)"
    )
    try:
        before = (clickhouse_server.tables(destination_db), table_rows(clickhouse_server, destination_db))
        log = restore_backup(backup, make_target(clickhouse_server, destination_db))
        assert log.status == RestoreStatus.FAILED
        assert (
            "already has table(s) or view(s) of the backup: people; nothing was changed" in log.error_message
        )
        assert "replace_existing" in log.error_message
        assert (
            clickhouse_server.tables(destination_db),
            table_rows(clickhouse_server, destination_db),
        ) == before
    finally:
        clickhouse_server.drop_database(destination_db)


def test_it_restores_over_its_own_source_when_told_to_replace(
    clickhouse_server: ClickHouseServer, sample_db: str, local_storage: Storage
) -> None:
    target = make_target(clickhouse_server, sample_db, local_storage, options={"replace_existing": True})
    original = table_rows(clickhouse_server, sample_db)
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    clickhouse_server.query(
        f"INSERT INTO `{sample_db}`.events (id, kind) VALUES (9999, 'view'); DROP TABLE `{sample_db}`.recent_views"
    )
    log = restore_backup(backup, target, confirmed_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert table_rows(clickhouse_server, sample_db) == original


def test_it_fails_a_restore_that_the_server_rejects_with_its_message(
    clickhouse_server: ClickHouseServer, sample_db: str, local_storage: Storage, storage_dir: Path
) -> None:
    backup = services.run_backup(make_target(clickhouse_server, sample_db, local_storage), compression="none")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    # A dump whose bytes are stored faithfully but whose content is wrong: the catalog's digest
    # matches, only the restore can tell.
    stored = storage_dir / backup.file_path
    data = stored.read_bytes()
    damaged = data.replace(b"\x05price\x0eDecimal(18, 4)", b"\x05price\x0eDecimal(18, X)", 1)
    assert damaged != data
    stored.write_bytes(damaged)
    checksum = hashlib.sha256(damaged).hexdigest()
    Backup.objects.filter(pk=backup.pk).update(checksum=checksum)
    manifest_path = storage_dir / f"{backup.file_path}.manifest.json"  # the manifest agrees too
    manifest = json.loads(manifest_path.read_text())
    manifest["backup"]["checksum"] = checksum
    manifest_path.write_text(json.dumps(manifest))
    backup.refresh_from_db()
    destination_db = unique_name("rejected")
    try:
        log = restore_backup(backup, make_target(clickhouse_server, destination_db))
        assert log.status == RestoreStatus.FAILED
        assert f"restore into database {destination_db}" in log.error_message
        assert "failed at events" in log.error_message
        assert (
            "Code: 43. Decimal data type family must have a two numbers" in log.error_message
        )  # the client's
        assert f"Database {destination_db} did not exist before this restore and was dropped again" in (
            log.error_message
        )
        assert not clickhouse_server.database_exists(destination_db)
    finally:
        clickhouse_server.drop_database(destination_db)


def test_it_compares_exact_row_counts_on_restore(
    clickhouse_server: ClickHouseServer, sample_db: str, tmp_path: Path
) -> None:
    data, _ = dump_bytes(clickhouse_server, sample_db, tmp_path)
    archive = members(data)
    trailer = json.loads(archive["complete.json"])
    trailer["row_counts"]["people"] = 101
    archive["complete.json"] = json.dumps(trailer).encode()
    destination = connection(clickhouse_server, unique_name("miscounted"))
    engine = get_engine("clickhouse")
    try:
        with pytest.raises(EngineError, match="restored table people has 100 rows, the backup recorded 101"):
            engine.restore(destination, io.BytesIO(rebuild(archive)), RestoreOptions(scratch_dir=tmp_path))
        with pytest.raises(EngineError, match="holds 100 rows in the archive, the backup recorded 101"):
            engine.trial_restore(io.BytesIO(rebuild(archive)), RestoreOptions(scratch_dir=tmp_path))
    finally:
        engine.drop_database(destination)
    assert not clickhouse_server.database_exists(destination.database)


# -- trial restores ------------------------------------------------------------------------------------


def test_it_checks_the_archive_in_a_trial_restore_without_a_server(
    clickhouse_server: ClickHouseServer, sample_db: str, tmp_path: Path
) -> None:
    engine = get_engine("clickhouse")
    options = RestoreOptions(scratch_dir=tmp_path)
    data, _ = dump_bytes(clickhouse_server, sample_db, tmp_path, part_size=4096)
    summary = engine.trial_restore(io.BytesIO(data), options)
    assert f"archive of database {sample_db}: 6 table(s) and view(s)" in summary
    assert "900 row(s) walked block by block; 4 exact row count(s) match" in summary
    assert "not walked" not in summary  # every column type was stepped over

    archive = members(data)
    damaged: list[tuple[dict[str, bytes], str]] = []
    without_a_part = {
        name: content for name, content in archive.items() if name != "data/events/000002.native"
    }
    damaged.append(
        (without_a_part, "'data/events/000003.native' found where data/events/000002.native was expected")
    )
    no_trailer = {name: content for name, content in archive.items() if name != "complete.json"}
    damaged.append((no_trailer, "complete.json was expected"))
    no_schema = {name: content for name, content in archive.items() if name != "schema/002-people.sql"}
    damaged.append((no_schema, "where schema/002-people.sql was expected"))
    wrong_type = dict(archive)
    wrong_type["data/people/000001.native"] = archive["data/people/000001.native"].replace(
        b"\x06UInt32", b"\x06UInt64", 1
    )
    damaged.append((wrong_type, "Native data of people is malformed"))
    description = json.loads(archive["archive.json"])
    description["version"] = 99
    damaged.append(
        ({**archive, "archive.json": json.dumps(description).encode()}, "version 99 is not supported")
    )
    for broken, message in damaged:
        with pytest.raises(EngineError, match=message):
            engine.trial_restore(io.BytesIO(rebuild(broken)), options)
    for cut in (100, len(data) // 2, data.index(b'"exact"')):  # the last: inside complete.json
        with pytest.raises(EngineError):
            engine.trial_restore(io.BytesIO(data[:cut]), options)
    with pytest.raises(EngineError, match=r"not a tar archive|archive\.json"):
        engine.trial_restore(io.BytesIO(b"\x00\x17not a dump\xff" * 2000), options)


# -- secrets -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_db(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    """A few MiB of archive: more than the pipe between the archive writer and its reader holds."""
    name = fill_sample(clickhouse_server, unique_name("big"), rows=20000)
    yield name
    clickhouse_server.drop_database(name)


def test_it_never_shows_the_password_in_argv_logs_or_messages(
    clickhouse_server: ClickHouseServer,
    big_db: str,
    local_storage: Storage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scratch = tmp_path / "scratch"
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [clickhouse_server.password],
        wanted=lambda line: line.startswith(b"clickhouse-client\0"),
        files=lambda: scratch.glob("clickhouse-*/*.xml"),
    ) as watch:
        backup = services.run_backup(
            make_target(clickhouse_server, big_db, local_storage, options={"part_size": 65536})
        )
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    dumps = [line.split(b"\0") for line in watch.seen if b"FORMAT Native" in line]
    assert dumps, "the sampler must have seen a clickhouse-client dumping a table"
    assert all(argv[1].startswith(b"--config-file=") for argv in dumps)
    assert watch.leaked == []
    assert watch.modes == {0o600}
    assert list(scratch.glob("clickhouse-*")) == []  # the config files and their directory are gone
    texts = [caplog.text, backup.error_message, backup.notes, json.dumps(backup.engine_info)]
    texts += [step.message for step in backup.steps.all()]
    assert not any(clickhouse_server.password in text for text in texts)


def test_it_carries_any_password_in_the_client_config(clickhouse_server: ClickHouseServer) -> None:
    # The server's password has XML's special characters and spaces at both ends.
    assert clickhouse_server.password != clickhouse_server.password.strip()
    get_engine("clickhouse").probe(connection(clickhouse_server, "default"))


# -- failures ------------------------------------------------------------------------------------------


def test_it_fails_a_wrong_password_with_authentication_failed_and_no_secret(
    clickhouse_server: ClickHouseServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_CH_PASSWORD", "not-the-Right-one-42")
    target = make_target(clickhouse_server, "default", local_storage, password="${WRONG_CH_PASSWORD}")
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    where = f"{clickhouse_server.host}:{clickhouse_server.port}"
    assert (
        backup.error_message == f"authentication failed for user backupsite on {where} (check the password)"
    )
    assert not any("not-the-Right-one-42" in step.message for step in backup.steps.all())
    engine = get_engine("clickhouse")
    with pytest.raises(EngineError, match="authentication failed"):
        engine.check_restore_destination(connection(clickhouse_server, "x", password="not-the-Right-one-42"))
    with pytest.raises(EngineError, match=r"authentication failed for user nobody .*no such user"):
        engine.probe(connection(clickhouse_server, "default", user="nobody"))


def test_it_fails_saying_so_when_the_server_is_down(local_storage: Storage) -> None:
    port = free_port()  # nothing listens there
    target = Target.objects.create(
        name="ch-down", engine="clickhouse", host="127.0.0.1", port=port, database="x", user="u"
    )
    target.storages.add(local_storage)
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message == f"cannot reach the server at 127.0.0.1:{port}: connection refused"


def test_it_fails_within_the_connect_timeout_when_the_server_never_answers(local_storage: Storage) -> None:
    with silent_listener() as port:
        target = Target.objects.create(
            name="ch-silent",
            engine="clickhouse",
            host="127.0.0.1",
            port=port,
            database="x",
            options={"connect_timeout": 2},
        )
        target.storages.add(local_storage)
        started = time.monotonic()
        backup = services.run_backup(target)
        elapsed = time.monotonic() - started
    assert backup.status == BackupStatus.FAILED
    assert elapsed < 8
    assert f"cannot reach the server at 127.0.0.1:{port}: no answer within 2 s" in backup.error_message


def test_it_fails_naming_a_missing_database(
    clickhouse_server: ClickHouseServer, local_storage: Storage
) -> None:
    backup = services.run_backup(make_target(clickhouse_server, "nope_not_here", local_storage))
    assert backup.status == BackupStatus.FAILED
    where = f"{clickhouse_server.host}:{clickhouse_server.port}"
    assert backup.error_message == f"database nope_not_here does not exist on {where}"


def test_it_reports_a_missing_client_as_a_system_check_error_and_a_failed_run(
    clickhouse_server: ClickHouseServer,
    local_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    target = make_target(clickhouse_server, "default", local_storage)
    assert_missing_tools_fail(
        target, ["clickhouse-client"], "not installed: clickhouse-client", monkeypatch, tmp_path
    )
    assert ClickHouseEngine().missing_binaries() == ["clickhouse-client"]
    dump = get_engine("clickhouse").dump(
        connection(clickhouse_server, "default"), DumpOptions(scratch_dir=tmp_path)
    )
    with (
        pytest.raises(EngineError, match="clickhouse-client is not installed"),
        dump,
    ):  # the engine says so too
        pass


def test_it_fails_a_dump_abandoned_midway_and_leaves_no_client_running(
    clickhouse_server: ClickHouseServer, big_db: str, tmp_path: Path
) -> None:
    engine = get_engine("clickhouse")
    target = connection(clickhouse_server, big_db, options={"part_size": 65536})
    with (
        pytest.raises(RuntimeError, match="consumer gave up"),
        engine.dump(target, DumpOptions(scratch_dir=tmp_path)) as dump,
    ):
        assert dump.stream.read(5000)
        raise RuntimeError("consumer gave up")
    deadline = time.monotonic() + 10
    while children_named("clickhouse-cli", prefix=True):
        assert time.monotonic() < deadline, "a clickhouse-client of the abandoned dump still runs"
        time.sleep(0.05)
    assert list(tmp_path.glob("clickhouse-*")) == []
    # A consumer that stops early without an error (e.g. at the tar's end-of-archive blocks):
    # the rest is read on its behalf and the dump completes.
    with engine.dump(target, DumpOptions(scratch_dir=tmp_path)) as dump:
        assert dump.stream.read(100)
    assert dump.info["row_counts"]["events"] == 20000 and dump.info["parts"] > 20


# -- TLS -----------------------------------------------------------------------------------------------


def test_it_speaks_tls_and_verifies_the_certificate(
    clickhouse_server: ClickHouseServer, tmp_path: Path
) -> None:
    engine = get_engine("clickhouse")
    secure = {"secure": True, "ca_certificate": str(clickhouse_server.tls_ca)}
    good = connection(clickhouse_server, "default", port=clickhouse_server.secure_port, options=secure)
    engine.probe(good)
    stranger = make_certificates(tmp_path / "other-ca", common_name="someone-else") / "ca.pem"
    for options in ({"secure": True, "ca_certificate": str(stranger)}, {"secure": True}):
        with pytest.raises(EngineError, match=r"TLS with the server at \S+ failed"):
            engine.probe(
                connection(clickhouse_server, "default", port=clickhouse_server.secure_port, options=options)
            )
    with pytest.raises(EngineError, match=r"cannot reach the server|TLS"):  # plain text to the TLS port
        engine.probe(connection(clickhouse_server, "default", port=clickhouse_server.secure_port))


# -- change detection ------------------------------------------------------------------------------------


def test_it_changes_the_fingerprint_with_every_change_and_only_then(
    clickhouse_server: ClickHouseServer, sample_db: str
) -> None:
    engine = get_engine("clickhouse")
    target = connection(clickhouse_server, sample_db)
    db = f"`{sample_db}`"
    first = engine.fingerprint(target)
    assert first and first == engine.fingerprint(target)
    seen = {first}
    changes = [
        f"INSERT INTO {db}.people (id, name) VALUES (1000, 'new')",
        f"ALTER TABLE {db}.people UPDATE name = 'changed' WHERE id = 1",
        f"ALTER TABLE {db}.people ADD COLUMN extra UInt8",
        f"CREATE VIEW {db}.another AS SELECT 1",
        f"ALTER TABLE {db}.people DELETE WHERE id = 2",
    ]
    for change in changes:
        clickhouse_server.query(change)
        deadline = time.monotonic() + 20
        while (
            clickhouse_server.query(
                f"SELECT count() FROM system.mutations WHERE database = '{sample_db}' AND NOT is_done"
            ).strip()
            != "0"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        token = engine.fingerprint(target)
        assert token is not None and token not in seen, change
        seen.add(token)


# -- names and statements ------------------------------------------------------------------------------


def test_it_round_trips_odd_names_into_another_database(
    clickhouse_server: ClickHouseServer, tmp_path: Path
) -> None:
    source_db, destination_db = f"odd src ü {unique_name('x')}", f"odd dst `{unique_name('y')}`"
    quoted = source_db.replace("`", "\\`")
    clickhouse_server.query(
        f"""
        CREATE DATABASE `{quoted}`;
        CREATE TABLE `{quoted}`.`a/b \\`c\\` ü` (id UInt8, `odd col` String) ENGINE = MergeTree ORDER BY id;
        CREATE TABLE `{quoted}`.`.hidden` (id UInt8) ENGINE = TinyLog;
        INSERT INTO `{quoted}`.`a/b \\`c\\` ü` VALUES (1, 'it''s \\\\ "{source_db}".x');
        INSERT INTO `{quoted}`.`.hidden` VALUES (2);
        CREATE VIEW `{quoted}`.`..` AS SELECT id, `odd col`, '{quoted}.' AS literal FROM `{quoted}`.`a/b \\`c\\` ü`;
        """
    )
    engine = get_engine("clickhouse")
    destination = connection(clickhouse_server, destination_db)
    try:
        data, info = dump_bytes(clickhouse_server, source_db, tmp_path)
        assert info["tables"] == [".hidden", "a/b `c` ü"] and info["views"] == [".."]
        assert sorted(name for name in members(data) if name.startswith("data/")) == [
            "data/%2Ehidden/000001.native",
            "data/a%2Fb%20%60c%60%20%C3%BC/000001.native",
        ]
        assert "schema/003-%2E..sql" in members(data)
        result = engine.restore(destination, io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path))
        assert result.row_counts == {".hidden": 1, "a/b `c` ü": 1}
        original = clickhouse_server.query(f"SELECT * FROM `{quoted}`.`..`")
        engine.drop_database(connection(clickhouse_server, source_db))
        restored_db = destination_db.replace("`", "\\`")
        # The view reads the restored table (the source is gone); the literal is left as it was.
        assert clickhouse_server.query(f"SELECT * FROM `{restored_db}`.`..`") == original
    finally:
        engine.drop_database(destination)
        engine.drop_database(connection(clickhouse_server, source_db))


def test_it_rewrites_database_qualifiers_outside_literals_only() -> None:
    from backups.engines.clickhouse.sql import dependency_order, rewrite_database, tsv_field

    sql = (
        "CREATE VIEW src.v AS SELECT src.t.x, 'src.t' AS s, `src`.`t2`.y FROM src.t JOIN other.src.z USING x"
    )
    assert rewrite_database(sql, "src", "new db") == (
        "CREATE VIEW `new db`.v AS SELECT `new db`.t.x, 'src.t' AS s, `new db`.`t2`.y "
        "FROM `new db`.t JOIN other.src.z USING x"
    )
    assert tsv_field(r"a\tb\\c\'d\ne\x41") == "a\tb\\c'd\neA"
    views = {
        "c": "CREATE VIEW db.c AS SELECT * FROM db.b",
        "b": "CREATE VIEW db.b AS SELECT * FROM a",
        "a": "x",
    }
    assert dependency_order(views, "db") == ["a", "b", "c"]
