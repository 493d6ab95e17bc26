"""Engine registry. Keys are stored in ``Target.engine``; adding an engine is one new module
listed in ``ENGINES`` (or in the ``BACKUPSITE_ENGINES`` setting) plus its tests."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

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
}


def engine_paths() -> dict[str, str]:
    return {**ENGINES, **getattr(settings, "BACKUPSITE_ENGINES", {})}


def engine_keys() -> list[str]:
    return sorted(engine_paths())


def engine_choices() -> list[tuple[str, str]]:
    return [(key, LABELS.get(key) or get_engine(key).label) for key in engine_keys()]


@cache
def get_engine(key: str) -> Engine:
    try:
        path = engine_paths()[key]
    except KeyError:
        raise EngineError(f"unknown engine {key!r}; available: {', '.join(engine_keys())}") from None
    engine_class = import_string(path)
    engine: Engine = engine_class()
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
