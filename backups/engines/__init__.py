"""Engine registry. Keys are stored in ``Target.engine``; adding an engine is one new module
listed in ``ENGINES`` (or in the ``BACKUPSITE_ENGINES`` setting) plus its tests."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings

from backups.plugins import Registry

from .base import Connection, DumpOptions, Engine, EngineError, RestoreOptions

ENGINES: dict[str, str] = {
    "sqlite": "backups.engines.sqlite.SQLiteEngine",
    "files": "backups.engines.files.engine.FilesEngine",
    "mysql": "backups.engines.mysql.engine.MySQLEngine",
    "mariadb": "backups.engines.mysql.engine.MariaDBEngine",
    "postgresql": "backups.engines.postgresql.engine.PostgreSQLEngine",
    "redis": "backups.engines.redis.engine.RedisEngine",
    "mongodb": "backups.engines.mongodb.engine.MongoDBEngine",
    "clickhouse": "backups.engines.clickhouse.engine.ClickHouseEngine",
    "external": "backups.engines.external.ExternalEngine",  # watched, not run (backups.watching)
}


#: Labels for the admin's choices, so listing engines does not import every database driver
#: (psycopg, MySQLdb) into every process; an engine missing here is imported for its label.
LABELS: dict[str, str] = {
    "sqlite": "SQLite",
    "files": "Files",
    "postgresql": "PostgreSQL",
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "redis": "Redis",
    "mongodb": "MongoDB",
    "clickhouse": "ClickHouse",
    "external": "External (watched)",
}


def _configured() -> dict[str, Any]:
    """Engines added by the ``BACKUPSITE_ENGINES`` setting (read at every look-up)."""
    return getattr(settings, "BACKUPSITE_ENGINES", {})


REGISTRY: Registry[Engine] = Registry(
    "engine",
    ENGINES,
    labels=LABELS,
    error=EngineError,
    unknown="unknown {family} {key!r}; available: {keys}",
    extra=_configured,
    sort=True,
)


def engine_paths() -> dict[str, str]:
    return REGISTRY.paths()


def engine_keys() -> list[str]:
    return REGISTRY.keys()


def engine_choices() -> list[tuple[str, str]]:
    return REGISTRY.choices()


@cache
def get_engine(key: str) -> Engine:
    engine: Engine = REGISTRY.load(key)()
    return engine


__all__ = [
    "Connection",
    "DumpOptions",
    "Engine",
    "EngineError",
    "RestoreOptions",
    "engine_choices",
    "engine_keys",
    "get_engine",
]
