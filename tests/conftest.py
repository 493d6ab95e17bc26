"""Shared fixtures: real SQLite databases, real directory trees, real local storage."""

from __future__ import annotations

import hashlib
import itertools
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from backups.models import Storage, Target
from tests.config_builder import Sections, write_config

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBServer
from tests.servers.catalog import chosen_catalog, session_catalog
from tests.servers.postgres import PostgresServer, running_postgres

pytest_plugins = [
    f"tests.plugins.{kind}"
    for kind in (
        "local",
        "s3",
        "sftp",
        "ftp",
        "gcs",
        "azure",
        "notify",
        "redis",
        "mongodb",
        "clickhouse",
    )
]

REPO = Path(__file__).resolve().parent.parent
PG_PASSWORD_ENV = "TEST_PG_PASSWORD"


def pytest_configure(config: pytest.Config) -> None:
    chosen_catalog()  # a mistyped BACKUPSITE_TEST_CATALOG stops the session before any test runs


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-django's hook, just before it creates the test databases: the catalog is the one
    BACKUPSITE_TEST_CATALOG names (tests/servers/catalog.py), alive until they are dropped."""
    from django.conf import settings

    with session_catalog(settings.DATABASES):
        request.getfixturevalue("django_db_modify_db_settings_parallel_suffix")  # what it did before
        yield


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 cluster for the whole session (superuser ``postgres``, password auth)."""
    with running_postgres() as server:
        os.environ[PG_PASSWORD_ENV] = server.password  # targets hold the reference ${TEST_PG_PASSWORD}
        yield server
        os.environ.pop(PG_PASSWORD_ENV, None)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{next(_counter)}_{os.getpid()}"


_counter = itertools.count(1)


def server_target(
    engine: str,
    server: Any,
    password_env: str,
    storage: Storage | None = None,
    *,
    name: str = "",
    prefix: str = "",
    **fields: Any,
) -> Target:
    """A Target of ``engine`` on a test ``server`` (its host, port and user, if it has one) whose
    password is the reference ``${password_env}``; named ``name``, or uniquely after ``prefix``
    and the database."""
    database = fields.get("database", "")
    values: dict[str, Any] = {
        "engine": engine,
        "host": server.host,
        "port": server.port,
        "user": getattr(server, "user", ""),
        "password": "${" + password_env + "}",
        **fields,
    }
    if not name:
        name = unique_name(f"{prefix or engine}-{database}" if database else prefix or engine)
        name = name.replace("_", "-")[:100]
    target = Target.objects.create(name=name, **values)
    if storage is not None:
        target.storages.add(storage)
    return target


def pg_target(
    server: PostgresServer, name: str, database: str, storage: Storage | None = None, **fields: Any
) -> Target:
    """A postgresql Target on ``server`` whose password is the reference ${TEST_PG_PASSWORD}."""
    return server_target(
        "postgresql", server, PG_PASSWORD_ENV, storage, name=name, database=database, **fields
    )


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A real MariaDB server (mariadbd, temp datadir) for the whole session."""
    from tests.servers.mariadb import running_mariadb

    with running_mariadb() as server:
        yield server


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Queued Celery tasks run at once in the test's process (Celery's in-process mode), their
    errors raised."""
    from backupsite.celery import app

    saved = {name: app.conf[name] for name in ("task_always_eager", "task_eager_propagates")}
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    app.conf.update(saved)


@pytest.fixture(autouse=True)
def _scratch_dir(settings, tmp_path: Path) -> None:
    settings.BACKUPSITE_TMP = tmp_path / "scratch"


def fill_sqlite(path: Path, rows: int = 200) -> Path:
    """A small but varied SQLite database: text with unicode, blobs, reals, an index, a view."""
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, event TEXT)")
        db.execute("CREATE INDEX IF NOT EXISTS people_name ON people(name)")
        db.execute("CREATE VIEW IF NOT EXISTS top AS SELECT name FROM people WHERE score > 50")
        db.executemany(
            "INSERT INTO people (name, score, photo) VALUES (?, ?, ?)",
            [(f"persön-{i} 🚀", i * 1.5, os.urandom(64)) for i in range(rows)],
        )
        db.executemany("INSERT INTO audit (event) VALUES (?)", [(f"event {i}",) for i in range(rows)])
    db.close()
    return path


def sqlite_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: list(db.execute(f'SELECT * FROM "{t}" ORDER BY rowid')) for t in tables}
    finally:
        db.close()


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Path:
    return fill_sqlite(tmp_path / "source.sqlite3")


@pytest.fixture
def files_tree(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    (root / "sub" / "deeper" / "ünïcode name.txt").write_text("ü\n")
    (root / "empty-dir").mkdir()
    (root / "link").symlink_to("a.txt")
    return root


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def toml_config(tmp_path: Path, storage_dir: Path) -> Callable[..., Path]:
    """``toml_config(targets={...}, schedules={...})`` writes tmp_path / "c.toml" (or ``name``)
    with the storage ``local`` at ``storage_dir`` first (tests/config_builder.py's write_config)."""

    def write(name: str = "c.toml", **sections: Sections) -> Path:
        return write_config(tmp_path / name, storage_dir=storage_dir, **sections)

    return write


@pytest.fixture
def key_dir(tmp_path: Path, settings: Any) -> Path:
    """The only secret directory (BACKUPSITE_SECRETS_DIRS) for the test: encryption key files."""
    path = tmp_path / "secrets"
    path.mkdir(mode=0o700)
    settings.BACKUPSITE_SECRETS_DIRS = [str(path)]
    return path


@pytest.fixture
def local_storage(db: None, storage_dir: Path) -> Storage:
    return Storage.objects.create(name="local", kind="local", options={"path": str(storage_dir)})


@pytest.fixture
def sqlite_target(local_storage: Storage, sqlite_source: Path) -> Target:
    target = Target.objects.create(name="app-db", engine="sqlite", database=str(sqlite_source))
    target.storages.add(local_storage)
    return target


@pytest.fixture
def copy_target(local_storage: Storage, tmp_path: Path) -> Target:
    """A second SQLite target that already holds other data (a restore's destination)."""
    path = fill_sqlite(tmp_path / "copy.sqlite3", rows=3)
    target = Target.objects.create(name="app-db-copy", engine="sqlite", database=str(path))
    target.storages.add(local_storage)
    return target


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files_target(local_storage: Storage, files_tree: Path) -> Target:
    target = Target.objects.create(name="media", engine="files", paths=[str(files_tree)], compression="zstd")
    target.storages.add(local_storage)
    return target


@pytest.fixture
def manage(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``manage.py`` in a subprocess with its own migrated BACKUPSITE_HOME (real exit codes)."""
    home = tmp_path / "home"
    env = {**os.environ, "BACKUPSITE_HOME": str(home), "DJANGO_SETTINGS_MODULE": "backupsite.settings"}
    env.pop("DATABASE_URL", None)

    def run(
        *args: str, input: str | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO,
            env={**env, **(extra_env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = run("migrate", "--noinput", "-v0")
    assert result.returncode == 0, result.stderr
    return run
