"""Parallel PostgreSQL restores (``restore_jobs``): ``pg_restore --jobs`` from a spool of the
decoded backup in the scratch directory, on a real server, from local and S3 storage, plain and
encrypted. The spool never outlives the restore (it never has a name), the scratch disk is
checked before anything is read (the preview lists it) and while spooling, a failed parallel
restore drops the database it created, and the restore's phase says how many tables are loaded.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from backups import services
from backups.engines.base import Connection, EngineError, RestoreOptions
from backups.engines.postgresql import parallel
from backups.engines.postgresql.engine import PostgreSQLEngine
from backups.engines.postgresql.settings import validate
from backups.models import Backup, BackupStatus, Storage, Target
from restores.models import RestoreLog, RestoreStatus
from restores.services import RestoreRefused, preview_restore, restore_backup, run_restore, start_restore
from tests.config_builder import write_config
from tests.conftest import PG_PASSWORD_ENV, REPO, pg_target, unique_name
from tests.engine_checks import child_named
from tests.servers.postgres import PostgresServer
from tests.servers.s3 import S3Server

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]

ACCESS_ENV, SECRET_ENV = "TEST_S3_ACCESS_KEY", "TEST_S3_SECRET_KEY"
# Tables with indexes and data, so the parallel steps (data, then indexes) have work to share.
SCHEMA = """
    CREATE SCHEMA shop;
    CREATE TABLE shop.customers (id int PRIMARY KEY, name text NOT NULL, joined date);
    CREATE INDEX ON shop.customers (name);
    CREATE TABLE shop.orders (id bigint PRIMARY KEY, customer int REFERENCES shop.customers, total numeric);
    CREATE INDEX ON shop.orders (customer, total);
    CREATE TABLE public.notes (id serial PRIMARY KEY, body text);
    INSERT INTO shop.customers SELECT i, 'customer ' || i, DATE '2020-01-01' + i % 900
        FROM generate_series(1, 3000) i;
    INSERT INTO shop.orders SELECT i, 1 + i % 3000, (i % 997) * 1.5 FROM generate_series(1, 20000) i;
    INSERT INTO public.notes (body) SELECT repeat('n', 200) FROM generate_series(1, 500);
"""
COUNTS = {"shop.customers": 3000, "shop.orders": 20000, "public.notes": 500}


@pytest.fixture
def source_db(pg_server: PostgresServer) -> Iterator[str]:
    database = pg_server.create_database(unique_name("jobs_src"))
    pg_server.execute(database, SCHEMA)
    yield database
    pg_server.drop_database(database)


@pytest.fixture
def new_db(pg_server: PostgresServer) -> Iterator[str]:
    name = unique_name("jobs_new")
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def s3_row(s3_server: S3Server, s3_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> Storage:
    monkeypatch.setenv(ACCESS_ENV, s3_server.access_key)
    monkeypatch.setenv(SECRET_ENV, s3_server.secret_key)
    options = s3_server.options(
        s3_bucket(), access_key="${" + ACCESS_ENV + "}", secret_key="${" + SECRET_ENV + "}"
    )
    return Storage.objects.create(name="offsite", kind="s3", options=options, prefix="site")


def backed_up(pg_server: PostgresServer, database: str, storage: Storage, **fields: object) -> Backup:
    source = pg_target(pg_server, unique_name("src").replace("_", "-"), database, storage, **fields)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    return backup


def counts(server: PostgresServer, database: str) -> dict[str, int]:
    return {name: server.execute(database, f"SELECT count(*) FROM {name}")[0][0] for name in COUNTS}


def scratch_files() -> list[str]:
    from django.conf import settings

    scratch = Path(settings.BACKUPSITE_TMP)
    return sorted(os.listdir(scratch)) if scratch.exists() else []


def destination(server: PostgresServer, database: str, storage: Storage, **options: object) -> Target:
    return pg_target(server, unique_name("dest").replace("_", "-"), database, storage, options=options)


class SpoolWatch:
    """Watches for this process's pg_restore child and records its argv and what its archive
    argument (``/dev/fd/N``) points at while it runs."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[str], str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SpoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.seen:
            pid = child_named("pg_restore")
            if pid is not None:
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
                    target = os.readlink(f"/proc/{pid}/fd/{argv[-1].rsplit('/', 1)[-1]}")
                except (OSError, UnicodeDecodeError):
                    pass  # gone, or still starting: look again
                else:
                    self.seen.append((argv, target))
            self._stop.wait(0.01)


def test_it_restores_a_gzip_backup_with_two_jobs_into_a_database_it_creates(
    pg_server: PostgresServer, local_storage: Storage, source_db: str, new_db: str
) -> None:
    backup = backed_up(pg_server, source_db, local_storage, compression="gzip")
    log = restore_backup(backup, destination(pg_server, new_db, local_storage, restore_jobs=2))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert "(created) with 2 jobs from a" in log.notes
    assert "spool in the scratch directory" in log.notes
    assert counts(pg_server, new_db) == COUNTS
    indexes = pg_server.execute(new_db, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'shop'")
    assert indexes[0][0] == 4
    assert scratch_files() == []


def test_it_restores_an_encrypted_backup_from_s3_with_two_jobs_through_an_unnamed_spool(
    pg_server: PostgresServer, s3_row: Storage, key_dir: Path, source_db: str, new_db: str
) -> None:
    services.generate_key("prod", key_dir / "prod.key")
    backup = backed_up(pg_server, source_db, s3_row, compression="zstd", encryption="prod")
    assert backup.encryption == "age"
    from django.conf import settings

    scratch = Path(settings.BACKUPSITE_TMP).resolve()
    with SpoolWatch() as watch:
        log = restore_backup(backup, destination(pg_server, new_db, s3_row, restore_jobs=2))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert counts(pg_server, new_db) == COUNTS
    # While pg_restore ran, its archive was a file in the scratch directory with no name left.
    assert watch.seen, "no pg_restore --jobs process was seen"
    argv, target = watch.seen[0]
    assert "--jobs=2" in argv and "--single-transaction" not in argv
    assert target.startswith(str(scratch) + "/") and target.endswith("(deleted)"), target
    assert scratch_files() == []


def test_it_fails_a_parallel_restore_with_pg_restore_message_drops_the_database_and_leaves_no_spool(
    pg_server: PostgresServer, local_storage: Storage, new_db: str
) -> None:
    database = pg_server.create_database(unique_name("jobs_bad"))
    # An index on a function that reads a table by an unqualified name: pg_restore runs with an
    # empty search_path, so building the index fails after the data is in (a half-done database).
    pg_server.execute(
        database,
        "CREATE TABLE lookup (id int); INSERT INTO lookup VALUES (1);"
        "CREATE FUNCTION plus_lookup(int) RETURNS int LANGUAGE sql IMMUTABLE "
        "AS 'SELECT $1 + (SELECT count(*)::int FROM lookup)';"
        "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 1000);"
        "CREATE INDEX items_plus ON items (plus_lookup(id));",
    )
    backup = backed_up(pg_server, database, local_storage)
    log = restore_backup(backup, destination(pg_server, new_db, local_storage, restore_jobs=2))
    assert log.status == RestoreStatus.FAILED
    assert 'relation "lookup" does not exist' in log.error_message
    assert f"database {new_db}, which this restore had created, was dropped again" in log.error_message
    assert not pg_server.database_exists(new_db)
    assert scratch_files() == []
    pg_server.drop_database(database)


def too_big_for_the_scratch_disk(backup: Backup) -> int:
    """Make the catalog say the archive is bigger than the whole scratch disk; returns that size."""
    from django.conf import settings

    Path(settings.BACKUPSITE_TMP).mkdir(parents=True, exist_ok=True)
    raw_size = shutil.disk_usage(settings.BACKUPSITE_TMP).total + 1
    Backup.objects.filter(pk=backup.pk).update(raw_size=raw_size)
    backup.refresh_from_db()
    return raw_size


def assert_short_of_space(message: str, jobs: int, raw_size: int) -> None:
    assert f"restore_jobs = {jobs} spools the backup to" in message
    assert f"the backup's raw size, {parallel.human(raw_size)}" in message
    assert "free there" in message and " is free: " in message  # needed, and what is free
    assert "restore_jobs = 1" in message and "nothing was changed" in message


def test_it_refuses_a_parallel_restore_when_the_scratch_disk_is_short_before_reading_anything(
    pg_server: PostgresServer, local_storage: Storage, source_db: str, new_db: str
) -> None:
    backup = backed_up(pg_server, source_db, local_storage)
    raw_size = too_big_for_the_scratch_disk(backup)
    target = destination(pg_server, new_db, local_storage, restore_jobs=3)
    # Listed by the preview, refused by the restore before a row is written or a byte read.
    problems = preview_restore(backup, target).problems
    assert len(problems) == 1 and problems[0].startswith(f"target {target.name}: restore_jobs = 3 ")
    assert_short_of_space(problems[0], 3, raw_size)
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(backup, target)
    assert_short_of_space(str(refused.value), 3, raw_size)
    assert RestoreLog.objects.count() == 0
    assert not pg_server.database_exists(new_db)
    assert scratch_files() == []


def test_it_refuses_a_queued_parallel_restore_whose_scratch_disk_filled_with_no_byte_read(
    pg_server: PostgresServer, local_storage: Storage, source_db: str, new_db: str
) -> None:
    backup = backed_up(pg_server, source_db, local_storage)
    queued = start_restore(backup, destination(pg_server, new_db, local_storage, restore_jobs=2))
    raw_size = too_big_for_the_scratch_disk(backup)  # the disk "filled" while it was queued
    log = run_restore(queued.pk)
    assert log is not None and log.status == RestoreStatus.FAILED
    assert_short_of_space(log.error_message, 2, raw_size)
    assert log.progress == 0  # refused before the digest pass read the stored copy
    assert RestoreLog.objects.get(pk=log.pk).progress == 0
    assert not pg_server.database_exists(new_db)
    assert scratch_files() == []


def test_it_still_refuses_in_the_engine_when_the_space_went_after_the_checks(
    pg_server: PostgresServer, new_db: str, tmp_path: Path
) -> None:
    """The space can vanish between the refusal checks and the restore: the engine checks again,
    before it reads the stream."""

    class Unreadable(io.RawIOBase):
        def readinto(self, buffer: object) -> int:
            raise AssertionError("the backup was read")

    connection = Connection(
        name="dest", engine="postgresql", host=pg_server.host, port=pg_server.port, user=pg_server.user,
        password=pg_server.password, database=new_db, options={"restore_jobs": 2},
    )  # fmt: skip
    total = shutil.disk_usage(tmp_path).total
    options = RestoreOptions(scratch_dir=tmp_path, manifest={"raw_size": total})
    with pytest.raises(EngineError) as refused:
        PostgreSQLEngine().restore(connection, cast(BinaryIO, Unreadable()), options)
    assert_short_of_space(str(refused.value), 2, total)
    assert not pg_server.database_exists(new_db)


def test_it_shows_how_many_tables_a_parallel_restore_has_loaded(
    pg_server: PostgresServer, local_storage: Storage, source_db: str, new_db: str, settings: Any
) -> None:
    settings.BACKUPSITE_PROGRESS_INTERVAL = 0  # every new phase is written at once
    backup = backed_up(pg_server, source_db, local_storage)
    seen: list[tuple[str, str, int]] = []  # (phase, the row's phase then, thread)

    def shown(text: str) -> None:
        row = RestoreLog.objects.order_by("-id").values_list("phase", flat=True).first()
        seen.append((text, row or "", threading.get_ident()))

    log = restore_backup(backup, destination(pg_server, new_db, local_storage, restore_jobs=2), phase=shown)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    phases = [text for text, _row, _thread in seen]
    assert phases[0] == "spooling the backup to the scratch directory for pg_restore --jobs=2"
    assert "pg_restore --jobs=2: creating tables and other objects" in phases
    final = "pg_restore --jobs=2: data for 3 of 3 tables loaded; 6 indexes and constraints built"
    assert phases[-1] == final
    assert log.phase == final and RestoreLog.objects.get(pk=log.pk).phase == final
    # Written to the row while the restore ran, all from the restoring thread.
    assert "pg_restore --jobs=2: creating tables and other objects" in [row for _text, row, _t in seen]
    assert {thread for _text, _row, thread in seen} == {threading.get_ident()}
    assert counts(pg_server, new_db) == COUNTS


def test_it_shows_how_many_tables_a_streamed_restore_has_loaded(
    pg_server: PostgresServer, local_storage: Storage, source_db: str, new_db: str
) -> None:
    backup = backed_up(pg_server, source_db, local_storage)
    seen: list[str] = []
    log = restore_backup(backup, destination(pg_server, new_db, local_storage), phase=seen.append)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert log.phase == "pg_restore: data for 3 of 3 tables loaded; 6 indexes and constraints built"
    assert seen and seen[-1] == log.phase


def test_it_hands_the_phase_on_from_the_waiting_thread_while_pg_restore_runs(tmp_path: Path) -> None:
    """run_restore waits in ticks: the phase followed from the tool's stderr (another thread)
    reaches ``on_phase`` in the caller's thread while the tool still runs."""
    reported: list[tuple[str, int]] = []
    phase = parallel.Phase(lambda text: reported.append((text, threading.get_ident())), total=2, jobs=2)
    script = (
        "echo 'pg_restore: processing data for table \"public.a\"' >&2; "
        "echo 'pg_restore: finished item 7 TABLE DATA a' >&2; sleep 1.5; "
        "echo 'pg_restore: finished item 8 INDEX a_idx' >&2"
    )
    source = tmp_path / "archive"
    source.write_bytes(b"x")
    with source.open("rb") as stream, parallel.spooled(stream, tmp_path / "scratch", jobs=2) as spool:
        parallel.run_restore(
            ["sh", "-c", script, "pg_restore"], {"PATH": os.environ["PATH"]}, spool,
            on_stderr=phase.follow, explain=str, on_tick=phase.report,
        )  # fmt: skip
    texts = {text for text, _thread in reported}
    assert "pg_restore --jobs=2: data for 1 of 2 tables loaded" in texts  # while it slept
    assert {thread for _text, thread in reported} == {threading.get_ident()}
    phase.end()
    assert phase.text == "pg_restore --jobs=2: data for 1 of 2 tables loaded; 1 indexes and constraints built"


def test_it_follows_a_streamed_pg_restore_one_table_after_another() -> None:
    phase = parallel.Phase(None, total=None, jobs=1)
    assert phase.text == ""
    phase.follow('pg_restore: creating TABLE "public.a"')
    assert phase.text == ""
    phase.follow('pg_restore: processing data for table "public.a"')
    assert phase.text == "pg_restore: data for 0 tables loaded, loading public.a"
    phase.follow('pg_restore: processing data for table "shop.b"')
    assert phase.text == "pg_restore: data for 1 tables loaded, loading shop.b"
    phase.follow('pg_restore: creating INDEX "shop.b_idx"')
    assert phase.text == "pg_restore: data for 2 tables loaded; 1 indexes and constraints built"


def test_it_stops_spooling_when_the_disk_runs_short_while_it_writes(tmp_path: Path) -> None:
    total = shutil.disk_usage(tmp_path).total
    source = tmp_path / "archive"
    source.write_bytes(os.urandom(1024 * 1024) * 65)  # past the first re-check
    scratch = tmp_path / "scratch"
    with (
        source.open("rb") as stream,
        pytest.raises(EngineError) as failed,
        parallel.spooled(stream, scratch, jobs=2, reserve=total),
    ):
        raise AssertionError("spooled although the disk was short")
    assert "restore_jobs = 2: spooling the backup to" in str(failed.value)
    assert "kept; free some space" in str(failed.value) and "nothing was changed" in str(failed.value)
    assert os.listdir(scratch) == []


def test_it_restores_an_existing_database_in_one_transaction_and_says_why(
    pg_server: PostgresServer, local_storage: Storage, source_db: str
) -> None:
    backup = backed_up(pg_server, source_db, local_storage)
    pg_server.execute(source_db, "DELETE FROM shop.orders WHERE id > 10")
    log = restore_backup(backup, destination(pg_server, source_db, local_storage, restore_jobs=2))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert f"restore_jobs = 2 not used: database {source_db} exists" in log.notes
    assert "with 2 jobs" not in log.notes
    assert counts(pg_server, source_db) == COUNTS


def test_it_restores_an_existing_database_in_parallel_when_single_transaction_is_off(
    pg_server: PostgresServer, local_storage: Storage, source_db: str
) -> None:
    backup = backed_up(pg_server, source_db, local_storage)
    pg_server.execute(source_db, "DELETE FROM shop.orders WHERE id > 10; DELETE FROM public.notes")
    target = destination(pg_server, source_db, local_storage, restore_jobs=2, single_transaction=False)
    log = restore_backup(backup, target)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert f"into database {source_db} with 2 jobs" in log.notes
    assert "row counts match the backup" in log.notes  # not all or nothing: every count compared
    assert counts(pg_server, source_db) == COUNTS
    assert RestoreLog.objects.filter(pk=log.pk, status=RestoreStatus.SUCCESS).exists()


@pytest.mark.parametrize("value", [0, 33, "4", True, 2.0])
def test_it_refuses_a_restore_jobs_value_that_is_not_a_whole_number_from_1_to_32(value: object) -> None:
    connection = Connection(name="t", engine="postgresql", database="app", options={"restore_jobs": value})
    problems = dict(validate(connection))
    assert "must be a whole number from 1 to 32" in problems["options.restore_jobs"]


def test_it_lets_a_child_reopen_the_spool_from_its_start(tmp_path: Path) -> None:
    """Each pg_restore worker reopens /dev/fd/N with an offset of its own (Linux): a child that
    reads the spool by that path sees every byte, whatever the parent's offset."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    source = tmp_path / "archive"
    source.write_bytes(data)
    with source.open("rb") as stream, parallel.spooled(stream, tmp_path / "scratch", jobs=2) as spool:
        assert spool.size == len(data)
        copied = subprocess.run(
            ["cat", spool.path], pass_fds=(spool.fd,), capture_output=True, check=True
        ).stdout
        assert copied == data
        assert os.listdir(tmp_path / "scratch") == []


def test_it_drops_the_database_a_parallel_restore_created_when_sigterm_stops_it(
    pg_server: PostgresServer,
    manage: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    new_db: str,
) -> None:
    database = pg_server.create_database(unique_name("jobs_stopped"))
    pg_server.execute(
        database,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 400000) g;"
        "CREATE INDEX big_pad ON big (pad); CREATE TABLE small (id int PRIMARY KEY)",
    )
    server = {"engine": "postgresql", "host": pg_server.host, "port": pg_server.port, "user": pg_server.user}
    password = {"password": "${" + PG_PASSWORD_ENV + "}", "storages": ["local"]}
    config = write_config(
        tmp_path / "pg.toml",
        storage_dir=tmp_path / "b",
        targets={
            "pg": {**server, **password, "database": database},
            "pg-new": {**server, **password, "database": new_db, "is_active": False,
                       "options": {"restore_jobs": 2}},
        },
    )  # fmt: skip
    env = {PG_PASSWORD_ENV: pg_server.password}
    assert manage("backup_config", "apply", str(config), "--skip-probes", extra_env=env).returncode == 0
    assert manage("backup_create", "--target", "pg", extra_env=env).returncode == 0

    home = tmp_path / "home"
    full_env = {
        **os.environ,
        **env,
        "BACKUPSITE_HOME": str(home),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
    }
    full_env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "backup_restore", "--id", "1", "--to", "pg-new", "--yes"],
        cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def half_restored() -> bool:
        """pg_restore --jobs runs and has created the tables: the database is half restored."""
        if not child_named("pg_restore", process.pid) or not pg_server.database_exists(new_db):
            return False
        return bool(pg_server.execute(new_db, "SELECT count(*) FROM pg_class WHERE relname = 'big'")[0][0])

    deadline = time.monotonic() + 120
    while not half_restored() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err

    with sqlite3.connect(home / "backupsite.sqlite3") as catalog:
        status, message = catalog.execute("SELECT status, error_message FROM backup_restore_log").fetchone()
    assert status == "failed" and "terminated by SIGTERM" in message
    assert not pg_server.database_exists(new_db)
    assert child_named("pg_restore", process.pid) is None
    assert not (home / "tmp").exists() or not any((home / "tmp").iterdir())
    pg_server.drop_database(database)
