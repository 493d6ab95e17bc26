"""A PostgreSQL target's settings: its options checked (with field names) and their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backups.engines.base import Connection, refuse_problems
from backups.engines.options import boolean, encodable, one_of, option_problems, seconds, whole_number
from backups.plugins import Option

DEFAULT_PORT = 5432
# After a restore: "presence" checks every table the backup counted exists and, if it had rows,
# has rows (one cheap query per table); "exact" counts every table's rows, a full scan of the
# restored data that costs about as much as reading it again.
RESTORE_CHECKS = ("presence", "exact")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# pg_restore -j N opens N + 1 sessions on the destination server; more than its cores buys nothing.
MAX_RESTORE_JOBS = 32


def _text(value: Any) -> str | None:
    """A name or path for libpq's environment: text without NUL or line breaks ("" = default)."""
    if isinstance(value, str) and encodable(value) and not any(c in value for c in "\x00\r\n"):
        return None
    return f"must be text without line breaks, got {value!r}"


def _sslmode(value: Any) -> str | None:
    return None if value == "" else one_of(SSL_MODES)(value)


def _restore_jobs(value: Any) -> str | None:
    if whole_number(value) and 1 <= value <= MAX_RESTORE_JOBS:
        return None
    return f"must be a whole number from 1 to {MAX_RESTORE_JOBS} (1: one job, streamed), got {value!r}"


def _schemas(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(s, str) and s and _text(s) is None for s in value):
        return None
    return "must be a list of schema names"


OPTIONS = {
    "sslmode": Option(f"one of {', '.join(SSL_MODES)} (default: libpq's, prefer)", _sslmode),
    "sslrootcert": Option("path of the CA certificate (PEM) to verify the server with", _text),
    "sslcert": Option("path of the client certificate (PEM)", _text),
    "sslkey": Option("path of the client key (PEM)", _text),
    "connect_timeout": Option("seconds, 1-600 (default 10)", seconds(1, 600)),
    "schemas": Option("dumps: only these schemas (default: all)", _schemas),
    "no_owner": Option("restores: pg_restore --no-owner (default true)", boolean),
    "no_privileges": Option("restores: pg_restore --no-privileges (default false)", boolean),
    "exit_on_error": Option("restores: stop at the first error (default true)", boolean),
    "single_transaction": Option("restores: all or nothing, in one transaction (default true)", boolean),
    "clean": Option("restores: drop each object before re-creating it (default true)", boolean),
    "maintenance_database": Option(
        "database to connect to for CREATE/DROP DATABASE (default postgres)", _text
    ),
    "bin_dir": Option("directory of pg_dump and pg_restore (default: every installed version)", _text),
    "row_counts": Option("dumps: count every table's rows in the dump's snapshot (default true)", boolean),
    "restore_check": Option(
        f"restores: {' or '.join(RESTORE_CHECKS)} (default presence)", one_of(RESTORE_CHECKS)
    ),
    "restore_jobs": Option(
        "restores: pg_restore -j N from a copy spooled to the scratch directory, into a database the "
        "restore creates (or with single_transaction = false); default 1, streamed in one transaction",
        _restore_jobs,
    ),
}


@dataclass(frozen=True)
class Settings:
    """A target's options, checked and with defaults applied."""

    sslmode: str = ""
    sslrootcert: str = ""
    sslcert: str = ""
    sslkey: str = ""
    connect_timeout: int = 10
    schemas: tuple[str, ...] = ()
    no_owner: bool = True
    no_privileges: bool = False
    exit_on_error: bool = True
    single_transaction: bool = True
    clean: bool = True
    maintenance_database: str = "postgres"
    bin_dir: str = ""
    row_counts: bool = True
    restore_check: str = "presence"
    restore_jobs: int = 1

    @classmethod
    def of(cls, connection: Connection) -> Settings:
        values = dict(connection.options)
        values["schemas"] = tuple(values.get("schemas", ()))
        return cls(**{key: value for key, value in values.items() if key in OPTIONS})


def qualified(name: str) -> tuple[str, str]:
    """``schema.table`` -> (schema, table); a bare name means ``public``."""
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else ("public", name)


def validate(connection: Connection) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not connection.database:
        problems.append(("database", "required: the name of the database to back up"))
    elif "\x00" in connection.database or "://" in connection.database or "=" in connection.database:
        problems.append(("database", "must be a plain database name, not a connection string"))
    if connection.port is not None and not 1 <= connection.port <= 65535:
        problems.append(("port", f"must be between 1 and 65535, got {connection.port}"))
    if "\n" in connection.password or "\r" in connection.password:
        problems.append(("password", "must not contain a line break (a passfile cannot hold it)"))
    problems += option_problems(connection.options, OPTIONS)
    for field_name in ("include_tables", "exclude_tables"):
        for name in getattr(connection, field_name):
            schema, table = qualified(name)
            if not schema or not table:
                problems.append((field_name, f"{name!r} must be written schema.table"))
    return problems


def settings_for(connection: Connection) -> Settings:
    """The connection's settings with defaults; :class:`EngineError` lists the problems."""
    refuse_problems(validate(connection))
    return Settings.of(connection)
