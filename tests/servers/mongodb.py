"""A throwaway MongoDB server (``mongod``) on a free loopback port in a temp dir, with
authorization on and two users made through the localhost exception: ``root`` for the suite's
own setup and checks, and ``backupsite`` with MongoDB's documented ``backup`` and ``restore``
roles, the user a real deployment would give Backupsite.

MongoDB Community Server and the Database Tools are not packaged by Debian, PyPI or npm (the
registries this project reaches; npm's mongodb-memory-server downloads from MongoDB's own site
at install time). The tests that need a server are skipped, saying so, when ``mongod``,
``mongodump`` or ``mongorestore`` is not on PATH; install them from MongoDB's repository or
tarballs to run them.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from . import free_port, stop_process, wait_for

PROGRAMS = ("mongod", "mongodump", "mongorestore")


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name) is None]


def skip_reason(missing: list[str]) -> str:
    return (
        f"needs MongoDB: {', '.join(missing)} not on PATH. MongoDB Community Server and the "
        "Database Tools are not packaged in the registries this project can reach (Debian, PyPI, "
        "npm); install them from MongoDB's repository or tarballs to run these tests"
    )


@dataclass
class MongoServer:
    base: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "backupsite"
    # Characters a YAML file, a URI or a shell would trip on: the --config file must carry them.
    password: str = field(default_factory=lambda: f"pw {secrets.token_hex(8)} ü#'\"\\:@/?%&=")
    root_password: str = field(default_factory=lambda: secrets.token_hex(16))

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        """A pymongo client authenticated as ``root`` (the suite's own setup and checks)."""
        return MongoClient(
            self.host,
            self.port,
            username="root",
            password=self.root_password,
            authSource="admin",
            directConnection=True,
            serverSelectionTimeoutMS=10_000,
            **options,
        )

    def create_user(self, name: str, password: str, roles: list[str]) -> None:
        with self.client() as client:
            client.admin.command("createUser", name, pwd=password, roles=roles)

    def drop_user(self, name: str) -> None:
        with self.client() as client:
            client.admin.command("dropUser", name)

    def drop_database(self, name: str) -> None:
        with self.client() as client:
            client.drop_database(name)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            text = (self.base / "mongod.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


def _answers(server: MongoServer) -> bool:
    try:
        probe: MongoClient[dict[str, Any]]
        with MongoClient(
            server.host, server.port, directConnection=True, serverSelectionTimeoutMS=500
        ) as probe:
            probe.admin.command("ping")  # allowed without authentication
        return True
    except PyMongoError:
        return False


@contextlib.contextmanager
def running_mongod() -> Iterator[MongoServer]:
    missing = missing_programs()
    if missing:
        raise RuntimeError(skip_reason(missing))
    base = Path(tempfile.mkdtemp(prefix="backupsite-mongodb-"))
    (base / "data").mkdir()
    server = MongoServer(base=base, port=free_port())
    argv = [
        "mongod", "--dbpath", str(base / "data"), "--bind_ip", server.host, "--port", str(server.port),
        "--auth", "--unixSocketPrefix", str(base), "--logpath", str(base / "mongod.log"),
        "--wiredTigerCacheSizeGB", "0.25", "--setParameter", "diagnosticDataCollectionEnabled=false",
    ]  # fmt: skip
    process = subprocess.Popen(argv, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: process.poll() is None and _answers(server), "mongod", 60)
        except RuntimeError:
            raise RuntimeError(f"mongod did not start:\n{server.log_tail()}") from None
        # The localhost exception lets the first user be created without authenticating.
        first: MongoClient[dict[str, Any]]
        with MongoClient(server.host, server.port, directConnection=True) as first:
            first.admin.command("createUser", "root", pwd=server.root_password, roles=["root"])
        server.create_user(server.user, server.password, ["backup", "restore"])
        yield server
    finally:
        stop_process(process, timeout=30)
        shutil.rmtree(base, ignore_errors=True)
