"""A throwaway PostgreSQL cluster (Debian's packages) on a free loopback port.

PostgreSQL refuses to run as root, so when the suite runs as root the cluster belongs to the
``postgres`` system user and lives in its own temp directory (pytest's tmp dirs are 0700 root).
Clients connect over TCP with a password (scram-sha-256), exactly like production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import free_port

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "pg-Sup3r:secret\\with'quotes"  # exercises pgpass escaping


def bin_dir(version: int = 15) -> Path:
    return Path(f"/usr/lib/postgresql/{version}/bin")


@dataclass
class PostgresServer:
    base: Path
    port: int
    version: int = 15
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    password: str = SUPERUSER_PASSWORD

    @property
    def data(self) -> Path:
        return self.base / "data"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> None:
        tools = bin_dir(self.version)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        subprocess.run(
            self._as_owner(
                [
                    str(tools / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
                    "--locale=C.UTF-8", "--no-sync",
                ]
            ),
            check=True, capture_output=True, cwd=self.base,
        )  # fmt: skip
        pwfile.unlink()
        self.resume()

    def resume(self) -> None:
        """Start the initialised cluster (again, after ``halt()``) and wait until it accepts."""
        settings = (
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.base} "
            # autovacuum off: skip-if-unchanged tests need a WAL position that only moves on writes
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
            "-c shared_buffers=128MB -c autovacuum=off"
        )
        subprocess.run(
            self._as_owner(
                [str(bin_dir(self.version) / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                 "-o", settings, "-w", "-t", "60", "start"]
            ),
            check=True, capture_output=True, cwd=self.base,
        )  # fmt: skip

    def halt(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``: fast ends every session, immediate also skips
        the checkpoint) and keep its data for ``resume()``."""
        subprocess.run(
            self._as_owner([str(bin_dir(self.version) / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=True, capture_output=True, cwd=self.base,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(
                [str(bin_dir(self.version) / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            ),
            capture_output=True,
            cwd=self.base,
        )
        shutil.rmtree(self.base, ignore_errors=True)

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=kwargs.pop("user", self.user),
            password=kwargs.pop("password", self.password),
            dbname=database,
            autocommit=True,
            **kwargs,
        )

    def execute(self, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(database)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database_exists(self, name: str) -> bool:
        return bool(self.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / "server.log").read_text().splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_postgres(version: int = 15) -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="backupsite-pg-"))
    base.chmod(0o755)
    server = PostgresServer(base=base, port=free_port(), version=version)
    try:
        server.start()
        yield server
    finally:
        server.stop()
