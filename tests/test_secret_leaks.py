"""Secrets stay out of what others can read while backups and restores run (issue 18, case 11).

While real dumps and restores run against real servers, every process's command line is
sampled, and so is the environment of every database tool (dump and restore programs): no
password may show in either, except in the variables that carry one by design
(``engine_checks.ALLOWED_ENV``: REDISCLI_AUTH). A failing run on a real Celery worker leaves no
password in the worker's or beat's log, nor in any other file of its BACKUPSITE_HOME.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command

from backups import services
from backups.models import Backup, BackupStatus, Storage
from restores.models import RestoreLog, RestoreStatus
from restores.services import restore_backup
from tests import test_engine_clickhouse as clickhouse
from tests import test_engine_mysql as mysql
from tests import test_engine_redis as redis
from tests.config_builder import write_config
from tests.conftest import PG_PASSWORD_ENV, pg_target, unique_name
from tests.engine_checks import DUMP_TOOLS, RESTORE_TOOLS, ProcessWatch, program_of, runs
from tests.servers.clickhouse import ClickHouseServer
from tests.servers.mariadb import MariaDBServer, fill_sample
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer
from tests.test_celery_processes import Site, wait_until

pytestmark = pytest.mark.django_db

TOOLS = runs(*DUMP_TOOLS, *RESTORE_TOOLS)


def programs(watch: ProcessWatch) -> set[str]:
    return {program_of(line).decode() for line in watch.seen}


def texts_of(backup: Backup, log: RestoreLog, caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [caplog.text, backup.error_message, backup.notes, json.dumps(backup.engine_info)]
    texts += [log.error_message, log.notes, *(step.message for step in backup.steps.all())]
    return texts


def test_it_keeps_the_postgresql_password_out_of_dump_and_restore_tools(
    pg_server: PostgresServer, local_storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = pg_server.create_database(unique_name("leak_source"))
    pg_server.execute(
        source,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 200000) g",
    )
    destination = unique_name("leak_restored")
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [pg_server.password], wanted=TOOLS, files=lambda: (tmp_path / "scratch").glob("pgpass-*")
    ) as watch:
        backup = services.run_backup(pg_target(pg_server, "leak-source", source, local_storage))
        log = restore_backup(backup, pg_target(pg_server, "leak-destination", destination, local_storage))
    try:
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert {"pg_dump", "pg_restore"} <= programs(watch), programs(watch)
        assert watch.leaked == [] and watch.env_leaked == []
        restore_env = [names for program, names in watch.environments if program.endswith(b"pg_restore")]
        assert any(b"PGPASSFILE" in names for names in restore_env)  # the connecting runs (not --version)
        assert not any(b"PGPASSWORD" in names for _, names in watch.environments)
        assert all(PG_PASSWORD_ENV.encode() not in names for _, names in watch.environments)  # not inherited
        assert watch.modes == {0o600}
        assert not any(pg_server.password in text for text in texts_of(backup, log, caplog))
    finally:
        pg_server.drop_database(destination)


def test_it_keeps_the_mariadb_password_out_of_dump_and_restore_tools(
    mariadb_server: MariaDBServer,
    local_storage: Storage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(mysql.PASSWORD_ENV, mariadb_server.password)
    source = fill_sample(mariadb_server, unique_name("leak_source"), rows=2000)
    destination = unique_name("leak_restored")
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [mariadb_server.password], wanted=TOOLS, files=lambda: (tmp_path / "scratch").glob("mysql-*/*.cnf")
    ) as watch:
        backup = services.run_backup(mysql.make_target(mariadb_server, "mariadb", source, local_storage))
        log = restore_backup(backup, mysql.make_target(mariadb_server, "mariadb", destination))
    try:
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert {"mariadb-dump", "mariadb"} <= programs(watch), programs(watch)
        restores = [line.split(b"\0") for line in watch.seen if line.startswith(b"mariadb\0")]
        connecting = [argv for argv in restores if any(arg.startswith(b"--database=") for arg in argv)]
        assert connecting and all(argv[1].startswith(b"--defaults-extra-file=") for argv in connecting)
        assert watch.leaked == [] and watch.env_leaked == []
        assert all(b"MYSQL_PWD" not in names for _, names in watch.environments)
        assert all(mysql.PASSWORD_ENV.encode() not in names for _, names in watch.environments)
        assert watch.modes == {0o600}
        assert not any(mariadb_server.password in text for text in texts_of(backup, log, caplog))
    finally:
        mariadb_server.drop_database(source)
        if mariadb_server.database_exists(destination):
            mariadb_server.drop_database(destination)


def test_it_keeps_the_clickhouse_password_out_of_dump_and_restore_tools(
    clickhouse_server: ClickHouseServer,
    local_storage: Storage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(clickhouse.PASSWORD_ENV, clickhouse_server.password)
    source = clickhouse.fill_sample(clickhouse_server, unique_name("leak_source"), rows=2000)
    destination = unique_name("leak_restored")
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [clickhouse_server.password],
        wanted=TOOLS,
        files=lambda: (tmp_path / "scratch").glob("clickhouse-*/*.xml"),
    ) as watch:
        backup = services.run_backup(clickhouse.make_target(clickhouse_server, source, local_storage))
        log = restore_backup(backup, clickhouse.make_target(clickhouse_server, destination))
    try:
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        inserts = [line.split(b"\0") for line in watch.seen if b"INSERT INTO" in line]
        assert inserts, "the sampler must have seen clickhouse-client restoring a table"
        assert all(argv[1].startswith(b"--config-file=") for argv in inserts)
        assert watch.leaked == [] and watch.env_leaked == []
        assert all(clickhouse.PASSWORD_ENV.encode() not in names for _, names in watch.environments)
        assert watch.modes == {0o600}
        assert not any(clickhouse_server.password in text for text in texts_of(backup, log, caplog))
    finally:
        clickhouse_server.drop_database(source)
        if clickhouse_server.database_exists(destination):
            clickhouse_server.drop_database(destination)


def test_it_keeps_secrets_out_of_the_redis_scratch_servers_environment(
    redis_source: RedisServer,
    redis_destination: RedisServer,
    local_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(redis.SOURCE_ENV, redis_source.password)
    monkeypatch.setenv(redis.DESTINATION_ENV, redis_destination.password)
    secrets = [redis_source.password, redis_destination.password]
    with ProcessWatch(secrets, wanted=runs("redis-cli", "redis-server", "redis-check-rdb")) as watch:
        backup = services.run_backup(redis.make_target(redis_source, redis.SOURCE_ENV, local_storage))
        outcome = services.verify_backup(backup, deep=True)  # a scratch redis-server loads the snapshot
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert outcome.ok, outcome.messages
    assert {"redis-cli", "redis-server"} <= programs(watch)
    assert watch.leaked == []
    assert any(b"REDISCLI_AUTH" in names for program, names in watch.environments if program == b"redis-cli")
    assert watch.env_leaked == []


# -- a failing run on a real worker --------------------------------------------------------------------

LEAK_ENV = "LEAK_TEST_PG_PASSWORD"


@dataclass
class LoudSite(Site):
    """A site whose processes log everything (DEBUG) and hold the password reference's value."""

    password: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "LOG_LEVEL": "DEBUG", LEAK_ENV: self.password}


def test_it_leaves_no_password_in_the_worker_and_beat_logs_of_failing_runs(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    site = LoudSite(home=tmp_path / "site", broker_url="filesystem://", password=pg_server.password)
    site.home.mkdir()
    try:
        site.manage("migrate", "--noinput", "-v0")
        targets = {
            name: {
                "engine": "postgresql",
                "host": pg_server.host,
                "port": pg_server.port,
                "user": pg_server.user,
                "password": "${" + LEAK_ENV + "}",
                "database": database,
                "options": {"connect_timeout": 5},
                "storages": ["local"],
            }
            for name, database in (("pg-missing", "no_such_database"), ("pg-denied", "postgres"))
        }
        targets["pg-denied"]["user"] = "no_such_role"  # the server refuses the login
        write_config(site.home / "site.toml", storage_dir=site.home / "backups", targets=targets)
        site.manage("backup_config", "apply", "--skip-probes", str(site.home / "site.toml"))
        site.worker()
        site.beat("beat")
        queue = (
            "from backups.models import Target; from backups.tasks import run_target_backup; "
            "[run_target_backup.delay(pk) for pk in Target.objects.values_list('pk', flat=True)]"
        )
        site.manage("shell", "-c", queue)

        def finished() -> list[tuple[str, str]] | None:
            with sqlite3.connect(site.catalog, timeout=30) as db:
                rows = db.execute("SELECT status, error_message FROM backup_history").fetchall()
            db.close()
            done = [row for row in rows if row[0] not in ("pending", "running")]
            return done if len(done) == 2 else None

        rows = wait_until(finished, "both runs to fail on the worker", 120)
    finally:
        site.stop_all()
    assert [status for status, _ in rows] == ["failed", "failed"], rows
    messages = " | ".join(message for _, message in rows)
    assert "does not exist" in messages and "no_such_role" in messages
    assert "failed" in site.log("worker") and "DEBUG" in site.log("worker")  # a talkative log, scanned
    assert site.log("beat")
    secret = pg_server.password.encode()
    holding = [
        str(path.relative_to(site.home))
        for path in site.home.rglob("*")
        if path.is_file() and secret in path.read_bytes()
    ]
    assert holding == []  # worker.log, beat.log, the catalog, the broker's messages, the alerts ...


def identity_of_key_file(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))


def test_it_keeps_the_age_identity_out_of_tools_logs_steps_and_the_catalog(
    pg_server: PostgresServer,
    local_storage: Storage,
    tmp_path: Path,
    settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    settings.BACKUPSITE_SECRETS_DIRS = [str(keys_dir)]
    services.generate_key("leak", keys_dir / "leak.key")
    identity = identity_of_key_file(keys_dir / "leak.key")
    source = pg_server.create_database(unique_name("age_leak_source"))
    pg_server.execute(
        source, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g"
    )
    destination = unique_name("age_leak_restored")
    caplog.set_level(logging.DEBUG)
    target = pg_target(pg_server, "age-leak-source", source, local_storage)
    target.encryption = "leak"
    target.save()
    with ProcessWatch([identity], wanted=TOOLS) as watch:
        backup = services.run_backup(target)
        outcome = services.verify_backup(backup, deep=True)  # decrypts: the identity is read here
        log = restore_backup(backup, pg_target(pg_server, "age-leak-destination", destination, local_storage))
    try:
        assert backup.status == BackupStatus.SUCCESS and backup.encryption == "age", backup.error_message
        assert outcome.ok, outcome.messages
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert {"pg_dump", "pg_restore"} <= programs(watch), programs(watch)
        assert watch.leaked == [] and watch.env_leaked == []  # no command line, no tool's environment
        assert not any(identity in text for text in texts_of(backup, log, caplog))
        manifest = Path(local_storage.options["path"]) / (backup.file_path + services.MANIFEST_SUFFIX)
        assert "age1" in manifest.read_text() and identity not in manifest.read_text()
        catalog = io.StringIO()
        call_command("dumpdata", stdout=catalog)  # every row of every table
        assert identity not in catalog.getvalue()
        assert backup.encryption_recipients and identity not in json.dumps(backup.encryption_recipients)
    finally:
        pg_server.drop_database(destination)


def test_it_leaves_no_age_identity_in_the_worker_log_broker_or_catalog_of_an_encrypted_run(
    tmp_path: Path, sqlite_source: Path
) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    site = LoudSite(
        home=tmp_path / "site",
        broker_url="filesystem://",
        extra_env={"BACKUPSITE_SECRETS_DIRS": str(keys_dir)},
    )
    site.home.mkdir()
    try:
        site.manage("migrate", "--noinput", "-v0")
        site.manage(
            "shell",
            "-c",
            "from pathlib import Path; from backups import services; from backups.models import Storage, Target; "
            f"services.generate_key('leak', Path({str(keys_dir / 'leak.key')!r})); "
            f"s = Storage.objects.create(name='local', kind='local', options={{'path': {str(tmp_path / 'stored')!r}}}); "
            f"t = Target.objects.create(name='app', engine='sqlite', database={str(sqlite_source)!r}, encryption='leak'); "
            "t.storages.add(s)",
        )
        identity = identity_of_key_file(keys_dir / "leak.key")
        site.worker()
        site.manage("shell", "-c", "from backups.tasks import run_target_backup; run_target_backup.delay(1)")

        def finished() -> tuple[str, str, str] | None:
            with sqlite3.connect(site.catalog, timeout=30) as db:
                row = db.execute("SELECT status, error_message, encryption FROM backup_history").fetchone()
            db.close()
            return row if row and row[0] not in ("pending", "running") else None

        status, error, encryption = wait_until(finished, "the encrypted run to end on the worker", 120)
        assert (status, encryption) == ("success", "age"), error
        site.manage("backup_verify", "--id", "1", "--deep")  # decrypts in another process, also logged
        assert "DEBUG" in site.log("worker")  # a talkative log, scanned
    finally:
        site.stop_all()
    holding = [
        str(path.relative_to(tmp_path))
        for path in [*site.home.rglob("*"), *(tmp_path / "stored").rglob("*")]
        if path.is_file() and identity.encode() in path.read_bytes()
    ]
    assert holding == []  # the worker's log, the broker's task messages, the catalog, the stored files
