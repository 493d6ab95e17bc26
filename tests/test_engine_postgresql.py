"""The PostgreSQL engine against a real PostgreSQL 15 cluster started by the suite."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backups import services
from backups.engines import get_engine
from backups.engines.base import EngineError
from backups.engines.postgresql.engine import _Counter, pgpass_line
from backups.engines.postgresql.tools import Tool, choose_tool, installed_tools
from backups.models import Backup, BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.config_builder import write_config
from tests.conftest import PG_PASSWORD_ENV, REPO, pg_target, unique_name
from tests.engine_checks import ProcessWatch, assert_missing_tools_fail, child_named, written
from tests.servers import silent_listener
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.django_db

VARIETY_SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE invoice_numbers START 1000 INCREMENT 7;
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    balance numeric(20, 6) NOT NULL DEFAULT 0,
    photo bytea,
    profile json,
    tags text[],
    settings jsonb,
    feeling mood,
    invoice integer DEFAULT nextval('invoice_numbers'),
    updated_at timestamptz
);
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    happened date NOT NULL,
    payload jsonb,
    PRIMARY KEY (id, happened)
) PARTITION BY RANGE (happened);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := '2026-01-02 03:04:05+00'; RETURN NEW; END $$;
CREATE TRIGGER customers_touch BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION touch();
CREATE FUNCTION rich(threshold numeric) RETURNS SETOF customers LANGUAGE sql STABLE AS
$$ SELECT * FROM customers WHERE balance > threshold $$;
CREATE VIEW happy_customers AS SELECT id, name FROM customers WHERE feeling = 'happy';
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily (day date PRIMARY KEY, total numeric);
INSERT INTO customers (name, balance, photo, profile, tags, settings, feeling)
SELECT 'Kundé ' || g || ' 🚀 日本語 ' || repeat('x', g % 7),
       (g * 1234.567891)::numeric(20, 6),
       decode(md5(g::text) || '00275c', 'hex'),
       json_build_object('n', g, 'ünï', 'cødé'),
       ARRAY['a' || g, 'b', NULL],
       jsonb_build_object('nested', jsonb_build_object('list', jsonb_build_array(g, g + 1))),
       (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood
FROM generate_series(1, 500) g;
INSERT INTO events (happened, payload)
SELECT date '2025-06-01' + (g * 2), jsonb_build_object('g', g) FROM generate_series(1, 200) g;
INSERT INTO reporting.daily SELECT date '2026-01-01' + g, g * 10 FROM generate_series(0, 30) g;
SELECT nextval('invoice_numbers');
"""


def table_digests(server: PostgresServer, database: str) -> dict[str, tuple[int, str]]:
    """Per table: row count and an md5 over all rows in a stable order."""
    tables = server.execute(
        database,
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           ORDER BY 1, 2""",
    )
    digests = {}
    for schema, table in tables:
        rows = server.execute(
            database,
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{schema}\".\"{table}\" t",
        )
        digests[f"{schema}.{table}"] = (rows[0][0], rows[0][1])
    return digests


def schema_of(server: PostgresServer, database: str) -> list[str]:
    env = {
        **os.environ,
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
    }
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", database],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # pg_dump 15.14+ writes a random \restrict token; comments name the dump itself.
    return [
        line
        for line in out.splitlines()
        if line and not line.startswith(("\\restrict", "\\unrestrict", "--"))
    ]


@pytest.fixture
def variety_db(pg_server: PostgresServer) -> Iterator[str]:
    database = pg_server.create_database(unique_name("variety"))
    pg_server.execute(database, VARIETY_SCHEMA)
    env = {**os.environ, "PGPASSWORD": pg_server.password}
    subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", "-h", pg_server.host, "-p", str(pg_server.port), "-U", pg_server.user, database],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    yield database
    pg_server.drop_database(database)


@pytest.fixture
def new_db_name(pg_server: PostgresServer) -> Iterator[str]:
    name = unique_name("restored")
    yield name
    pg_server.drop_database(name)


def source_target(pg_server: PostgresServer, storage: Storage, database: str, **fields: Any) -> Target:
    return pg_target(pg_server, unique_name("src").replace("_", "-"), database, storage, **fields)


def write_pg_config(
    path: Path,
    server: PostgresServer,
    storage_dir: Path,
    databases: dict[str, str],
    inactive: tuple[str, ...] = (),
) -> Path:
    """A TOML file with a local storage and one postgresql target per ``databases`` entry
    (target name -> database), the password as the reference ${TEST_PG_PASSWORD}."""
    targets: dict[str, dict[str, Any]] = {}
    for name, database in databases.items():
        targets[name] = {
            "engine": "postgresql",
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "password": "${" + PG_PASSWORD_ENV + "}",
            "database": database,
            "storages": ["local"],
        }
        if name in inactive:
            targets[name]["is_active"] = False
    return write_config(path, storage_dir=storage_dir, targets=targets)


def test_it_round_trips_a_varied_schema_and_pgbench_data(
    pg_server: PostgresServer, local_storage: Storage, variety_db: str, new_db_name: str
) -> None:
    source = source_target(pg_server, local_storage, variety_db)
    destination = pg_target(pg_server, "restored", new_db_name, local_storage)

    backup = services.run_backup(source, compression="zstd")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert not pg_server.database_exists(new_db_name)
    log = restore_backup(backup, destination, initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message

    assert table_digests(pg_server, new_db_name) == table_digests(pg_server, variety_db)
    assert schema_of(pg_server, new_db_name) == schema_of(pg_server, variety_db)
    assert pg_server.execute(new_db_name, "SELECT nextval('invoice_numbers')") == pg_server.execute(
        variety_db, "SELECT nextval('invoice_numbers')"
    )
    assert pg_server.execute(new_db_name, "SELECT count(*) FROM rich(100000)") == pg_server.execute(
        variety_db, "SELECT count(*) FROM rich(100000)"
    )
    assert "public.pgbench_accounts" in log.tables_restored
    assert "(created)" in log.notes


def test_it_records_versions_tables_and_exact_row_counts_in_the_manifest(
    pg_server: PostgresServer, local_storage: Storage, variety_db: str, storage_dir: Path
) -> None:
    backup = services.run_backup(source_target(pg_server, local_storage, variety_db))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    manifest = json.loads((storage_dir / (backup.file_path + ".manifest.json")).read_text())
    info = manifest["engine_info"]
    assert info["server_version"].startswith("PostgreSQL 15.")
    assert info["tool"] == "pg_dump" and info["tool_version"].startswith("15.")
    assert info["format"] == "custom"
    assert {"public.customers", "public.events", "public.events_2025", "reporting.daily"} <= set(
        info["tables"]
    )
    assert info["row_counts"]["public.customers"] == 500
    assert info["row_counts"]["public.pgbench_accounts"] == 100_000
    assert info["row_counts"]["public.events_2025"] + info["row_counts"]["public.events_2026"] == 200
    assert "public.events" not in info["row_counts"]  # a partitioned parent holds no rows itself
    assert info["row_counts_exact"] is True
    assert backup.engine_info == info
    assert "pg_restore" in manifest["restore_by_hand"]


def test_row_counts_take_no_parallel_workers_from_the_source_server(
    pg_server: PostgresServer, variety_db: str
) -> None:
    """The counts run beside pg_dump; on the source server they use one backend, not a Gather."""
    with pg_server.connect(variety_db) as session:
        session.autocommit = False
        session.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        session.execute("SET LOCAL min_parallel_table_scan_size = 0")  # parallel even for 100,000 rows
        session.execute("SET LOCAL min_parallel_index_scan_size = 0")
        session.execute("SET LOCAL parallel_setup_cost = 0")
        plan = "\n".join(
            r[0] for r in session.execute("EXPLAIN SELECT count(*) FROM public.pgbench_accounts")
        )
        assert "Gather" in plan  # the server would use workers for this count by itself
        counter = _Counter(session, {"public.pgbench_accounts": ("public", "pgbench_accounts")})
        counter.start()
        assert counter.join() == {"public.pgbench_accounts": 100_000}
        plan = "\n".join(
            r[0] for r in session.execute("EXPLAIN SELECT count(*) FROM public.pgbench_accounts")
        )
        assert "Gather" not in plan and "Parallel" not in plan, plan
        session.rollback()


def test_it_streams_a_standard_custom_format_archive(
    pg_server: PostgresServer, local_storage: Storage, variety_db: str, storage_dir: Path
) -> None:
    backup = services.run_backup(source_target(pg_server, local_storage, variety_db), compression="gzip")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    listing = subprocess.run(
        f"gunzip -c '{storage_dir / backup.file_path}' | pg_restore --list",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip  (the shell pipeline is the point: what an operator types)
    assert "Format: CUSTOM" in listing and "TABLE DATA public customers" in listing
    assert "Compression: 0" in listing  # pg_dump's own compression is off: ours does it


def test_it_backs_up_only_the_tables_and_schemas_asked_for(
    pg_server: PostgresServer, local_storage: Storage, variety_db: str, new_db_name: str
) -> None:
    source = source_target(
        pg_server, local_storage, variety_db, include_tables=["public.customers", "reporting.daily"]
    )
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.tables_included == ["public.customers", "reporting.daily"]

    excluded = source_target(
        pg_server,
        local_storage,
        variety_db,
        exclude_tables=["public.pgbench_history"],
        options={"schemas": ["public"]},
    )
    backup = services.run_backup(excluded)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert "public.pgbench_history" not in backup.tables_included
    assert "reporting.daily" not in backup.tables_included
    log = restore_backup(backup, pg_target(pg_server, "dest", new_db_name, local_storage))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    restored = set(table_digests(pg_server, new_db_name))
    assert "public.pgbench_accounts" in restored and "public.pgbench_history" not in restored
    assert "reporting.daily" not in restored

    missing = source_target(pg_server, local_storage, variety_db, include_tables=["public.nope"])
    backup = services.run_backup(missing)
    assert backup.status == BackupStatus.FAILED
    assert "table(s) not found" in backup.error_message and "public.nope" in backup.error_message


def test_it_takes_a_dump_during_continuous_writes_that_restores_consistently(
    pg_server: PostgresServer, local_storage: Storage, new_db_name: str
) -> None:
    database = pg_server.create_database(unique_name("busy"))
    pg_server.execute(
        database,
        """CREATE TABLE transfers (id bigserial PRIMARY KEY, amount int, pad text);
           CREATE TABLE legs (transfer_id bigint, amount int);
           INSERT INTO transfers (amount, pad) SELECT 1, repeat('p', 500) FROM generate_series(1, 200000);
           INSERT INTO legs SELECT id, 1 FROM transfers; INSERT INTO legs SELECT id, -1 FROM transfers;""",
    )
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with pg_server.connect(database) as conn:
            while not stop.is_set():
                with conn.transaction():
                    row = conn.execute("INSERT INTO transfers (amount) VALUES (5) RETURNING id").fetchone()
                    assert row is not None
                    conn.execute("INSERT INTO legs VALUES (%s, 5)", (row[0],))
                    conn.execute("INSERT INTO legs VALUES (%s, -5)", (row[0],))
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        before = written[0]
        backup = services.run_backup(source_target(pg_server, local_storage, database), compression="gzip")
        during = written[0] - before
    finally:
        stop.set()
        thread.join()
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert during > 10, "the writer must have committed while the dump ran"
    log = restore_backup(backup, pg_target(pg_server, "dest", new_db_name, local_storage))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    transfers, legs, total = pg_server.execute(
        new_db_name,
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM legs), (SELECT sum(amount) FROM legs)",
    )[0]
    assert legs == 2 * transfers and total == 0  # no torn transaction
    assert backup.engine_info["row_counts"] == {"public.legs": legs, "public.transfers": transfers}
    pg_server.drop_database(database)


def test_it_never_shows_the_password_in_argv_logs_messages_or_output(
    pg_server: PostgresServer,
    local_storage: Storage,
    manage: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = pg_server.create_database(unique_name("secretive"))
    pg_server.execute(
        database,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 300000) g",
    )
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [pg_server.password],
        wanted=lambda line: b"pg_dump" in line,
        files=lambda: (tmp_path / "scratch").glob("pgpass-*"),
    ) as watch:
        backup = services.run_backup(
            source_target(pg_server, local_storage, database, options={"row_counts": False}),
            compression="gzip",
        )
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert watch.seen, "the sampler must have seen pg_dump running"
    assert watch.leaked == []
    assert watch.modes == {0o600}  # seen while pg_dump ran, never readable by others
    texts = [caplog.text, backup.error_message, backup.notes, json.dumps(backup.engine_info)]
    texts += [step.message for step in backup.steps.all()]
    assert not any(pg_server.password in text for text in texts)
    assert list((tmp_path / "scratch").glob("pgpass-*")) == []  # the passfile is gone

    # And through the command line, with a failing run (its error path prints messages too).
    config = write_pg_config(
        tmp_path / "pg.toml",
        pg_server,
        tmp_path / "cli-backups",
        {"pg": database, "pg-missing": "no_such_database"},
    )
    env = {PG_PASSWORD_ENV: pg_server.password, "LOG_LEVEL": "DEBUG"}
    applied = manage("backup_config", "apply", "--skip-probes", str(config), extra_env=env)
    assert applied.returncode == 0, applied.stderr + applied.stdout
    result = manage("backup_create", "--json", extra_env=env)
    assert result.returncode == 1  # pg-missing failed
    records = {r["target"]: r for r in json.loads(result.stdout)}
    assert records["pg"]["status"] == "success"
    assert "does not exist" in records["pg-missing"]["error_message"]
    assert pg_server.password not in result.stdout + result.stderr
    listing = manage("backup_list", "--json", extra_env=env)
    assert pg_server.password not in listing.stdout + listing.stderr
    pg_server.drop_database(database)


def test_it_fails_a_wrong_password_with_authentication_failed_and_no_secret(
    pg_server: PostgresServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_PG_PASSWORD", "not-the-Right-one-42")
    target = source_target(pg_server, local_storage, "postgres", password="${WRONG_PG_PASSWORD}")
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    assert "authentication failed" in backup.error_message
    assert "not-the-Right-one-42" not in backup.error_message
    assert not any("not-the-Right-one-42" in s.message for s in backup.steps.all())


def test_it_fails_within_the_connect_timeout_when_the_server_is_unreachable(local_storage: Storage) -> None:
    closed = Target.objects.create(
        name="closed-port", engine="postgresql", host="127.0.0.1", port=1, database="x", user="u"
    )
    closed.storages.add(local_storage)
    backup = services.run_backup(closed)
    assert backup.status == BackupStatus.FAILED
    assert "cannot reach the PostgreSQL server at 127.0.0.1:1" in backup.error_message

    # A server that accepts the TCP connection and then never answers: the connect timeout
    # must end the wait (a silent listener is as close to a blackholed host as loopback gets).
    with silent_listener() as port:
        blackhole = Target.objects.create(
            name="silent",
            engine="postgresql",
            host="127.0.0.1",
            port=port,
            database="x",
            user="u",
            options={"connect_timeout": 2},
        )
        blackhole.storages.add(local_storage)
        started = time.monotonic()
        backup = services.run_backup(blackhole)
        elapsed = time.monotonic() - started
    assert backup.status == BackupStatus.FAILED
    assert elapsed < 15
    assert f"cannot reach the PostgreSQL server at 127.0.0.1:{blackhole.port}" in backup.error_message


def test_it_fails_naming_a_missing_database(pg_server: PostgresServer, local_storage: Storage) -> None:
    backup = services.run_backup(source_target(pg_server, local_storage, "nope_not_here"))
    assert backup.status == BackupStatus.FAILED
    assert "database nope_not_here does not exist" in backup.error_message


def test_it_reports_a_missing_dump_tool_as_a_system_check_error_and_a_failed_run(
    pg_server: PostgresServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = source_target(pg_server, local_storage, "postgres")
    failure = "required program(s) not installed: pg_dump"
    assert_missing_tools_fail(target, ["pg_dump", "pg_restore"], failure, monkeypatch, tmp_path)
    empty = tmp_path / "empty-bin"
    monkeypatch.undo()

    # An explicit bin_dir without the tools is just as clear.
    odd = source_target(pg_server, local_storage, "postgres", options={"bin_dir": str(empty)})
    backup = services.run_backup(odd)
    assert backup.status == BackupStatus.FAILED
    assert "pg_dump is not installed" in backup.error_message


def test_it_picks_the_oldest_client_that_is_at_least_the_server_version() -> None:
    tools = [
        Tool("/x/13/pg_dump", 13, "13.9"),
        Tool("/x/16/pg_dump", 16, "16.2"),
        Tool("/x/15/pg_dump", 15, "15.1"),
    ]
    assert choose_tool("pg_dump", tools, 14, "a 14 server").path == "/x/15/pg_dump"
    assert choose_tool("pg_dump", tools, 13, "a 13 server").path == "/x/13/pg_dump"
    with pytest.raises(
        EngineError, match=r"needs version 17 or newer; installed: 13 .*install postgresql-client-17"
    ):
        choose_tool("pg_dump", tools, 17, "a PostgreSQL 17.0 server")
    with pytest.raises(EngineError, match="pg_dump is not installed; install postgresql-client-15"):
        choose_tool("pg_dump", [], 15, "a 15 server")
    assert [t.major for t in installed_tools("pg_dump")] == [15]  # what this machine really has


def test_it_escapes_colons_and_backslashes_in_the_passfile() -> None:
    assert pgpass_line("a:b\\c") == "*:*:*:*:a\\:b\\\\c\n"


def test_it_fails_a_dump_killed_midway_and_leaves_nothing_in_storage(
    pg_server: PostgresServer, local_storage: Storage, storage_dir: Path
) -> None:
    database = pg_server.create_database(unique_name("killed"))
    pg_server.execute(
        database,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 10) AS pad FROM generate_series(1, 400000) g",
    )
    target = source_target(pg_server, local_storage, database, options={"row_counts": False})
    killed: list[int] = []

    def kill_pg_dump() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = child_named("pg_dump")
            if pid is not None and written(pid) > 1024 * 1024:  # midway: it has streamed a while
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_pg_dump)
    killer.start()
    backup = services.run_backup(target, compression="none")
    killer.join()
    assert killed, "the test must have killed pg_dump"
    assert backup.status == BackupStatus.FAILED
    assert "pg_dump was killed by SIGKILL" in backup.error_message
    assert [p for p in storage_dir.rglob("*") if p.is_file()] == []
    pg_server.drop_database(database)


def test_it_fails_a_restore_that_hits_an_sql_error_with_the_server_message_and_changes_nothing(
    pg_server: PostgresServer, local_storage: Storage, new_db_name: str
) -> None:
    database = pg_server.create_database(unique_name("items"))
    pg_server.execute(
        database, "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10)"
    )
    backup = services.run_backup(source_target(pg_server, local_storage, database))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message

    # The destination has a view on its own "items": dropping it (restore --clean) must fail.
    pg_server.create_database(new_db_name)
    pg_server.execute(
        new_db_name,
        "CREATE TABLE items (id int, note text); INSERT INTO items VALUES (42, 'keep me');"
        "CREATE VIEW depends AS SELECT * FROM items",
    )
    log = restore_backup(backup, pg_target(pg_server, "dest", new_db_name, local_storage))
    assert log.status == RestoreStatus.FAILED
    assert "other objects depend on it" in log.error_message
    assert "nothing was changed" in log.error_message
    assert pg_server.execute(new_db_name, "SELECT * FROM items") == [(42, "keep me")]
    pg_server.drop_database(database)


def test_it_restores_over_its_own_source(pg_server: PostgresServer, local_storage: Storage) -> None:
    database = pg_server.create_database(unique_name("self"))
    pg_server.execute(
        database, "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10)"
    )
    source = source_target(pg_server, local_storage, database)
    backup = services.run_backup(source)
    pg_server.execute(database, "DELETE FROM items WHERE id > 3; INSERT INTO items VALUES (99)")
    log = restore_backup(backup, source)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert [r[0] for r in pg_server.execute(database, "SELECT id FROM items ORDER BY id")] == list(
        range(1, 11)
    )
    pg_server.drop_database(database)


def test_it_skips_an_unchanged_database_and_backs_up_a_changed_one(
    pg_server: PostgresServer, local_storage: Storage
) -> None:
    database = pg_server.create_database(unique_name("quiet"))
    pg_server.execute(database, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    pg_server.execute("postgres", "CHECKPOINT")
    target = source_target(pg_server, local_storage, database, skip_unchanged=True)
    first = services.run_backup(target)
    assert first.status == BackupStatus.SUCCESS, first.error_message
    assert first.fingerprint.startswith("pg:")
    second = services.run_backup(target)
    assert second.status == BackupStatus.SKIPPED, second.error_message
    assert f"nothing changed since backup {first.pk}" in second.notes
    assert second.copies.count() == 0

    pg_server.execute(database, "INSERT INTO t VALUES (2)")
    third = services.run_backup(target)
    assert third.status == BackupStatus.SUCCESS

    # A different table filter is a different backup, even with the same WAL position.
    target.exclude_tables = ["public.t"]
    target.save()
    assert services.run_backup(target).status == BackupStatus.SUCCESS

    # Unlogged tables change without WAL: such a database is never skipped.
    pg_server.execute(database, "CREATE UNLOGGED TABLE scratchpad (id int)")
    target.exclude_tables = []
    target.save()
    assert get_engine("postgresql").fingerprint(services.connection_for(target)) is None
    assert services.run_backup(target).status == BackupStatus.SUCCESS
    assert services.run_backup(target).status == BackupStatus.SUCCESS
    pg_server.drop_database(database)


def test_it_deep_verifies_by_restoring_into_a_scratch_database_on_the_sandbox_and_dropping_it(
    pg_server: PostgresServer, local_storage: Storage, variety_db: str
) -> None:
    sandbox = pg_target(pg_server, "sandbox", "postgres")
    source = source_target(pg_server, local_storage, variety_db, sandbox=sandbox)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message

    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages
    assert "restored into scratch database backupsite_verify_" in outcome.messages[0]
    assert "row counts match the backup" in outcome.messages[0]
    assert (
        pg_server.execute(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'backupsite_verify%'"
        )
        == []
    )

    # A manifest that disagrees with the data is caught (and the scratch database still dropped).
    Backup.objects.filter(pk=backup.pk).update(
        engine_info={
            **backup.engine_info,
            "row_counts": {**backup.engine_info["row_counts"], "public.customers": 499},
        }
    )
    backup.refresh_from_db()
    outcome = services.verify_backup(backup, deep=True)
    assert not outcome.ok
    assert "public.customers: 500 rows, the backup recorded 499" in outcome.messages[0]
    assert (
        pg_server.execute(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'backupsite_verify%'"
        )
        == []
    )


def test_it_deep_verifies_without_a_sandbox_by_reading_the_whole_archive_with_pg_restore(
    pg_server: PostgresServer, local_storage: Storage, variety_db: str
) -> None:
    backup = services.run_backup(source_target(pg_server, local_storage, variety_db))
    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages
    assert "pg_restore 15." in outcome.messages[0] and "with data" in outcome.messages[0]


def test_it_never_calls_a_restore_that_restored_nothing_a_success(
    pg_server: PostgresServer, local_storage: Storage, new_db_name: str
) -> None:
    """By default ("presence") every counted table must exist and have rows if it had any."""
    database = pg_server.create_database(unique_name("counted"))
    pg_server.execute(
        database,
        "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 5); CREATE TABLE spare (id int)",
    )
    backup = services.run_backup(source_target(pg_server, local_storage, database))
    recorded = backup.engine_info["row_counts"]
    assert recorded == {"public.items": 5, "public.spare": 0}

    log = restore_backup(backup, pg_target(pg_server, "dest", new_db_name, local_storage))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert "all 2 counted table(s) exist and the 1 with rows have rows" in log.notes

    Backup.objects.filter(pk=backup.pk).update(
        engine_info={**backup.engine_info, "row_counts": {**recorded, "public.spare": 3, "public.gone": 1}}
    )
    backup.refresh_from_db()
    log = restore_backup(backup, Target.objects.get(name="dest"))
    assert log.status == RestoreStatus.FAILED
    assert "public.spare is empty, the backup recorded 3 rows" in log.error_message
    assert "public.gone is missing" in log.error_message
    pg_server.drop_database(database)


def test_it_compares_every_row_count_in_an_exact_restore_check(
    pg_server: PostgresServer, local_storage: Storage, new_db_name: str
) -> None:
    database = pg_server.create_database(unique_name("counted"))
    pg_server.execute(database, "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 5)")
    backup = services.run_backup(source_target(pg_server, local_storage, database))
    destination = pg_target(pg_server, "dest", new_db_name, local_storage, options={"restore_check": "exact"})
    log = restore_backup(backup, destination)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert "row counts match the backup" in log.notes

    Backup.objects.filter(pk=backup.pk).update(
        engine_info={**backup.engine_info, "row_counts": {"public.items": 6}}
    )
    backup.refresh_from_db()
    log = restore_backup(backup, destination)
    assert log.status == RestoreStatus.FAILED
    assert "public.items has 5 rows, the backup recorded 6" in log.error_message
    pg_server.drop_database(database)


def test_it_asks_for_the_destination_database_name_on_restore_and_creates_it(
    pg_server: PostgresServer,
    manage: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    new_db_name: str,
) -> None:
    from tests.test_commands import _pty_run

    database = pg_server.create_database(unique_name("asked"))
    pg_server.execute(database, "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 7)")
    config = write_pg_config(
        tmp_path / "pg.toml",
        pg_server,
        tmp_path / "cli-backups",
        {"pg": database, "pg-copy": new_db_name},
        inactive=("pg-copy",),
    )
    env = {
        **os.environ,
        "BACKUPSITE_HOME": str(tmp_path / "home"),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        PG_PASSWORD_ENV: pg_server.password,
    }
    env.pop("DATABASE_URL", None)
    assert manage("backup_config", "apply", str(config), extra_env=env).returncode == 0
    code, output = _pty_run(["backup_create"], env)
    assert code == 0, output

    code, output = _pty_run(["backup_restore", "--id", "1", "--to", "pg-copy"], env, answer="pg-copy")
    assert code == 2 and "confirmation did not match" in output
    assert f"Type the destination database's name ({new_db_name})" in output
    assert not pg_server.database_exists(new_db_name)

    code, output = _pty_run(["backup_restore", "--id", "1", "--to", "pg-copy"], env, answer=new_db_name)
    assert code == 0, output
    assert pg_server.execute(new_db_name, "SELECT count(*) FROM items") == [(7,)]
    assert "(created)" in output
    pg_server.drop_database(database)


def test_it_refuses_to_restore_into_another_engine(
    pg_server: PostgresServer, local_storage: Storage, sqlite_target: Target
) -> None:
    from restores.services import RestoreRefused

    database = pg_server.create_database(unique_name("engine"))
    backup = services.run_backup(source_target(pg_server, local_storage, database))
    with pytest.raises(RestoreRefused, match="is a postgresql backup; target app-db uses the sqlite engine"):
        restore_backup(backup, sqlite_target)
    pg_server.drop_database(database)


def test_it_logs_a_restore_stopped_by_sigterm_as_failed_and_rolls_it_back(
    pg_server: PostgresServer,
    manage: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    new_db_name: str,
) -> None:
    database = pg_server.create_database(unique_name("interrupted"))
    pg_server.execute(
        database,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 400000) g;"
        "CREATE INDEX big_pad ON big (pad)",
    )
    pg_server.create_database(new_db_name)
    pg_server.execute(
        new_db_name, "CREATE TABLE big (id int, pad text); INSERT INTO big VALUES (1, 'precious')"
    )
    config = write_pg_config(
        tmp_path / "pg.toml",
        pg_server,
        tmp_path / "b",
        {"pg": database, "pg-copy": new_db_name},
        inactive=("pg-copy",),
    )
    env = {PG_PASSWORD_ENV: pg_server.password}
    assert manage("backup_config", "apply", str(config), extra_env=env).returncode == 0
    assert manage("backup_create", extra_env=env).returncode == 0

    full_env = {
        **os.environ,
        **env,
        "BACKUPSITE_HOME": str(tmp_path / "home"),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "backup_restore", "--id", "1", "--to", "pg-copy", "--yes"],
        cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while child_named("pg_restore", process.pid) is None and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    time.sleep(0.3)  # let it load some data inside its transaction
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, out + err

    with sqlite3.connect(tmp_path / "home" / "backupsite.sqlite3") as catalog:
        status, message = catalog.execute("SELECT status, error_message FROM backup_restore_log").fetchone()
    assert status == "failed" and "terminated by SIGTERM" in message
    assert pg_server.execute(new_db_name, "SELECT * FROM big") == [(1, "precious")]  # rolled back
    assert child_named("pg_restore", process.pid) is None
    pg_server.drop_database(database)
