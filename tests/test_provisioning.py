"""Test servers for developers (restores/provisioning.py, manage.py backup_provision): a backup
restored into a new database on a real sandbox server, masked before its own user exists, reached
with the generated credentials, limited to that database, dropped on demand and after its TTL."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import MySQLdb  # type: ignore[import-untyped]
import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backups import services
from backups.models import AuditEvent, Backup, BackupStatus, Storage, Target
from restores.models import Provision, RestoreLog
from restores.provisioning import ProvisionRefused, drop_expired, drop_provision, provision
from tests.conftest import pg_target, server_target, unique_name
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.django_db(transaction=True)

MASK = "UPDATE customers SET email = 'user' || id || '@masked.invalid';"
MARIADB_PASSWORD_ENV = "TEST_MARIADB_PASSWORD"


def backed_up(target: Target) -> Backup:
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    return backup


def credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "scheme": parts.scheme,
        "host": parts.hostname,
        "port": parts.port,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")),
    }


def pg_login(url: str, database: str | None = None) -> psycopg.Connection[Any]:
    c = credentials(url)
    return psycopg.connect(
        host=c["host"], port=c["port"], user=c["user"], password=c["password"],
        dbname=database or c["database"], autocommit=True, connect_timeout=10,
    )  # fmt: skip


def mysql_login(url: str, database: str | None = None) -> Any:
    c = credentials(url)
    params = {"host": c["host"], "port": c["port"], "user": c["user"], "password": c["password"]}
    return MySQLdb.connect(**params, database=database or c["database"], autocommit=True)


def catalog_text() -> str:
    out = io.StringIO()
    call_command("dumpdata", "restores", "backups", stdout=out)
    return out.getvalue()


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def pg_source(pg_server: PostgresServer) -> Iterator[str]:
    database = pg_server.create_database(unique_name("prov"))
    pg_server.execute(
        database,
        "CREATE TABLE customers (id serial PRIMARY KEY, email text);"
        "INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 40) g;",
    )
    yield database
    pg_server.drop_database(database)


@pytest.fixture
def pg_pair(
    pg_server: PostgresServer, local_storage: Storage, pg_source: str
) -> Iterator[tuple[Backup, Target]]:
    source = pg_target(pg_server, unique_name("shop").replace("_", "-"), pg_source, local_storage)
    sandbox = pg_target(pg_server, unique_name("sandbox").replace("_", "-"), "postgres")
    yield backed_up(source), sandbox
    for row in Provision.objects.filter(dropped_at__isnull=True):
        with contextlib.suppress(Exception):
            drop_provision(row, by="test")


def test_it_provisions_a_postgresql_copy_reachable_only_with_its_own_credentials(
    pg_server: PostgresServer, pg_pair: tuple[Backup, Target], caplog: pytest.LogCaptureFixture
) -> None:
    backup, sandbox = pg_pair
    caplog.set_level(logging.DEBUG)

    no_user_yet = (
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname LIKE 'shop\\_%') "
        "THEN RAISE EXCEPTION 'a user exists before masking'; END IF; END $$;"
    )
    row, url = provision(
        backup, sandbox, ttl=timedelta(hours=24), mask_sql=no_user_yet + MASK, initiated_by="alice"
    )

    c = credentials(url)
    assert c["scheme"] == "postgresql" and c["database"] == row.database and c["user"] == row.username
    day = timezone.localdate().strftime("%Y%m%d")
    assert row.database.startswith("shop_") and f"_{day}_" in row.database and len(row.database) <= 63
    with contextlib.closing(pg_login(url)) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM customers ORDER BY id").fetchall()]
        assert len(emails) == 40
        assert all(email.endswith("@masked.invalid") for email in emails)  # masked before access
        conn.execute("INSERT INTO customers (email) VALUES ('dev@masked.invalid')")  # their copy: writable
    # Nothing else on the sandbox: PostgreSQL lets PUBLIC connect to the databases it did not
    # lock (the source here, the maintenance one), but the user may read nothing there.
    with (
        contextlib.closing(pg_login(url, backup.target.database)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT email FROM customers")
    pg_server.execute("postgres", "CREATE TABLE IF NOT EXISTS provision_secret_probe (x int)")
    with (
        contextlib.closing(pg_login(url, "postgres")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT * FROM provision_secret_probe")
    log = RestoreLog.objects.get(pk=row.restore_id)
    assert (log.restore_type, log.status, log.initiated_by, log.destination_id) == (
        "provision", "success", "alice", sandbox.pk,
    )  # fmt: skip
    assert row.masked and row.expires_at > timezone.now() + timedelta(hours=23)
    event = AuditEvent.objects.get(action="restore.provision")
    assert event.username == "alice" and event.outcome == "success"
    password = c["password"]
    assert password not in catalog_text()
    assert not any(password in json.dumps(e.details) for e in AuditEvent.objects.all())
    assert password not in caplog.text


def test_it_lists_and_drops_a_copy_from_the_command_printing_the_password_once(
    pg_server: PostgresServer, pg_pair: tuple[Backup, Target], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    backup, sandbox = pg_pair
    mask = tmp_path / "mask.sql"
    mask.write_text(MASK, encoding="utf-8")
    caplog.set_level(logging.DEBUG)

    call_command(
        "backup_provision", "--id", str(backup.pk), "--to", sandbox.name, "--ttl", "7d", "--mask", str(mask)
    )

    out, err = capsys.readouterr()
    url = next(line for line in out.splitlines() if line.startswith("postgresql://"))
    password = credentials(url)["password"]
    assert out.count(password) == 1 and "shown only now" in err and password not in err
    assert password not in caplog.text and password not in catalog_text()
    row = Provision.objects.get()
    assert row.expires_at > timezone.now() + timedelta(days=6)

    call_command("backup_provision", "--list")
    listed = capsys.readouterr().out
    assert row.database in listed and sandbox.name in listed and "active" in listed and "in 6 d" in listed
    call_command("backup_provision", "--list", "--json")
    assert json.loads(capsys.readouterr().out)[0]["name"] == row.database

    call_command("backup_provision", "--drop", row.database)
    assert "dropped" in capsys.readouterr().out
    assert not pg_server.database_exists(row.database)
    assert not pg_server.execute("postgres", "SELECT 1 FROM pg_roles WHERE rolname = %s", (row.username,))
    with pytest.raises(psycopg.OperationalError):
        pg_login(url)
    row.refresh_from_db()
    assert row.dropped_at is not None
    call_command("backup_provision", "--drop", row.database)  # again: nothing left, no error
    call_command("backup_provision", "--list")
    assert "no provisioned copies" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action="restore.provision_drop", outcome="success").exists()


def test_it_drops_expired_copies_and_keeps_the_others(
    pg_server: PostgresServer, pg_pair: tuple[Backup, Target]
) -> None:
    backup, sandbox = pg_pair
    old, _ = provision(backup, sandbox, ttl=timedelta(hours=1), initiated_by="bob")
    new, new_url = provision(backup, sandbox, ttl=timedelta(hours=1), initiated_by="bob")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        pg_login(new_url, old.database)  # another copy's database is closed to this user
    Provision.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    from restores.tasks import drop_expired_provisions

    assert drop_expired_provisions() == 1
    old.refresh_from_db()
    new.refresh_from_db()
    with contextlib.closing(pg_login(new_url)) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (40,)
    assert old.dropped_at is not None and not pg_server.database_exists(old.database)
    assert new.dropped_at is None and pg_server.database_exists(new.database)
    assert drop_expired() == 0

    # A copy whose process died mid-restore: kept while its restore runs, dropped once the
    # reaper ended it.
    Provision.objects.filter(pk=new.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    RestoreLog.objects.filter(pk=new.restore_id).update(status="running")
    assert drop_expired() == 0 and pg_server.database_exists(new.database)
    RestoreLog.objects.filter(pk=new.restore_id).update(status="failed")
    assert drop_expired() == 1 and not pg_server.database_exists(new.database)


def test_it_keeps_a_copy_listed_with_the_error_when_the_sandbox_is_unreachable(
    pg_server: PostgresServer, pg_pair: tuple[Backup, Target]
) -> None:
    backup, sandbox = pg_pair
    row, _ = provision(backup, sandbox, ttl=timedelta(hours=1), initiated_by="bob")
    Target.objects.filter(pk=sandbox.pk).update(port=1)  # nothing listens there
    Provision.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    assert drop_expired() == 0
    row.refresh_from_db()
    assert row.dropped_at is None and row.drop_error
    Target.objects.filter(pk=sandbox.pk).update(port=pg_server.port)
    assert drop_expired() == 1


def test_it_drops_the_new_database_when_the_masking_script_fails(
    pg_server: PostgresServer, pg_pair: tuple[Backup, Target]
) -> None:
    backup, sandbox = pg_pair
    with pytest.raises(services.ServiceError, match="no_such_table"):
        provision(
            backup,
            sandbox,
            ttl=timedelta(hours=1),
            mask_sql="UPDATE no_such_table SET x = 1",
            initiated_by="a",
        )
    log = RestoreLog.objects.get(restore_type="provision")
    assert log.status == "failed" and "were dropped again" in log.error_message
    name = log.notes.split()[3]
    assert not pg_server.database_exists(name)
    assert Provision.objects.get().dropped_at is not None  # listed no more
    assert AuditEvent.objects.get(action="restore.provision").outcome == "failure"


def test_it_refuses_a_sqlite_backup_and_a_sandbox_of_another_engine(
    sqlite_target: Target, pg_server: PostgresServer, pg_pair: tuple[Backup, Target]
) -> None:
    sqlite_backup = backed_up(sqlite_target)
    with pytest.raises(ProvisionRefused, match="PostgreSQL and MySQL/MariaDB only"):
        provision(sqlite_backup, sqlite_target, ttl=timedelta(hours=1), initiated_by="a")
    backup, _ = pg_pair
    with pytest.raises(ProvisionRefused, match="Choose a sandbox of the same engine"):
        provision(backup, sqlite_target, ttl=timedelta(hours=1), initiated_by="a")
    with pytest.raises(CommandError, match="PostgreSQL and MySQL/MariaDB only") as caught:
        call_command("backup_provision", "--id", str(sqlite_backup.pk), "--to", sqlite_target.name)
    assert caught.value.returncode == 2
    assert not RestoreLog.objects.filter(restore_type="provision").exists()


def test_it_exits_with_usage_errors_from_the_command(
    manage: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    assert manage("backup_provision", "--list").returncode == 0
    missing = manage("backup_provision", "--id", "1", "--to", "sandbox")
    assert missing.returncode == 2 and "no backup with id 1" in missing.stderr
    bad_ttl = manage("backup_provision", "--id", "1", "--to", "sandbox", "--ttl", "31d")
    assert bad_ttl.returncode == 2 and "--ttl" in bad_ttl.stderr
    assert manage("backup_provision", "--drop", "nope").returncode == 2
    assert manage("backup_provision").returncode == 2


def test_it_schedules_the_ttl_sweep_on_the_watch_queue(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["backupsite-provision-ttl"]
    assert entry["task"] == "restores.tasks.drop_expired_provisions" and entry["schedule"] == 600
    assert settings.CELERY_TASK_ROUTES[entry["task"]] == {"queue": "watch"}


# -- MariaDB --------------------------------------------------------------------------------------


@pytest.fixture
def maria_pair(
    mariadb_server: MariaDBServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Backup, Target]]:
    monkeypatch.setenv(MARIADB_PASSWORD_ENV, mariadb_server.password)
    database = mariadb_server.create_database(unique_name("prov"))
    mariadb_server.execute(database, "CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(100))")
    mariadb_server.execute(
        database, "INSERT INTO customers SELECT seq, CONCAT('c', seq, '@example.com') FROM seq_1_to_30"
    )
    source = server_target("mariadb", mariadb_server, MARIADB_PASSWORD_ENV, local_storage, database=database)
    sandbox = server_target(
        "mariadb", mariadb_server, MARIADB_PASSWORD_ENV, prefix="sandbox", database="mysql"
    )
    yield backed_up(source), sandbox
    for row in Provision.objects.filter(dropped_at__isnull=True):
        with contextlib.suppress(Exception):
            drop_provision(row, by="test")
    mariadb_server.drop_database(database)


def test_it_provisions_and_drops_a_mariadb_copy(
    mariadb_server: MariaDBServer, maria_pair: tuple[Backup, Target]
) -> None:
    backup, sandbox = maria_pair
    mask = "UPDATE customers SET email = CONCAT('user', id, '@masked.invalid');"

    row, url = provision(backup, sandbox, ttl=timedelta(hours=2), mask_sql=mask, initiated_by="carol")

    c = credentials(url)
    assert c["scheme"] == "mysql" and len(c["user"]) <= 32 and c["database"] == row.database
    with contextlib.closing(mysql_login(url)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT email FROM customers ORDER BY id")
        emails = [r[0] for r in cursor.fetchall()]
        assert len(emails) == 30 and all(e.endswith("@masked.invalid") for e in emails)
        cursor.execute("INSERT INTO customers VALUES (999, 'dev@masked.invalid')")
    with pytest.raises(MySQLdb.OperationalError, match="Access denied"):
        mysql_login(url, backup.target.database)
    assert c["password"] not in catalog_text()

    drop_provision(row, by="carol")
    assert not mariadb_server.database_exists(row.database)
    assert not mariadb_server.execute(None, "SELECT 1 FROM mysql.user WHERE User = %s", (row.username,))
    with pytest.raises(MySQLdb.OperationalError):
        mysql_login(url)


# -- The "Provision…" page ------------------------------------------------------------------------


def web_user(name: str, permissions: tuple[str, ...] = ()) -> Client:
    account = User.objects.create_user(name, password="x", is_staff=True)
    account.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(account)
    return client


def test_it_provisions_from_the_backup_page_showing_the_connection_string_once(
    pg_server: PostgresServer, pg_pair: tuple[Backup, Target]
) -> None:
    backup, sandbox = pg_pair
    alice = web_user("alice", ("restore_backup", "view_restorelog", "view_backup"))
    page = alice.get(reverse("admin:backups_backup_change", args=[backup.pk])).content.decode()
    url = reverse("restores:provision", args=[backup.pk])
    assert f'href="{url}">Provision…' in page
    form = alice.get(url).content.decode()
    assert sandbox.name in form and 'name="ttl"' in form

    answer = alice.post(url, {"sandbox": sandbox.pk, "ttl": "8h"})

    assert answer.status_code == 200 and "no-store" in answer["Cache-Control"]
    text = answer.content.decode()
    row = Provision.objects.get()
    shown = next(part for part in text.split("<code") if "postgresql://" in part)
    connection_url = shown[shown.index("postgresql://") : shown.index("</code>")]
    with contextlib.closing(pg_login(connection_url.replace("&amp;", "&"))) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (40,)
    assert row.created_by == "web:alice" and "shown only once" in text
    assert credentials(connection_url)["password"] not in catalog_text()
    refused = alice.post(url, {"sandbox": sandbox.pk, "ttl": "60d"}).content.decode()
    assert "ttl: 60d is out of range" in refused and Provision.objects.count() == 1


def test_it_refuses_the_page_to_users_who_may_not_restore(pg_pair: tuple[Backup, Target]) -> None:
    backup, sandbox = pg_pair
    bob = web_user("bob", ("view_backup",))
    url = reverse("restores:provision", args=[backup.pk])
    assert (
        "Provision…" not in bob.get(reverse("admin:backups_backup_change", args=[backup.pk])).content.decode()
    )

    assert bob.get(url).status_code == 403
    assert bob.post(url, {"sandbox": sandbox.pk, "ttl": "8h"}).status_code == 403

    assert not Provision.objects.exists()
    assert (
        AuditEvent.objects.filter(action="restore.provision", outcome="refused", username="bob").count() == 2
    )
