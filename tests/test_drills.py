"""Restore drills (backups/drills.py, manage.py backup_drill): a backup restored into a scratch
copy, checked and dropped, against real servers; defects a drill must catch; alerts; a drill
killed with SIGKILL whose scratch database the reaper drops."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from backups import services
from backups.models import (
    AuditEvent,
    Backup,
    BackupStatus,
    Drill,
    DrillStatus,
    Notification,
    Notifier,
    Proof,
    Storage,
    Target,
)
from tests.conftest import PG_PASSWORD_ENV, REPO, pg_target, server_target, unique_name
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True)


def backed_up(target: Target) -> Backup:
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    return backup


def flip_bytes(storage_dir: Path, backup: Backup) -> None:
    path = storage_dir / backup.copies.get().path
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


@pytest.fixture
def alerts(tmp_path: Path) -> Path:
    """A default channel (an audit file) that takes the drill events."""
    path = tmp_path / "alerts.jsonl"
    Notifier.objects.create(
        name="ops",
        kind="audit",
        options={"path": str(path)},
        is_default=True,
        events=["drill_failed", "drill_recovered"],
    )
    return path


def scratch_dirs(settings: Any) -> list[Path]:
    root = Path(settings.BACKUPSITE_TMP)
    return sorted(root.glob("drill-*")) if root.exists() else []


# -- SQLite ---------------------------------------------------------------------------------------


def test_it_drills_a_sqlite_backup_into_a_scratch_directory_and_records_proof_and_timings(
    sqlite_target: Target, settings: Any
) -> None:
    sqlite_target.drill_checks = ["select count(*) = 200 from people", "select count(*) > 0 from audit"]
    sqlite_target.save()
    backup = backed_up(sqlite_target)

    drill = services.run_drill(sqlite_target, initiated_by="tester")

    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
    assert drill.backup_id == backup.pk
    assert drill.restore_seconds is not None and drill.restore_seconds > 0
    assert drill.duration_seconds is not None and drill.duration_seconds >= drill.restore_seconds
    assert drill.data_age_seconds is not None and drill.data_age_seconds >= 0
    assert drill.scratch_name.startswith(str(settings.BACKUPSITE_TMP))
    names = [check["name"] for check in drill.checks]
    assert "tables" in names and "sql: select count(*) = 200 from people" in names
    assert all(check["ok"] for check in drill.checks)
    backup.refresh_from_db()
    assert backup.proof == Proof.DRILLED and backup.proof_at is not None
    assert scratch_dirs(settings) == []
    event = AuditEvent.objects.get(action="backup.drill")
    assert event.outcome == "success" and event.details["drill"] == drill.pk


def test_it_drills_an_encrypted_backup_through_this_hosts_identity_and_names_a_missing_key(
    sqlite_target: Target, settings: Any, key_dir: Path
) -> None:
    services.generate_key("prod", key_dir / "prod.key")
    sqlite_target.encryption = "prod"
    sqlite_target.save()
    backup = backed_up(sqlite_target)
    assert backup.encryption == "age"

    drill = services.run_drill(sqlite_target)
    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)

    # Without the identity on this host the drill fails before restoring, naming the key.
    (key_dir / "prod.key").unlink()
    drill = services.run_drill(sqlite_target)
    assert drill.status == DrillStatus.FAILED
    assert "prod" in drill.error_message, drill.error_message
    assert "AGE-SECRET-KEY" not in drill.error_message
    assert scratch_dirs(settings) == []
    backup.refresh_from_db()
    assert backup.proof == Proof.DRILLED  # the failed drill lowers nothing


def test_it_fails_a_sqlite_drill_on_a_false_sql_check_and_alerts_then_recovers_once(
    sqlite_target: Target, settings: Any, alerts: Path
) -> None:
    backup = backed_up(sqlite_target)
    sqlite_target.drill_checks = ["select count(*) = 999 from people", "select no_such_column from people"]
    sqlite_target.save()

    failed = services.run_drill(sqlite_target)

    assert failed.status == DrillStatus.FAILED
    bad = {check["name"]: check for check in failed.checks if not check["ok"]}
    assert bad["sql: select count(*) = 999 from people"]["actual"] == "0"
    assert "no such column" in bad["sql: select no_such_column from people"]["actual"]
    assert "2 check(s) failed" in failed.error_message
    assert scratch_dirs(settings) == []
    assert Backup.objects.get(pk=backup.pk).proof != Proof.DRILLED
    assert Notification.objects.filter(event="drill_failed").count() == 1

    sqlite_target.drill_checks = ["select count(*) = 200 from people"]
    sqlite_target.save()
    assert services.run_drill(sqlite_target).status == DrillStatus.PASSED
    assert services.run_drill(sqlite_target).status == DrillStatus.PASSED
    assert Notification.objects.filter(event="drill_recovered").count() == 1
    assert list(Notification.objects.order_by("id").values_list("event", flat=True)) == [
        "drill_failed",
        "drill_recovered",
    ]


def test_it_stops_a_sql_check_that_runs_past_its_timeout(sqlite_target: Target, settings: Any) -> None:
    settings.BACKUPSITE_DRILL_CHECK_SECONDS = 0.5
    backed_up(sqlite_target)
    sqlite_target.drill_checks = [
        "with recursive n(i) as (select 1 union all select i + 1 from n) select count(*) > 0 from n"
    ]
    sqlite_target.save()

    started = time.monotonic()
    drill = services.run_drill(sqlite_target)

    assert time.monotonic() - started < 30
    assert drill.status == DrillStatus.FAILED
    assert "longer than 0.5 s" in drill.checks[-1]["actual"]


def test_it_fails_a_drill_of_a_tampered_copy_before_restoring(
    sqlite_target: Target, storage_dir: Path, settings: Any, alerts: Path
) -> None:
    backup = backed_up(sqlite_target)
    flip_bytes(storage_dir, backup)

    drill = services.run_drill(sqlite_target, backup=backup)

    assert drill.status == DrillStatus.FAILED
    assert "is damaged; nothing was restored" in drill.error_message
    assert "checksum mismatch" in drill.error_message
    assert drill.restore_seconds is None
    assert [check["name"] for check in drill.checks] == [f"copy {backup.pk} on local"]
    assert scratch_dirs(settings) == []
    assert Notification.objects.filter(event="drill_failed").count() == 1


def test_it_records_a_failed_drill_when_the_target_has_no_successful_backup(sqlite_target: Target) -> None:
    drill = services.run_drill(sqlite_target)

    assert drill.status == DrillStatus.FAILED
    assert drill.backup is None
    assert "has no successful backup to drill" in drill.error_message


def test_it_picks_one_of_the_last_n_successes(sqlite_target: Target) -> None:
    backups = [backed_up(sqlite_target) for _ in range(3)]
    sqlite_target.drill_from_last = 2
    sqlite_target.save()

    picked = {services.pick_drill_backup(sqlite_target).pk for _ in range(40)}  # type: ignore[union-attr]

    assert picked == {backups[1].pk, backups[2].pk}
    sqlite_target.drill_from_last = 1
    assert services.pick_drill_backup(sqlite_target) == backups[2]


# -- files ----------------------------------------------------------------------------------------


def test_it_drills_a_files_backup_against_the_manifests_file_index(
    files_target: Target, settings: Any
) -> None:
    backed_up(files_target)

    drill = services.run_drill(files_target)

    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
    index = next(check for check in drill.checks if check["name"] == "file index")
    assert "SHA-256" in index["actual"] and index["expected"].endswith("entries")
    assert scratch_dirs(settings) == []


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def pg_source(pg_server: PostgresServer) -> Iterator[str]:
    database = pg_server.create_database(unique_name("drill"))
    pg_server.execute(
        database,
        "CREATE TABLE orders (id serial PRIMARY KEY, total numeric);"
        "INSERT INTO orders (total) SELECT g FROM generate_series(1, 500) g;"
        "CREATE TABLE customers (id serial PRIMARY KEY, email text);"
        "INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 40) g;",
    )
    yield database
    pg_server.drop_database(database)


def scratch_databases(server: PostgresServer) -> list[str]:
    rows = server.execute(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'backupsite_drill_%'"
    )
    return [row[0] for row in rows]


def pg_drill_target(server: PostgresServer, storage: Storage, database: str, **fields: Any) -> Target:
    sandbox = pg_target(server, unique_name("sandbox").replace("_", "-"), "postgres")
    return pg_target(
        server, unique_name("src").replace("_", "-"), database, storage, sandbox=sandbox, **fields
    )


def test_it_drills_a_postgresql_backup_into_a_scratch_database_on_the_sandbox(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str
) -> None:
    target = pg_drill_target(
        pg_server, local_storage, pg_source, drill_checks=["select count(*) = 500 from orders"]
    )
    backup = backed_up(target)

    drill = services.run_drill(target)

    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
    assert drill.scratch_name.startswith("backupsite_drill_")
    rows = {check["name"]: check for check in drill.checks}
    assert rows["rows public.orders"] == {
        "name": "rows public.orders",
        "expected": 500,
        "actual": 500,
        "ok": True,
    }
    assert rows["rows public.customers"]["actual"] == 40
    assert rows["sql: select count(*) = 500 from orders"]["actual"] == "true"
    assert drill.restore_seconds is not None and drill.restore_seconds > 0
    backup.refresh_from_db()
    assert backup.proof == Proof.DRILLED
    assert scratch_databases(pg_server) == []


def test_it_catches_an_altered_row_count_and_a_failing_check_on_postgresql(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str, alerts: Path, settings: Any
) -> None:
    target = pg_drill_target(pg_server, local_storage, pg_source)
    backup = backed_up(target)
    Backup.objects.filter(pk=backup.pk).update(
        engine_info={
            **backup.engine_info,
            "row_counts": {**backup.engine_info["row_counts"], "public.orders": 499},
        }
    )
    target.drill_checks = ["select count(*) = 0 from customers", "select pg_sleep(5) is not null"]
    target.save()

    settings.BACKUPSITE_DRILL_CHECK_SECONDS = 1

    drill = services.run_drill(target)

    assert drill.status == DrillStatus.FAILED
    bad = {check["name"]: check for check in drill.checks if not check["ok"]}
    assert bad["rows public.orders"]["expected"] == 499 and bad["rows public.orders"]["actual"] == 500
    assert bad["sql: select count(*) = 0 from customers"]["actual"] == "false"
    assert "longer than 1 s" in bad["sql: select pg_sleep(5) is not null"]["actual"]
    assert "rows public.customers" not in bad
    assert scratch_databases(pg_server) == []
    assert Notification.objects.filter(event="drill_failed").count() == 1

    Backup.objects.filter(pk=backup.pk).update(engine_info=backup.engine_info)
    target.drill_checks = []
    target.save()
    assert services.run_drill(target).status == DrillStatus.PASSED
    assert Notification.objects.filter(event="drill_recovered").count() == 1


def test_it_fails_a_postgresql_drill_of_a_tampered_copy_without_creating_a_database(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str, storage_dir: Path
) -> None:
    target = pg_drill_target(pg_server, local_storage, pg_source)
    backup = backed_up(target)
    flip_bytes(storage_dir, backup)

    drill = services.run_drill(target)

    assert drill.status == DrillStatus.FAILED
    assert "nothing was restored" in drill.error_message
    assert scratch_databases(pg_server) == []


def test_it_needs_a_sandbox_of_the_same_engine_for_a_postgresql_drill(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str, sqlite_target: Target
) -> None:
    target = pg_target(pg_server, unique_name("nosandbox").replace("_", "-"), pg_source, local_storage)
    backed_up(target)

    drill = services.run_drill(target)
    assert drill.status == DrillStatus.FAILED
    assert f"target {target.name} has no sandbox" in drill.error_message

    target.sandbox = sqlite_target
    target.save()
    drill = services.run_drill(target)
    assert drill.status == DrillStatus.FAILED
    assert drill.error_message.startswith("sandbox: sandbox app-db uses the sqlite engine")


def test_it_refuses_a_second_drill_into_a_busy_sandbox(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str
) -> None:
    target = pg_drill_target(pg_server, local_storage, pg_source)
    backed_up(target)
    running = Drill.objects.create(target=target, sandbox=target.sandbox, status=DrillStatus.RUNNING)

    with pytest.raises(
        services.DrillRefused, match=f"a drill into sandbox .* is running \\(drill {running.pk}\\)"
    ):
        services.run_drill(target)
    assert Drill.objects.count() == 1


def test_it_reaps_a_drill_whose_heartbeat_went_stale_and_drops_its_scratch_database(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str, settings: Any
) -> None:
    target = pg_drill_target(pg_server, local_storage, pg_source)
    backup = backed_up(target)
    name = f"backupsite_drill_{backup.pk}_feedbeef"
    pg_server.create_database(name)
    old = timezone.now() - timedelta(seconds=settings.BACKUPSITE_HEARTBEAT_STALE_SECONDS + 5)
    lost = Drill.objects.create(
        target=target, backup=backup, sandbox=target.sandbox, scratch_name=name,
        worker="elsewhere:1", heartbeat_at=old, started_at=old,
    )  # fmt: skip
    alive = Drill.objects.create(
        target=target, backup=backup, scratch_name="x", worker="elsewhere:2", heartbeat_at=timezone.now()
    )

    assert services.reap_lost_drills() == 1

    lost.refresh_from_db()
    assert lost.status == DrillStatus.FAILED and lost.error_message == "worker lost while drilling"
    assert scratch_databases(pg_server) == []
    assert Drill.objects.get(pk=alive.pk).status == DrillStatus.RUNNING


# -- the command ----------------------------------------------------------------------------------


def test_it_drills_from_the_command_with_exit_codes_and_json(
    manage: Callable[..., subprocess.CompletedProcess[str]],
    toml_config: Callable[..., Path],
    sqlite_source: Path,
    storage_dir: Path,
) -> None:
    config = toml_config(
        targets={
            "app-db": {"engine": "sqlite", "database": sqlite_source, "storages": ["local"]},
            "other": {"engine": "sqlite", "database": sqlite_source, "storages": ["local"]},
        }
    )
    assert manage("backup_config", "apply", str(config)).returncode == 0
    assert manage("backup_create", "--target", "app-db").returncode == 0
    assert manage("backup_create", "--target", "other").returncode == 0

    shown = manage("backup_drill", "--target", "app-db")
    assert shown.returncode == 0, shown.stderr
    assert "passed" in shown.stdout and "restore time:" in shown.stdout and "ok   tables" in shown.stdout

    as_json = manage("backup_drill", "--target", "app-db", "--id", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    drill = json.loads(as_json.stdout)
    assert drill["status"] == "passed" and drill["backup"] == 1 and drill["initiated_by"].startswith("cli:")
    assert drill["restore_seconds"] > 0 and all(check["ok"] for check in drill["checks"])

    assert manage("backup_drill", "--target", "nope").returncode == 2
    wrong = manage("backup_drill", "--target", "app-db", "--id", "2")
    assert wrong.returncode == 2 and "belongs to target other" in wrong.stderr

    for stored in storage_dir.rglob("*"):
        if stored.is_file() and not stored.name.endswith(".json"):
            stored.write_bytes(b"not the backup")  # every stored copy damaged
    broken = manage("backup_drill", "--target", "app-db", "--id", "1", "--json")
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["status"] == "failed"


def test_it_leaves_no_scratch_database_after_a_drill_killed_with_sigkill(
    pg_server: PostgresServer,
    manage: Callable[..., subprocess.CompletedProcess[str]],
    toml_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    database = pg_server.create_database(unique_name("bigdrill"))
    env = {**os.environ, "PGPASSWORD": pg_server.password}
    subprocess.run(
        ["pgbench", "-i", "-s", "5", "-q", "-h", pg_server.host, "-p", str(pg_server.port), "-U", pg_server.user, database],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    server = {
        "engine": "postgresql",
        "host": pg_server.host,
        "port": pg_server.port,
        "user": pg_server.user,
        "password": "${" + PG_PASSWORD_ENV + "}",
    }
    config = toml_config(
        targets={
            "sandbox": {**server, "database": "postgres"},
            "big": {**server, "database": database, "storages": ["local"], "sandbox": "sandbox"},
        }
    )
    extra = {PG_PASSWORD_ENV: pg_server.password}
    applied = manage("backup_config", "apply", str(config), extra_env=extra)
    assert applied.returncode == 0, applied.stderr
    made = manage("backup_create", "--target", "big", extra_env=extra)
    assert made.returncode == 0, made.stderr
    catalog = tmp_path / "home" / "backupsite.sqlite3"

    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "backup_drill", "--target", "big"],
        cwd=REPO,
        env={
            **os.environ,
            **extra,
            "BACKUPSITE_HOME": str(tmp_path / "home"),
            "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        scratch = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            with sqlite3.connect(catalog, timeout=10) as db:
                row = db.execute("SELECT scratch_name FROM backup_drill WHERE status = 'running'").fetchone()
            if row and row[0] and row[0] in scratch_databases(pg_server):
                scratch = row[0]
                break
            time.sleep(0.05)
        assert scratch, "the drill never showed a scratch database"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert scratch in scratch_databases(pg_server)  # left behind by the killed drill

    reaped = manage(
        "shell", "-c", "from backups import services; print(services.reap_lost_drills())", extra_env=extra
    )
    assert reaped.returncode == 0, reaped.stderr
    assert reaped.stdout.strip().splitlines()[-1] == "1"
    assert scratch not in scratch_databases(pg_server)
    with sqlite3.connect(catalog) as db:
        status, message = db.execute("SELECT status, error_message FROM backup_drill").fetchone()
    assert (status, message) == ("failed", "worker lost while drilling")
    pg_server.drop_database(database)


# -- MariaDB --------------------------------------------------------------------------------------

MARIADB_PASSWORD_ENV = "TEST_MARIADB_PASSWORD"


@pytest.fixture
def mariadb_source(mariadb_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(MARIADB_PASSWORD_ENV, mariadb_server.password)
    database = mariadb_server.create_database(unique_name("drill"))
    mariadb_server.execute(
        database, "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2)) ENGINE=InnoDB"
    )
    for start in range(0, 300, 100):
        values = ", ".join(f"({i}, {i}.50)" for i in range(start, start + 100))
        mariadb_server.execute(database, f"INSERT INTO orders VALUES {values}")
    yield database
    mariadb_server.drop_database(database)


def mariadb_scratch_databases(server: Any) -> list[str]:
    return [row[0] for row in server.execute(None, "SHOW DATABASES LIKE 'backupsite\\_drill\\_%'")]


def test_it_drills_a_mariadb_backup_and_catches_an_altered_count_and_a_slow_check(
    mariadb_server: Any, local_storage: Storage, mariadb_source: str, settings: Any
) -> None:
    sandbox = server_target("mariadb", mariadb_server, MARIADB_PASSWORD_ENV, prefix="sandbox", database="")
    target = server_target(
        "mariadb", mariadb_server, MARIADB_PASSWORD_ENV, local_storage,
        database=mariadb_source, sandbox=sandbox, drill_checks=["select count(*) = 300 from orders"],
    )  # fmt: skip
    backup = backed_up(target)

    drill = services.run_drill(target)

    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
    rows = {check["name"]: check for check in drill.checks}
    assert any(name.startswith("rows ") and "orders" in name for name in rows)
    assert rows["sql: select count(*) = 300 from orders"]["actual"] == "1"
    assert Backup.objects.get(pk=backup.pk).proof == Proof.DRILLED
    assert mariadb_scratch_databases(mariadb_server) == []

    counts = dict(backup.engine_info["row_counts"])
    table = next(name for name in counts if name.endswith("orders"))
    Backup.objects.filter(pk=backup.pk).update(
        engine_info={**backup.engine_info, "row_counts": {**counts, table: 299}, "row_counts_exact": True}
    )
    settings.BACKUPSITE_DRILL_CHECK_SECONDS = 1
    target.drill_checks = ["select sleep(5) = 0"]
    target.save()

    drill = services.run_drill(target)

    assert drill.status == DrillStatus.FAILED
    bad = {check["name"]: check for check in drill.checks if not check["ok"]}
    assert bad[f"rows {table}"]["expected"] == 299 and bad[f"rows {table}"]["actual"] == 300
    assert "longer than 1 s" in bad["sql: select sleep(5) = 0"]["actual"]
    assert mariadb_scratch_databases(mariadb_server) == []


# -- ClickHouse -----------------------------------------------------------------------------------

CLICKHOUSE_PASSWORD_ENV = "TEST_CLICKHOUSE_PASSWORD"


def test_it_drills_a_clickhouse_backup_and_fails_on_a_false_check(
    clickhouse_server: Any, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLICKHOUSE_PASSWORD_ENV, clickhouse_server.password)
    database = clickhouse_server.create_database(unique_name("drill"))
    clickhouse_server.query(
        "CREATE TABLE events (id UInt64, name String) ENGINE = MergeTree ORDER BY id;"
        "INSERT INTO events SELECT number, toString(number) FROM numbers(1000);",
        database=database,
    )
    sandbox = server_target(
        "clickhouse", clickhouse_server, CLICKHOUSE_PASSWORD_ENV, prefix="sandbox", database="default"
    )
    target = server_target(
        "clickhouse", clickhouse_server, CLICKHOUSE_PASSWORD_ENV, local_storage, prefix="ch",
        database=database, sandbox=sandbox, drill_checks=["select count() = 1000 from events"],
    )  # fmt: skip
    try:
        backed_up(target)

        drill = services.run_drill(target)

        assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
        rows = {check["name"]: check for check in drill.checks}
        assert rows["sql: select count() = 1000 from events"]["actual"] == "1"
        assert any(name.startswith("rows ") and name.endswith("events") for name in rows)
        assert not clickhouse_server.database_exists(drill.scratch_name)

        target.drill_checks = ["select count() = 0 from events", "insert into events values (1, 'x')"]
        target.save()
        drill = services.run_drill(target)

        assert drill.status == DrillStatus.FAILED
        bad = {check["name"]: check for check in drill.checks if not check["ok"]}
        assert bad["sql: select count() = 0 from events"]["actual"] == "0"
        assert "readonly" in bad["sql: insert into events values (1, 'x')"]["actual"].lower()
        assert not clickhouse_server.database_exists(drill.scratch_name)
    finally:
        clickhouse_server.drop_database(database)


# -- configuration and Redis ----------------------------------------------------------------------


def test_it_drills_a_configuration_backup_into_a_scratch_directory(
    sqlite_target: Target, tmp_path: Path, settings: Any
) -> None:
    etc = tmp_path / "etc"
    (etc / "app").mkdir(parents=True)
    (etc / "app" / "main.conf").write_text("listen = 5432\n")
    (etc / "my.cnf").write_text("[mysqld]\n")
    sqlite_target.config_paths = [str(etc / "app"), str(etc / "my.cnf")]
    sqlite_target.save()
    backup = services.run_backup(sqlite_target, backup_type="configuration")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message

    drill = services.run_drill(sqlite_target, backup=backup)

    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
    files = next(check for check in drill.checks if check["name"] == "configuration files")
    assert files["expected"] == files["actual"] == 2
    assert scratch_dirs(settings) == []


def test_it_drills_a_redis_backup_through_a_scratch_server_and_refuses_sql_checks(
    redis_source: Any, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REDIS_PASSWORD", redis_source.password)
    target = server_target("redis", redis_source, "TEST_REDIS_PASSWORD", local_storage)
    backup = backed_up(target)

    drill = services.run_drill(target)

    assert drill.status == DrillStatus.PASSED, (drill.error_message, drill.checks)
    assert "a scratch redis-server loaded the same keys" in drill.checks[-1]["actual"]
    assert Backup.objects.get(pk=backup.pk).proof == Proof.DRILLED

    target.drill_checks = ["select 1"]
    target.save()
    drill = services.run_drill(target)
    assert drill.status == DrillStatus.FAILED
    assert drill.checks[-1]["actual"] == "engine redis runs no SQL checks"


def test_it_shows_drills_read_only_in_the_admin(sqlite_target: Target, admin_client: Any) -> None:
    backed_up(sqlite_target)
    drill = services.run_drill(sqlite_target)

    listing = admin_client.get("/admin/backups/drill/")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "app-db" in text and "Passed" in text and f"{len(drill.checks)}/{len(drill.checks)} passed" in text
    detail = admin_client.get(f"/admin/backups/drill/{drill.pk}/change/")
    assert detail.status_code == 200 and "restore" in detail.content.decode()
    assert admin_client.get("/admin/backups/drill/add/").status_code == 403
    assert admin_client.post(f"/admin/backups/drill/{drill.pk}/delete/").status_code == 403
