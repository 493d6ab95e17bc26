"""The MySQL and MariaDB engines against a real MariaDB server started by the suite.

On Debian ``mysqldump``/``mysql`` are MariaDB's tools too, so both engine keys run for real here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backups import services
from backups.engines import get_engine
from backups.engines.base import Connection, DumpOptions, EngineError, RestoreOptions
from backups.engines.mysql.engine import NotADump
from backups.engines.mysql.settings import option_value
from backups.models import BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.config_builder import write_config
from tests.conftest import server_target, unique_name
from tests.engine_checks import ProcessWatch, assert_missing_tools_fail, child_named
from tests.servers.mariadb import MariaDBServer, fill_sample, make_certificates, quote_name, table_rows

pytestmark = pytest.mark.django_db

KEYS = ("mariadb", "mysql")
PASSWORD_ENV = "TEST_MARIADB_PASSWORD"


@pytest.fixture(autouse=True)
def _password_reference(mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mariadb_server.password)


def make_target(
    server: MariaDBServer, key: str, database: str, storage: Storage | None = None, **fields: Any
) -> Target:
    """A Target on ``server`` whose password is the reference ${TEST_MARIADB_PASSWORD}."""
    return server_target(key, server, PASSWORD_ENV, storage, database=database, **fields)


def connection(server: MariaDBServer, key: str, database: str, **fields: Any) -> Connection:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        **fields,
    }
    return Connection(name="t", engine=key, database=database, **values)


def mysql_contract_case(
    key: str,
) -> Callable[[pytest.FixtureRequest, Path], tuple[Target, Target, Callable[[], None]]]:
    """The entry for ``CASES`` in tests/test_engine_contract.py: a small varied source database
    and a destination database that the restore creates."""

    def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Target, Target, Callable[[], None]]:
        server: MariaDBServer = request.getfixturevalue("mariadb_server")
        storage: Storage = request.getfixturevalue("local_storage")
        request.getfixturevalue("monkeypatch").setenv(PASSWORD_ENV, server.password)
        source_db = fill_sample(server, unique_name(f"contract_{key}"))
        destination_db = unique_name(f"contract_{key}_restored")

        def drop() -> None:
            server.drop_database(source_db)
            server.drop_database(destination_db)

        request.addfinalizer(drop)
        source = make_target(server, key, source_db, storage)
        destination = make_target(server, key, destination_db, storage)

        def compare() -> None:
            original = table_rows(server, source_db)
            assert original["customers"] and original["orders"]
            assert table_rows(server, destination_db) == original

        return source, destination, compare

    return case


# -- a database with everything a real one has ------------------------------------------------

RICH_SCHEMA = [
    """CREATE TABLE accounts (
        id INT AUTO_INCREMENT PRIMARY KEY,
        owner VARCHAR(100) NOT NULL,
        balance DECIMAL(20,6) NOT NULL,
        opened DATETIME(6) NOT NULL,
        avatar BLOB,
        UNIQUE KEY owner (owner)
    ) ENGINE=InnoDB""",
    """CREATE TABLE entries (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        account_id INT NOT NULL,
        amount DECIMAL(20,6) NOT NULL,
        memo TEXT,
        CONSTRAINT entries_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE
    ) ENGINE=InnoDB""",
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(200) NOT NULL)",
    "CREATE TABLE `odd ``name`` ü` (k VARBINARY(16) PRIMARY KEY, doc JSON)",
    """CREATE VIEW account_totals AS
        SELECT a.id, a.owner, COALESCE(SUM(e.amount), 0) AS total
        FROM accounts a LEFT JOIN entries e ON e.account_id = a.id GROUP BY a.id, a.owner""",
    """CREATE TRIGGER entries_audit AFTER INSERT ON entries FOR EACH ROW
        INSERT INTO audit (what) VALUES (CONCAT('entry ', NEW.id, ' for ', NEW.account_id))""",
    """CREATE PROCEDURE add_entry(IN account INT, IN amount DECIMAL(20,6))
        BEGIN
            INSERT INTO entries (account_id, amount, memo) VALUES (account, amount, 'via procedure');
            UPDATE accounts SET balance = balance + amount WHERE id = account;
        END""",
    """CREATE FUNCTION balance_of(account INT) RETURNS DECIMAL(20,6) READS SQL DATA
        RETURN (SELECT balance FROM accounts WHERE id = account)""",
    """CREATE EVENT prune_audit ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
        DO DELETE FROM audit WHERE id < 0""",
]


@pytest.fixture(scope="module")
def rich_db(mariadb_server: MariaDBServer) -> Iterator[str]:
    name = mariadb_server.create_database(unique_name("rich"))
    rng = random.Random(7)
    with contextlib.closing(mariadb_server.connect(name)) as conn, conn.cursor() as cursor:
        for statement in RICH_SCHEMA:
            cursor.execute(statement)
        special = bytes([0x00, 0x27, 0x5C, 0x22, 0x0A, 0x0D, 0x1A, 0xFF])
        cursor.executemany(
            "INSERT INTO accounts (owner, balance, opened, avatar) VALUES (%s, %s, %s, %s)",
            [
                (
                    f"kündin {i} 🚀🦀 \"q\" 'x' \\ ½",
                    f"{rng.uniform(-1e9, 1e9):.6f}",
                    f"2024-02-29 23:59:{i % 60:02d}.{i:06d}",
                    special + rng.randbytes(200) + special,
                )
                for i in range(300)
            ],
        )
        cursor.executemany(
            "INSERT INTO entries (account_id, amount, memo) VALUES (%s, %s, %s)",
            [(1 + i % 300, f"{rng.uniform(-1000, 1000):.6f}", f"memo {i}\n\ttab ✓") for i in range(2000)],
        )
        cursor.execute("CALL add_entry(1, 12.345678)")
        cursor.executemany(
            "INSERT INTO `odd ``name`` ü` (k, doc) VALUES (%s, %s)",
            [(rng.randbytes(16), json.dumps({"n": i, "s": "ü🚀"})) for i in range(20)],
        )
    yield name
    mariadb_server.drop_database(name)


def schema(server: MariaDBServer, database: str) -> dict[str, dict[str, str]]:
    """Every object's definition as the server shows it (the database name never appears)."""
    with contextlib.closing(server.connect(database)) as conn, conn.cursor() as cursor:

        def show(sql: str, column: int) -> str:
            cursor.execute(sql)
            return str(cursor.fetchone()[column])

        cursor.execute("SHOW FULL TABLES")
        objects = list(cursor.fetchall())
        cursor.execute(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
            (database,),
        )
        routines = list(cursor.fetchall())
        cursor.execute("SHOW TRIGGERS")
        triggers = [row[0] for row in cursor.fetchall()]
        cursor.execute("SHOW EVENTS")
        events = [row[1] for row in cursor.fetchall()]
        return {
            "tables": {
                n: show(f"SHOW CREATE TABLE {quote_name(n)}", 1) for n, kind in objects if kind != "VIEW"
            },
            "views": {
                n: show(f"SHOW CREATE VIEW {quote_name(n)}", 1) for n, kind in objects if kind == "VIEW"
            },
            "routines": {n: show(f"SHOW CREATE {kind} {quote_name(n)}", 2) for n, kind in routines},
            "triggers": {n: show(f"SHOW CREATE TRIGGER {quote_name(n)}", 2) for n in triggers},
            "events": {n: show(f"SHOW CREATE EVENT {quote_name(n)}", 3) for n in events},
        }


def checksums(server: MariaDBServer, database: str) -> dict[str, tuple[int, int]]:
    """CHECKSUM TABLE and COUNT(*) of every base table."""
    tables = server.execute(
        None,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
        (database,),
    )
    result = {}
    for (name,) in tables:
        checksum = server.execute(database, f"CHECKSUM TABLE {quote_name(name)}")[0][1]
        count = server.execute(database, f"SELECT COUNT(*) FROM {quote_name(name)}")[0][0]
        result[name] = (checksum, count)
    return result


@pytest.mark.parametrize("key", KEYS)
def test_it_round_trips_a_varied_database_into_a_new_one(
    key: str, mariadb_server: MariaDBServer, rich_db: str, local_storage: Storage
) -> None:
    source = make_target(mariadb_server, key, rich_db, local_storage)
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.file_path.endswith(".sql.gz")
    info = backup.engine_info
    tool = "mariadb-dump" if key == "mariadb" else "mysqldump"
    assert info["tool"] == tool and "MariaDB" in info["tool_version"]
    assert info["server_version"].startswith("10.11")
    assert info["tables"] == ["accounts", "audit", "entries", "odd `name` ü"]
    assert info["views"] == ["account_totals"]
    assert info["row_counts"] == {"accounts": 300, "audit": 2001, "entries": 2001, "odd `name` ü": 20}

    destination_db = unique_name(f"rich_{key}_restored")
    assert not mariadb_server.database_exists(destination_db)
    destination = make_target(mariadb_server, key, destination_db)
    try:
        log = restore_backup(backup, destination, initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert log.tables_restored == info["tables"]
        assert checksums(mariadb_server, destination_db) == checksums(mariadb_server, rich_db)
        assert table_rows(mariadb_server, destination_db) == table_rows(mariadb_server, rich_db)
        restored, original = schema(mariadb_server, destination_db), schema(mariadb_server, rich_db)
        assert all(original[kind] for kind in original), original  # every kind of object is there
        assert restored == original
        # The restored routines and triggers work in their new home.
        assert mariadb_server.execute(destination_db, "SELECT balance_of(1)") == mariadb_server.execute(
            rich_db, "SELECT balance_of(1)"
        )
    finally:
        mariadb_server.drop_database(destination_db)


def _wait_until_innodb_is_quiet(server: MariaDBServer, quiet: float = 1.0, timeout: float = 30) -> None:
    lsn = "SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'"
    deadline = time.monotonic() + timeout
    last, since = server.execute(None, lsn), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        current = server.execute(None, lsn)
        if current != last:
            last, since = current, time.monotonic()


def test_it_compares_exact_row_counts_with_the_manifest_on_restore(
    mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    engine = get_engine("mariadb")
    source_db = fill_sample(mariadb_server, unique_name("exact"))
    target = connection(mariadb_server, "mariadb", source_db)
    # InnoDB keeps writing redo for a while after writes (purge, checkpoints), which rightly makes
    # the counts inexact; on a server that has settled they are exact.
    for _ in range(5):
        _wait_until_innodb_is_quiet(mariadb_server)
        with engine.dump(target, DumpOptions(scratch_dir=tmp_path)) as dump:
            data = dump.stream.read()
        if dump.info["row_counts_exact"]:
            break
    assert dump.info["row_counts"] == {"customers": 50, "orders": 100}
    assert dump.info["row_counts_exact"] is True, dump.info

    destination = connection(mariadb_server, "mariadb", unique_name("exact_restored"))
    try:
        wrong = {**dump.info, "row_counts": {"customers": 51, "orders": 100}}
        with pytest.raises(EngineError, match="restored table customers has 50 rows, the backup recorded 51"):
            engine.restore(
                destination,
                io.BytesIO(data),
                RestoreOptions(scratch_dir=tmp_path, manifest={"engine_info": wrong}),
            )
        inexact = {**wrong, "row_counts_exact": False}  # counts taken during writes are not compared
        result = engine.restore(
            destination,
            io.BytesIO(data),
            RestoreOptions(scratch_dir=tmp_path, manifest={"engine_info": inexact}),
        )
        assert result.tables == ["customers", "orders"]
        assert engine.row_counts(destination) == {"customers": 50, "orders": 100}
    finally:
        engine.drop_database(destination)
        mariadb_server.drop_database(source_db)
    assert not mariadb_server.database_exists(destination.database)


def test_it_does_not_count_rows_exactly_when_a_table_is_not_innodb(
    mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    database = fill_sample(mariadb_server, unique_name("aria"))
    mariadb_server.execute(database, "CREATE TABLE notes (id INT PRIMARY KEY) ENGINE=Aria")
    try:
        with get_engine("mariadb").dump(
            connection(mariadb_server, "mariadb", database), DumpOptions(scratch_dir=tmp_path)
        ) as dump:
            dump.stream.read()
        assert dump.info["row_counts_exact"] is False
        assert "notes" in dump.info["row_counts_note"]
    finally:
        mariadb_server.drop_database(database)


# -- consistency under writes --------------------------------------------------------------------


class Bank:
    """Transfers between accounts, each one transaction: two ledger rows and two balance updates."""

    ACCOUNTS = 20
    START = 1000

    def __init__(self, server: MariaDBServer, database: str) -> None:
        self.server, self.database = server, database
        self.commits = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def create(self) -> None:
        self.server.create_database(self.database)
        self.server.execute(
            self.database, "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)"
        )
        self.server.execute(
            self.database,
            "CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, delta BIGINT NOT NULL)",
        )
        # Dumped between the two: widens the window in which a dump without a snapshot tears.
        self.server.execute(self.database, "CREATE TABLE filler (id INT PRIMARY KEY, pad CHAR(100))")
        self.server.execute(self.database, "INSERT INTO filler SELECT seq, MD5(seq) FROM seq_1_to_100000")
        self.server.execute(
            self.database,
            f"INSERT INTO accounts SELECT seq, {self.START} FROM seq_1_to_{self.ACCOUNTS}",
        )

    def _run(self) -> None:
        rng = random.Random(1)
        try:
            with contextlib.closing(self.server.connect(self.database, autocommit=False)) as conn:
                cursor = conn.cursor()
                while not self._stop.is_set():
                    source, target = rng.sample(range(1, self.ACCOUNTS + 1), 2)
                    amount = rng.randint(1, 50)
                    cursor.execute(
                        "UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, source)
                    )
                    cursor.execute("INSERT INTO ledger (account, delta) VALUES (%s, %s)", (source, -amount))
                    cursor.execute(
                        "UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, target)
                    )
                    cursor.execute("INSERT INTO ledger (account, delta) VALUES (%s, %s)", (target, amount))
                    conn.commit()
                    self.commits += 1
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Bank:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @classmethod
    def check(cls, server: MariaDBServer, database: str) -> int:
        """Assert the invariants; return the number of transfers."""
        balances = dict(server.execute(database, "SELECT id, balance FROM accounts"))
        deltas = dict(server.execute(database, "SELECT account, SUM(delta) FROM ledger GROUP BY account"))
        assert sum(balances.values()) == cls.ACCOUNTS * cls.START
        assert {a: b - cls.START for a, b in balances.items() if b != cls.START} == {
            a: int(d) for a, d in deltas.items() if d
        }
        rows = server.execute(database, "SELECT COUNT(*) FROM ledger")[0][0]
        assert rows % 2 == 0
        return int(rows // 2)


def test_it_takes_a_dump_during_continuous_writes_that_restores_consistently(
    mariadb_server: MariaDBServer, local_storage: Storage
) -> None:
    database = unique_name("bank")
    bank = Bank(mariadb_server, database)
    bank.create()
    target = make_target(mariadb_server, "mariadb", database, local_storage)
    restored_db = unique_name("bank_restored")
    try:
        with bank:
            while bank.commits < 20:  # the writer is in full swing before the dump starts
                time.sleep(0.01)
            before = bank.commits
            backup = services.run_backup(target)
            during = bank.commits - before
        assert bank.error is None, bank.error
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert during > 20, "the writer must have committed while the dump ran"
        assert backup.engine_info["row_counts_exact"] is False
        log = restore_backup(backup, make_target(mariadb_server, "mariadb", restored_db))
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        transfers = Bank.check(mariadb_server, restored_db)
        assert 20 <= transfers < bank.commits
    finally:
        mariadb_server.drop_database(database)
        mariadb_server.drop_database(restored_db)


# -- secrets ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_db(mariadb_server: MariaDBServer) -> Iterator[str]:
    """~17 MB of poorly compressible rows: a dump that takes about a second through gzip."""
    name = mariadb_server.create_database(unique_name("big"))
    mariadb_server.execute(name, "CREATE TABLE payload (id INT PRIMARY KEY, a CHAR(128), b CHAR(32))")
    mariadb_server.execute(
        name, "INSERT INTO payload SELECT seq, SHA2(seq, 512), MD5(seq) FROM seq_1_to_100000"
    )
    yield name
    mariadb_server.drop_database(name)


def test_it_never_shows_the_password_in_argv_logs_or_messages(
    mariadb_server: MariaDBServer,
    big_db: str,
    local_storage: Storage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scratch = tmp_path / "scratch"
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [mariadb_server.password],
        wanted=lambda line: b"mariadb-dump" in line,
        files=lambda: scratch.glob("mysql-*/*.cnf"),
    ) as watch:
        backup = services.run_backup(make_target(mariadb_server, "mariadb", big_db, local_storage))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert watch.seen, "the sampler must have seen mariadb-dump running"
    dumps = [line.split(b"\0") for line in watch.seen if b"--single-transaction" in line]
    assert dumps and all(argv[1].startswith(b"--defaults-extra-file=") for argv in dumps)
    assert watch.leaked == []
    assert watch.modes == {0o600}
    assert list(scratch.glob("mysql-*")) == []  # the option file and its directory are gone
    texts = [caplog.text, backup.error_message, backup.notes, json.dumps(backup.engine_info)]
    texts += [step.message for step in backup.steps.all()]
    assert not any(mariadb_server.password in text for text in texts)


def test_it_keeps_the_password_out_of_command_output(
    mariadb_server: MariaDBServer, manage: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    database = fill_sample(mariadb_server, unique_name("cli"))
    targets = {
        name: {
            "engine": "mariadb",
            "host": mariadb_server.host,
            "port": mariadb_server.port,
            "user": mariadb_server.user,
            "password": "${SHOP_DB_PASSWORD}",
            "database": db,
            "options": {"connect_timeout": 5},
            "storages": ["local"],
        }
        for name, db in (("shop", database), ("shop-missing", "no_such_db"))
    }
    config = write_config(tmp_path / "shop.toml", storage_dir=tmp_path / "cli-backups", targets=targets)
    try:
        env = {"SHOP_DB_PASSWORD": mariadb_server.password, "LOG_LEVEL": "DEBUG"}
        probed = manage("backup_config", "apply", str(config), extra_env=env)  # the probe fails
        assert probed.returncode == 2, probed.stdout + probed.stderr
        assert "database no_such_db does not exist" in probed.stderr
        applied = manage("backup_config", "apply", "--skip-probes", str(config), extra_env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        result = manage("backup_create", "--json", extra_env=env)
        assert result.returncode == 1, result.stderr  # shop-missing failed
        records = {r["target"]: r for r in json.loads(result.stdout)}
        assert records["shop"]["status"] == "success"
        assert (
            f"database no_such_db does not exist on {mariadb_server.host}"
            in records["shop-missing"]["error_message"]
        )
        listing = manage("backup_list", "--json", extra_env=env)
        wrong = manage(
            "backup_create", "--target", "shop", extra_env={**env, "SHOP_DB_PASSWORD": "Wr0ng 'pw' #x"}
        )
        assert wrong.returncode == 1
        assert "authentication failed for user backupsite" in wrong.stdout
        for output in (probed, applied, result, listing, wrong):
            assert mariadb_server.password not in output.stdout + output.stderr
            assert "Wr0ng 'pw' #x" not in output.stdout + output.stderr
    finally:
        mariadb_server.drop_database(database)


def _tls_handshakes(server: MariaDBServer) -> int:
    return int(server.execute(None, "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")[0][1])


@pytest.mark.parametrize("key", KEYS)
def test_it_speaks_tls_as_configured(key: str, mariadb_server: MariaDBServer, tmp_path: Path) -> None:
    engine = get_engine(key)
    database = fill_sample(mariadb_server, unique_name("tls"))
    try:
        verified = {"ssl_mode": "VERIFY_IDENTITY", "ssl_ca": str(mariadb_server.tls_ca)}
        before = _tls_handshakes(mariadb_server)
        with engine.dump(
            connection(mariadb_server, key, database, options=verified), DumpOptions(scratch_dir=tmp_path)
        ) as dump:
            data = dump.stream.read()
        assert _tls_handshakes(mariadb_server) - before >= 2  # the engine's session and the dump tool

        plain = {"ssl_mode": "DISABLED"}  # MariaDB 10.11's tools would use TLS unless told not to
        before = _tls_handshakes(mariadb_server)
        destination = connection(mariadb_server, key, unique_name("tls_restored"), options=plain)
        engine.restore(destination, io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path))
        engine.drop_database(destination)
        assert _tls_handshakes(mariadb_server) == before

        stranger = make_certificates(tmp_path / "other-ca", "someone-else")
        other = {"ssl_mode": "VERIFY_CA", "ssl_ca": str(stranger / "ca.pem")}
        with pytest.raises(
            EngineError, match=r"TLS with the server at 127\.0\.0\.1:\d+ failed: .*self-signed certificate"
        ):
            engine.probe(connection(mariadb_server, key, database, options=other))
        with pytest.raises(EngineError, match=r"ssl_ca file /nonexistent/ca\.pem does not exist"):
            engine.probe(connection(mariadb_server, key, database, options={"ssl_ca": "/nonexistent/ca.pem"}))
    finally:
        mariadb_server.drop_database(database)


@pytest.mark.parametrize(
    "password",
    [
        "end\\",
        " spaces around ",
        "#hash first",
        "new\nline\ttab",
        "'\"",
        "\\n is not a newline",
        "ünï 🚀;=[client]",
    ],
)
def test_it_carries_any_password_in_the_option_file(
    mariadb_server: MariaDBServer, password: str, tmp_path: Path
) -> None:
    user = unique_name("u")[:32]
    database = unique_name("quoting")
    mariadb_server.create_database(database)
    mariadb_server.execute(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
    mariadb_server.execute(None, f"GRANT ALL ON {quote_name(database)}.* TO '{user}'@'127.0.0.1'")
    mariadb_server.execute(database, "CREATE TABLE t (id INT PRIMARY KEY)")
    try:
        target = connection(mariadb_server, "mariadb", database, user=user, password=password)
        with get_engine("mariadb").dump(target, DumpOptions(scratch_dir=tmp_path)) as dump:
            assert b"CREATE TABLE `t`" in dump.stream.read()
        assert list(tmp_path.iterdir()) == []
    finally:
        mariadb_server.execute(None, f"DROP USER '{user}'@'127.0.0.1'")
        mariadb_server.drop_database(database)


def test_it_quotes_and_escapes_option_values() -> None:
    assert option_value("a\"b'c\\d#e f") == '"a\\"b\\\'c\\\\d#e f"'
    assert option_value("x\ny") == '"x\\ny"'


# -- failures ----------------------------------------------------------------------------------------


def test_it_fails_a_wrong_password_with_authentication_failed_and_no_secret(
    mariadb_server: MariaDBServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_MARIADB_PASSWORD", "not-the-Right-one-42")
    target = make_target(
        mariadb_server, "mariadb", "mysql", local_storage, password="${WRONG_MARIADB_PASSWORD}"
    )
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    where = f"{mariadb_server.host}:{mariadb_server.port}"
    assert (
        backup.error_message == f"authentication failed for user backupsite on {where} (check the password)"
    )
    assert not any("not-the-Right-one-42" in step.message for step in backup.steps.all())
    with pytest.raises(EngineError, match="authentication failed"):
        get_engine("mariadb").check_restore_destination(
            connection(mariadb_server, "mariadb", "x", password="not-the-Right-one-42")
        )


@pytest.mark.parametrize(
    ("host", "port"), [("127.0.0.1", 1), ("10.255.255.1", 3306), ("no-such-host.invalid", 3306)]
)
def test_it_fails_within_the_connect_timeout_when_the_server_is_unreachable(
    host: str, port: int, local_storage: Storage
) -> None:
    target = Target.objects.create(
        name=unique_name("unreachable").replace("_", "-"),
        engine="mariadb",
        host=host,
        port=port,
        database="x",
        user="u",
        options={"connect_timeout": 2},
    )
    target.storages.add(local_storage)
    started = time.monotonic()
    backup = services.run_backup(target)
    assert time.monotonic() - started < 8
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(f"cannot reach the server at {host}:{port}: "), (
        backup.error_message
    )


def test_it_fails_within_the_connect_timeout_when_the_server_never_answers(local_storage: Storage) -> None:
    from tests.servers import silent_listener

    with silent_listener() as port:
        target = Target.objects.create(
            name="silent",
            engine="mariadb",
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


def test_it_fails_naming_a_missing_database(mariadb_server: MariaDBServer, local_storage: Storage) -> None:
    backup = services.run_backup(make_target(mariadb_server, "mysql", "nope_not_here", local_storage))
    assert backup.status == BackupStatus.FAILED
    assert (
        backup.error_message
        == f"database nope_not_here does not exist on {mariadb_server.host}:{mariadb_server.port}"
    )


def test_it_reports_a_missing_dump_tool_as_a_system_check_error_and_a_failed_run(
    mariadb_server: MariaDBServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = make_target(mariadb_server, "mariadb", "mysql", local_storage)
    assert_missing_tools_fail(
        target, ["mariadb-dump", "mariadb"], "not installed: mariadb-dump", monkeypatch, tmp_path
    )
    dump = get_engine("mariadb").dump(
        connection(mariadb_server, "mariadb", "mysql"), DumpOptions(scratch_dir=tmp_path)
    )
    with pytest.raises(EngineError, match="mariadb-dump is not installed"), dump:  # the engine says so too
        pass


def test_it_fails_a_dump_killed_midway_and_leaves_nothing_behind(
    mariadb_server: MariaDBServer,
    big_db: str,
    local_storage: Storage,
    storage_dir: Path,
    settings,
    tmp_path: Path,
) -> None:
    settings.BACKUPSITE_PROGRESS_INTERVAL = 0
    killed: list[int] = []
    option_files: list[int] = []

    def progress(raw: int, stored: int) -> None:
        if not killed and raw > 1024 * 1024:
            pid = child_named("mariadb-dump")
            if pid:
                option_files.extend(
                    f.stat().st_mode & 0o777 for f in (tmp_path / "scratch").glob("mysql-*/*")
                )
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    backup = services.run_backup(
        make_target(mariadb_server, "mariadb", big_db, local_storage), progress=progress
    )
    assert killed, "the test must have killed mariadb-dump while it streamed"
    assert backup.status == BackupStatus.FAILED
    assert "mariadb-dump was killed by SIGKILL" in backup.error_message
    assert [p for p in storage_dir.rglob("*") if p.is_file()] == []
    assert option_files == [0o600]  # while the tool ran: only the option file, private
    assert list((tmp_path / "scratch").glob("mysql-*")) == []  # and gone after the failure
    assert child_named("mariadb-dump") is None
    # The engine's snapshot session is closed too, and the server saw the killed tool go. (One
    # watching connection: the helper's own short connections linger a moment after closing.)
    others = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER = %s"
    with contextlib.closing(mariadb_server.connect()) as conn, conn.cursor() as cursor:

        def open_sessions() -> int:
            cursor.execute(others, (mariadb_server.user,))
            return int(cursor.fetchone()[0])

        deadline = time.monotonic() + 10
        while open_sessions():
            assert time.monotonic() < deadline, "a session of the failed dump is still open"
            time.sleep(0.05)


def test_it_fails_a_restore_that_hits_an_sql_error_with_the_server_message(
    mariadb_server: MariaDBServer, local_storage: Storage
) -> None:
    source_db = fill_sample(mariadb_server, unique_name("conflict"))
    destination_db = mariadb_server.create_database(unique_name("conflict_dst"))
    # A view where the backup has a table: DROP TABLE IF EXISTS leaves it, CREATE TABLE fails.
    mariadb_server.execute(destination_db, "CREATE VIEW customers AS SELECT 1 AS id")
    try:
        backup = services.run_backup(make_target(mariadb_server, "mariadb", source_db, local_storage))
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        log = restore_backup(backup, make_target(mariadb_server, "mariadb", destination_db))
        assert log.status == RestoreStatus.FAILED
        assert "ERROR 1050 (42S01) at line" in log.error_message
        assert "Table 'customers' already exists" in log.error_message
        assert "may be partially restored" in log.error_message
        assert "kündin" not in log.error_message  # the echoed statement (row data) is left out
    finally:
        mariadb_server.drop_database(source_db)
        mariadb_server.drop_database(destination_db)


def test_it_restores_over_its_own_source(mariadb_server: MariaDBServer, local_storage: Storage) -> None:
    database = fill_sample(mariadb_server, unique_name("again"))
    target = make_target(mariadb_server, "mysql", database, local_storage)
    try:
        original = table_rows(mariadb_server, database)
        backup = services.run_backup(target)
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        mariadb_server.execute(database, "DELETE FROM orders WHERE id > 10")
        mariadb_server.execute(database, "UPDATE customers SET name = 'changed'")
        log = restore_backup(backup, target, confirmed_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert table_rows(mariadb_server, database) == original
    finally:
        mariadb_server.drop_database(database)


HAND_MADE = b"""-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
/*!40101 SET NAMES utf8mb4 */;
CREATE TABLE good (id INT PRIMARY KEY);
INSERT INTO good VALUES (1),(2);
INSERT INTO good VALUES (3) ORDER BY nonsense garbage;
INSERT INTO good VALUES (4);
-- Dump completed on 2026-01-01  0:00:00
"""


def test_it_stops_a_hand_made_dump_at_its_sql_error(mariadb_server: MariaDBServer, tmp_path: Path) -> None:
    destination = connection(mariadb_server, "mariadb", unique_name("hand_made"))
    engine = get_engine("mariadb")
    try:
        with pytest.raises(EngineError) as caught:
            engine.restore(destination, io.BytesIO(HAND_MADE), RestoreOptions(scratch_dir=tmp_path))
        assert "ERROR 1064 (42000) at line 5:" in str(caught.value)
        assert "partially restored" in str(caught.value)
        assert mariadb_server.execute(destination.database, "SELECT id FROM good ORDER BY id") == [(1,), (2,)]
    finally:
        engine.drop_database(destination)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"", "the backup is empty"),
        (b"CREATE TABLE x (id INT);\n", "not a mysqldump/mariadb-dump file"),
    ],
)
def test_it_never_calls_a_restore_of_nothing_or_garbage_a_success(
    mariadb_server: MariaDBServer, stream: bytes, message: str, tmp_path: Path
) -> None:
    destination = connection(mariadb_server, "mariadb", unique_name("nothing"))
    with pytest.raises(NotADump, match=message):
        get_engine("mariadb").restore(destination, io.BytesIO(stream), RestoreOptions(scratch_dir=tmp_path))
    assert not mariadb_server.database_exists(destination.database)  # refused before touching it


def test_it_fails_the_restore_of_a_truncated_dump(mariadb_server: MariaDBServer, tmp_path: Path) -> None:
    truncated = HAND_MADE.replace(b"INSERT INTO good VALUES (3) ORDER BY nonsense garbage;\n", b"").rsplit(
        b"--", 1
    )[0]
    destination = connection(mariadb_server, "mariadb", unique_name("truncated"))
    try:
        with pytest.raises(EngineError, match="the dump is incomplete"):
            get_engine("mariadb").restore(
                destination, io.BytesIO(truncated), RestoreOptions(scratch_dir=tmp_path)
            )
    finally:
        mariadb_server.drop_database(destination.database)


# -- filters, trial restores, scratch databases -----------------------------------------------


def test_it_backs_up_only_the_tables_asked_for(mariadb_server: MariaDBServer, local_storage: Storage) -> None:
    database = fill_sample(mariadb_server, unique_name("filters"))
    try:
        only = services.run_backup(
            make_target(mariadb_server, "mariadb", database, local_storage, include_tables=["customers"])
        )
        assert only.status == BackupStatus.SUCCESS, only.error_message
        assert (only.engine_info["tables"], only.engine_info["views"]) == (["customers"], [])
        assert list(only.engine_info["row_counts"]) == ["customers"]
        without = services.run_backup(
            make_target(mariadb_server, "mariadb", database, local_storage, exclude_tables=["orders"])
        )
        assert without.status == BackupStatus.SUCCESS, without.error_message
        assert (without.engine_info["tables"], without.engine_info["views"]) == (
            ["customers"],
            ["big_spenders"],
        )
        restored_db = unique_name("filters_restored")
        log = restore_backup(without, make_target(mariadb_server, "mariadb", restored_db))
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        kinds = mariadb_server.execute(restored_db, "SHOW FULL TABLES")
        assert sorted(kinds) == [("big_spenders", "VIEW"), ("customers", "BASE TABLE")]
        mariadb_server.drop_database(restored_db)
        unknown = services.run_backup(
            make_target(mariadb_server, "mariadb", database, local_storage, exclude_tables=["orders", "nope"])
        )
        assert unknown.status == BackupStatus.FAILED
        assert unknown.error_message == f"table(s) not found in database {database}: nope"
    finally:
        mariadb_server.drop_database(database)


def test_it_checks_header_trailer_and_text_in_a_trial_restore(
    mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    database = fill_sample(mariadb_server, unique_name("trial"))
    engine = get_engine("mariadb")
    try:
        with engine.dump(
            connection(mariadb_server, "mariadb", database), DumpOptions(scratch_dir=tmp_path)
        ) as dump:
            data = dump.stream.read()
    finally:
        mariadb_server.drop_database(database)
    options = RestoreOptions(scratch_dir=tmp_path)
    summary = engine.trial_restore(io.BytesIO(data), options)
    assert summary.startswith("MariaDB dump") and "2 CREATE TABLE and 2 INSERT statement(s)" in summary

    class Trickle(io.BytesIO):  # a stream that hands out a few bytes at a time
        def read(self, size: int | None = -1) -> bytes:
            return super().read(7)

    assert engine.trial_restore(Trickle(data), options) == summary
    cut = data[: data.rindex(b"-- Dump completed")]
    with pytest.raises(EngineError, match="incomplete"):
        engine.trial_restore(io.BytesIO(cut), options)
    at = data.index("kündin".encode())
    with pytest.raises(EngineError, match="not valid UTF-8"):
        engine.trial_restore(io.BytesIO(data[:at] + b"\xff\xfe" + data[at + 2 :]), options)
    with pytest.raises(EngineError, match="NUL"):
        engine.trial_restore(io.BytesIO(data[:at] + b"\x00" + data[at + 1 :]), options)


def test_it_deep_verifies_by_restoring_into_a_scratch_database_on_the_sandbox(
    mariadb_server: MariaDBServer, local_storage: Storage
) -> None:
    database = fill_sample(mariadb_server, unique_name("sandboxed"))
    try:
        backup = services.run_backup(make_target(mariadb_server, "mysql", database, local_storage))
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        outcome = services.verify_backup(
            backup, deep=True, sandbox=make_target(mariadb_server, "mysql", "unused")
        )
        assert outcome.ok, outcome.messages
        assert "restored into scratch database backupsite_verify_" in outcome.messages[0]
        leftovers = mariadb_server.execute(None, "SHOW DATABASES LIKE 'backupsite\\_verify\\_%'")
        assert leftovers == []
    finally:
        mariadb_server.drop_database(database)


def test_it_never_claims_to_know_that_nothing_changed(mariadb_server: MariaDBServer) -> None:
    assert get_engine("mysql").fingerprint(connection(mariadb_server, "mysql", "mysql")) is None
