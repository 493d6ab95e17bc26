"""The contract every engine keeps, checked for each registered engine through the real services:
back up, verify deeply, restore into a second target of the same engine, compare with the source.

A new engine needs an entry in ``CASES`` below; until it has one, its contract test fails.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from backups import services
from backups.engines import EngineError, engine_choices, engine_keys, get_engine
from backups.engines.base import Connection, DumpOptions, Engine, RestoreOptions
from backups.models import Backup, BackupStatus, Storage, Target
from backups.streaming.codecs import COMPRESSIONS, EXTENSIONS
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import pg_target, sqlite_rows, unique_name
from tests.servers.mongodb import skip_reason as mongodb_skip_reason
from tests.servers.postgres import PostgresServer
from tests.test_engine_clickhouse import clickhouse_contract_case
from tests.test_engine_mongodb import mongodb_contract_case
from tests.test_engine_mysql import mysql_contract_case
from tests.test_engine_redis import redis_contract_case

Compare = Callable[[], None]
ContractCase = tuple[Target, Target, Compare]
CaseFactory = Callable[[pytest.FixtureRequest, Path], ContractCase]


def tree(root: Path) -> dict[str, tuple[str, object]]:
    entries: dict[str, tuple[str, object]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[relative] = ("dir", None)
            else:
                entries[relative] = ("file", path.read_bytes())
    return entries


def sqlite_case(request: pytest.FixtureRequest, tmp_path: Path) -> ContractCase:
    source: Target = request.getfixturevalue("sqlite_target")
    storage: Storage = request.getfixturevalue("local_storage")
    restored = tmp_path / "restored" / "app.sqlite3"
    destination = Target.objects.create(name="app-db-restored", engine="sqlite", database=str(restored))
    destination.storages.add(storage)

    def compare() -> None:
        assert sqlite_rows(restored) == sqlite_rows(Path(source.database))

    return source, destination, compare


def files_case(request: pytest.FixtureRequest, tmp_path: Path) -> ContractCase:
    source: Target = request.getfixturevalue("files_target")
    storage: Storage = request.getfixturevalue("local_storage")
    restored = tmp_path / "restored-media"
    destination = Target.objects.create(name="media-restored", engine="files", paths=[str(restored)])
    destination.storages.add(storage)

    def compare() -> None:
        original = tree(Path(source.paths[0]))
        assert original  # the fixture tree is not empty, so equality means something
        assert tree(restored) == original

    return source, destination, compare


def postgresql_case(request: pytest.FixtureRequest, tmp_path: Path) -> ContractCase:
    server: PostgresServer = request.getfixturevalue("pg_server")
    storage: Storage = request.getfixturevalue("local_storage")
    source_db = server.create_database(unique_name("contract_src"))
    server.execute(
        source_db,
        """CREATE TABLE people (id serial PRIMARY KEY, name text, photo bytea, score numeric(10, 2));
           INSERT INTO people (name, photo, score)
             SELECT 'persön ' || g || ' 🚀', decode(md5(g::text), 'hex'), g * 1.25 FROM generate_series(1, 300) g;
           CREATE TABLE audit (id bigserial PRIMARY KEY, event jsonb);
           INSERT INTO audit (event) SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g;""",
    )
    destination_db = unique_name("contract_dst")
    source = pg_target(server, f"pg-{source_db}".replace("_", "-"), source_db, storage)
    destination = pg_target(server, f"pg-{destination_db}".replace("_", "-"), destination_db, storage)
    request.addfinalizer(lambda: server.drop_database(destination_db))

    def rows(database: str) -> dict[str, list[tuple[object, ...]]]:
        return {
            table: server.execute(database, f"SELECT * FROM {table} ORDER BY id")
            for table in ("people", "audit")
        }

    def compare() -> None:
        assert rows(destination_db) == rows(source_db)

    return source, destination, compare


CASES: dict[str, CaseFactory] = {
    "sqlite": sqlite_case,
    "files": files_case,
    "postgresql": postgresql_case,
    "mysql": mysql_contract_case("mysql"),
    "mariadb": mysql_contract_case("mariadb"),
    "mongodb": mongodb_contract_case,
    "redis": redis_contract_case,
    "clickhouse": clickhouse_contract_case,
}


def verify_deeply_and_restore(backup: Backup, destination: Target, compare: Compare) -> None:
    """The contract's second half: a deep verification passes and marks the backup verified,
    then a restore into ``destination`` succeeds and ``compare`` finds the source's data there."""
    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages
    backup.refresh_from_db()
    assert backup.verified and backup.status == BackupStatus.SUCCESS
    log = restore_backup(backup, destination, initiated_by="contract-test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    compare()


def contract_case(key: str, request: pytest.FixtureRequest, tmp_path: Path) -> ContractCase:
    if key not in CASES:
        pytest.fail(
            f"engine {key!r} has no contract case: add an entry for it to CASES in "
            "tests/test_engine_contract.py (a source target, a destination target and a compare function)"
        )
    return CASES[key](request, tmp_path)


# Engines that make backups; the rest (external: files another tool writes) refuse every dump.
DUMPING = [key for key in engine_keys() if get_engine(key).supported_types]


@pytest.mark.parametrize("key", DUMPING)
def test_it_declares_what_the_catalog_needs(key: str) -> None:
    engine = get_engine(key)
    assert isinstance(engine, Engine)
    assert engine.key == key
    assert isinstance(engine.label, str) and engine.label.strip()
    assert dict(engine_choices())[key] == engine.label
    assert engine.file_extension.startswith(".") and len(engine.file_extension) > 1
    assert "/" in engine.content_type and " " not in engine.content_type
    assert "full" in engine.supported_types
    missing = engine.missing_binaries()
    if key == "mongodb" and missing:  # MongoDB's tools are in none of the registries reachable here
        pytest.skip(mongodb_skip_reason(missing))
    assert missing == []


@pytest.mark.parametrize("key", engine_keys())
def test_it_rejects_garbage_in_a_trial_restore(key: str, tmp_path: Path) -> None:
    garbage = b"\x00\x17not a dump of any kind\xff" * 2_000
    with pytest.raises(EngineError):
        get_engine(key).trial_restore(io.BytesIO(garbage), RestoreOptions(scratch_dir=tmp_path / "trial"))


@pytest.mark.django_db
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("key", DUMPING)
def test_it_backs_up_verifies_and_restores_every_engine(
    key: str, compression: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source, destination, compare = contract_case(key, request, tmp_path)
    engine = get_engine(key)

    backup = services.run_backup(source, compression=compression)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.file_path.endswith(engine.file_extension + EXTENSIONS[compression])
    assert backup.file_size and backup.raw_size and len(backup.checksum) == 64
    assert [copy.status for copy in backup.copies.all()] == ["stored"]

    verify_deeply_and_restore(backup, destination, compare)


@pytest.mark.django_db
@pytest.mark.parametrize("key", DUMPING)
def test_it_marks_a_damaged_copy_corrupt_and_refuses_to_restore_it(
    key: str, request: pytest.FixtureRequest, tmp_path: Path, storage_dir: Path
) -> None:
    source, destination, _ = contract_case(key, request, tmp_path)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    stored = storage_dir / backup.file_path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    outcome = services.verify_backup(backup, deep=True)
    assert not outcome.ok
    assert Backup.objects.get(pk=backup.pk).status == BackupStatus.CORRUPT
    backup.status = BackupStatus.SUCCESS  # even if someone insists, the digest check stops it
    backup.save(update_fields=["status"])
    log = restore_backup(backup, destination)
    assert log.status == RestoreStatus.FAILED
    assert "no intact copy" in log.error_message


@pytest.mark.parametrize("key", sorted(set(engine_keys()) - set(DUMPING)))
def test_it_refuses_every_dump_and_restore_of_an_engine_that_makes_no_backups(
    key: str, tmp_path: Path
) -> None:
    engine, connection = get_engine(key), Connection(name="watched", engine=key)
    with pytest.raises(EngineError):
        engine.dump(connection, DumpOptions(scratch_dir=tmp_path))
    with pytest.raises(EngineError):
        engine.restore(connection, io.BytesIO(b""), RestoreOptions(scratch_dir=tmp_path))


def test_it_has_a_contract_case_for_every_registered_engine() -> None:
    missing = sorted(set(DUMPING) - set(CASES))
    assert not missing, (
        f"add contract cases to CASES in tests/test_engine_contract.py for: {', '.join(missing)}"
    )


def test_it_fails_with_advice_for_an_engine_without_a_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with pytest.raises(pytest.fail.Exception, match="add an entry for it to CASES"):
        contract_case("not-an-engine", request, tmp_path)


def test_it_lists_engines_without_loading_every_database_driver() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = (
        "import django, sys; django.setup(); "
        "from backups.engines import engine_choices; engine_choices(); "
        "from backups import models; "
        "print(sorted(m for m in ('psycopg', 'MySQLdb') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
