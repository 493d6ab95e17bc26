"""PostgreSQL and MariaDB for the benchmark: a throwaway server, the data set, the raw tools.

The servers are the test suite's (``tests/servers/``: a temp directory, a free loopback port,
fsync off). Raw tools, our ``backup_create``/``backup_restore`` and django-dbbackup all run
against the same server in the same session, so the shortcuts that make it fast apply to every
side alike.

Data set: pgbench's four tables at a scale factor, 100,000 ``accounts`` rows per unit. For
PostgreSQL it is ``pgbench -i`` itself; for MariaDB the same tables and values are generated
server-side from the ``seq_1_to_N`` engine (``filler`` is a VARCHAR of 84 spaces, as
PostgreSQL's blank-padded CHAR(84) prints them, so both dumps have about the same bytes).
Generation takes seconds (scale 50: ~7 s on PostgreSQL, ~15 s on MariaDB), so the data set is
regenerated in each run's fresh server rather than cached.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from measure import ROOT, BenchError

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ACCOUNTS_PER_SCALE = 100_000
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers")
RESTORE_DATABASE = "bench_restore"


def tool_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without inherited database credentials, plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}
    inherited.pop("DATABASE_URL", None)
    return {**inherited, **extra}


def source_database(scale: int) -> str:
    return f"bench_s{scale}"


class Flavour(ABC):
    """One database server kind: how to fill it, and the raw tools' and each side's settings."""

    key: str  # our engine key
    title: str
    password_variable: str  # the reference our targets use, set only in our child's environment
    django_engine: str  # for the django-dbbackup project
    server: Any  # tests.servers' PostgresServer / MariaDBServer

    @abstractmethod
    def generate(self, database: str, scale: int) -> None: ...

    @abstractmethod
    def dump_argv(self, database: str) -> list[str]:
        """The raw dump command, writing the whole database to stdout."""

    @abstractmethod
    def load_argv(self, database: str) -> list[str]:
        """The raw restore command, reading the dump from stdin into an existing database."""

    @abstractmethod
    def tool_env(self) -> dict[str, str]:
        """The raw tools' environment (credentials included)."""

    @abstractmethod
    def count(self, database: str, table: str) -> int: ...

    @abstractmethod
    def database_bytes(self, database: str) -> int: ...

    @abstractmethod
    def versions(self) -> dict[str, str]: ...

    def target(self, name: str, database: str, compression: str, storage: str, **options: Any) -> str:
        """A ``[targets.NAME]`` block of our TOML configuration."""
        lines = [
            f"[targets.{name}]",
            f'engine = "{self.key}"',
            f"host = {json.dumps(self.server.host)}",
            f"port = {self.server.port}",
            f"user = {json.dumps(self.server.user)}",
            f'password = "${{{self.password_variable}}}"',
            f"database = {json.dumps(database)}",
            f'compression = "{compression}"',
            f'storages = ["{storage}"]',
        ]
        if options:
            values = ", ".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
            lines.append(f"options = {{ {values} }}")
        return "\n".join([*lines, ""])

    def secret_env(self) -> dict[str, str]:
        return {self.password_variable: self.server.password}

    def django_env(self, database: str) -> dict[str, str]:
        """DATABASES['default'] of the django-dbbackup project, passed in its environment."""
        return {
            "BENCH_DB_ENGINE": self.django_engine,
            "BENCH_DB_NAME": database,
            "BENCH_DB_HOST": self.server.host,
            "BENCH_DB_PORT": str(self.server.port),
            "BENCH_DB_USER": self.server.user,
            "BENCH_DB_PASSWORD": self.server.password,
        }

    def counts(self, database: str) -> dict[str, int]:
        return {table: self.count(database, table) for table in PGBENCH_TABLES}

    @abstractmethod
    def settle(self) -> None:
        """Wait until the server's background work after bulk writes is done."""

    def fresh_database(self, name: str) -> None:
        self.server.drop_database(name)
        self.server.create_database(name)

    def drop_database(self, name: str) -> None:
        self.server.drop_database(name)


class Postgres(Flavour):
    key = "postgresql"
    title = "PostgreSQL"
    password_variable = "BENCH_PG_PASSWORD"
    django_engine = "django.db.backends.postgresql"

    def __init__(self, server: Any) -> None:
        self.server = server

    def tool_env(self) -> dict[str, str]:
        return clean_env(
            {
                "PGHOST": self.server.host,
                "PGPORT": str(self.server.port),
                "PGUSER": self.server.user,
                "PGPASSWORD": self.server.password,
            }
        )

    def generate(self, database: str, scale: int) -> None:
        self.server.create_database(database)
        # Server-side generation (G), then vacuum and primary keys, like a plain `pgbench -i`.
        argv = [str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale), "-I", "dtGvp", database]
        done = subprocess.run(argv, env=self.tool_env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"pgbench -i failed:\n{done.stderr[-2000:]}")

    def settle(self) -> None:
        """Nothing to wait for: our engine's counts are exact in pg_dump's own snapshot."""

    def dump_argv(self, database: str) -> list[str]:
        return [str(PG_BIN / "pg_dump"), "-Fc", "-Z0", database]

    def load_argv(self, database: str) -> list[str]:
        return [str(PG_BIN / "pg_restore"), "-d", database]

    def count(self, database: str, table: str) -> int:
        return int(self.server.execute(database, f"SELECT count(*) FROM {table}")[0][0])

    def database_bytes(self, database: str) -> int:
        return int(self.server.execute(database, "SELECT pg_database_size(current_database())")[0][0])

    def versions(self) -> dict[str, str]:
        server = self.server.execute("postgres", "SHOW server_version")[0][0]
        return {
            "PostgreSQL server": str(server),
            "pg_dump": tool_version([str(PG_BIN / "pg_dump"), "--version"]).split("(PostgreSQL) ")[-1],
        }


class MariaDB(Flavour):
    key = "mariadb"
    title = "MariaDB"
    password_variable = "BENCH_MARIADB_PASSWORD"
    django_engine = "django.db.backends.mysql"

    def __init__(self, server: Any, option_file: Path) -> None:
        self.server = server
        self.option_file = option_file
        option_file.parent.mkdir(parents=True, exist_ok=True)
        option_file.unlink(missing_ok=True)
        fd = os.open(option_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(
                "[client]\n"
                f"host={server.host}\nport={server.port}\nuser={server.user}\n"
                f"password={option_value(server.password)}\n"
            )

    def tool_env(self) -> dict[str, str]:
        return clean_env({})

    def generate(self, database: str, scale: int) -> None:
        self.server.create_database(database)
        accounts = scale * ACCOUNTS_PER_SCALE
        statements = [
            "CREATE TABLE pgbench_branches (bid INT NOT NULL PRIMARY KEY, bbalance INT, filler VARCHAR(88))",
            "CREATE TABLE pgbench_tellers (tid INT NOT NULL PRIMARY KEY, bid INT, tbalance INT, "
            "filler VARCHAR(84))",
            "CREATE TABLE pgbench_accounts (aid INT NOT NULL PRIMARY KEY, bid INT, abalance INT, "
            "filler VARCHAR(84))",
            "CREATE TABLE pgbench_history (tid INT, bid INT, aid INT, delta INT, mtime DATETIME, "
            "filler VARCHAR(22))",
            f"INSERT INTO pgbench_branches SELECT seq, 0, NULL FROM seq_1_to_{scale}",
            f"INSERT INTO pgbench_tellers SELECT seq, (seq - 1) DIV 10 + 1, 0, NULL FROM seq_1_to_{scale * 10}",
            "INSERT INTO pgbench_accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, REPEAT(' ', 84) "
            f"FROM seq_1_to_{accounts}",
            "ANALYZE TABLE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history",
        ]
        for statement in statements:
            self.server.execute(database, statement)

    def settle(self, quiet_seconds: float = 3.0, limit_seconds: float = 180.0) -> None:
        """Wait until InnoDB's log sequence number stops moving. After bulk writes (generation,
        a restore and its DROP) purge and statistics keep writing redo for ~30 s; our engine marks
        the row counts of a backup taken meanwhile as not exact, and a restore checks only exact
        counts. The restore sources are made after this, so our timed restores include the check."""
        deadline = time.monotonic() + limit_seconds
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            lsn = self.server.execute(None, "SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'")
            if lsn != last:
                last, since = lsn, time.monotonic()
            elif time.monotonic() - since >= quiet_seconds:
                return
            time.sleep(0.5)

    def dump_argv(self, database: str) -> list[str]:
        return [
            "mariadb-dump", f"--defaults-extra-file={self.option_file}", "--single-transaction", "--quick",
            "--routines", "--triggers", "--events", "--hex-blob", database,
        ]  # fmt: skip

    def load_argv(self, database: str) -> list[str]:
        return ["mariadb", f"--defaults-extra-file={self.option_file}", database]

    def count(self, database: str, table: str) -> int:
        return int(self.server.execute(database, f"SELECT COUNT(*) FROM `{table}`")[0][0])

    def database_bytes(self, database: str) -> int:
        rows = self.server.execute(
            None,
            "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (database,),
        )
        return int(rows[0][0] or 0)

    def versions(self) -> dict[str, str]:
        server = self.server.execute(None, "SELECT VERSION()")[0][0]
        dump = tool_version(["mariadb-dump", "--no-defaults", "--version"])
        return {"MariaDB server": str(server), "mariadb-dump": dump.split("Distrib ")[-1].split(",")[0]}


def option_value(value: str) -> str:
    """``value`` double-quoted for a MySQL option file (a '#' inside quotes is not a comment)."""
    escapes = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(char, char) for char in value) + '"'


@contextlib.contextmanager
def running(key: str, work: Path) -> Iterator[Flavour]:
    """A fresh server of kind ``key`` for the duration of the block."""
    if key == "postgresql":
        from tests.servers.postgres import running_postgres

        with running_postgres() as pg:
            yield Postgres(pg)
    elif key == "mariadb":
        from tests.servers.mariadb import running_mariadb

        option_file = work / "mariadb" / "client.cnf"
        try:
            with running_mariadb() as maria:
                yield MariaDB(maria, option_file)
        finally:
            option_file.unlink(missing_ok=True)
    else:
        raise BenchError(f"unknown server engine {key!r}")
