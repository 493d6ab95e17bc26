"""PostgreSQL sessions: the engine's settings, the tools' environment and passfile, psycopg
connections, and libpq's messages turned into advice. The base of :class:`PostgreSQLEngine`
(:mod:`.engine`) and of its restore side (:mod:`.restoring`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from backups.engines.base import Connection, Engine, EngineError
from backups.engines.postgresql.settings import DEFAULT_PORT, Settings, settings_for
from backups.engines.process import base_env, secret_file


def table_parts(rows: list[tuple[Any, ...]]) -> dict[str, tuple[str, str]]:
    """``schema.table`` -> (schema, table) for the catalog's rows (``TABLES_SQL``). Names are
    looked up here, never split again at a dot: a schema's own name may hold dots."""
    return {f"{row[0]}.{row[1]}": (str(row[0]), str(row[1])) for row in rows}


def pgpass_line(password: str) -> str:
    """A passfile line that matches any host, port, database and user."""
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


def explain(text: str, connection: Connection) -> str:
    """Turn libpq / tool messages into advice; never includes a secret (libpq does not echo it)."""
    where = f"{connection.host or 'local socket'}:{connection.port or DEFAULT_PORT}"
    lowered = text.lower()
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        return f"authentication failed for user {connection.user!r} on {where} (check the password)"
    if "no password supplied" in lowered or "fe_sendauth" in lowered:
        return f"authentication failed: the server at {where} asks for a password and none is configured"
    match = re.search(r'database "([^"]+)" does not exist', text)
    if match:
        return f"database {match.group(1)} does not exist on {where}"
    if "server closed the connection unexpectedly" in lowered:
        # Reached, then lost: the server stopped or crashed, or someone ended the session.
        return f"the PostgreSQL server at {where} closed the connection: {' '.join(text.split())}"
    if any(
        word in lowered
        for word in (
            "connection refused",
            "could not connect",
            "timeout expired",
            "could not translate host",
            "connection failed",
            "connection is bad",
            "server closed the connection",
            "invalid response",
        )
    ):
        detail = text.strip().splitlines()[-1] if text.strip() else ""
        return f"cannot reach the PostgreSQL server at {where}: {detail}"
    return text.strip()


# User tables and partitioned parents, without system schemas and extension-owned tables.
TABLES_SQL = """
        SELECT n.nspname, c.relname, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
"""


class Sessions(Engine):
    """Settings and connections, shared by the dump and the restore side."""

    def _settings(self, connection: Connection) -> Settings:
        return settings_for(connection)

    def _env(
        self, connection: Connection, settings: Settings, passfile: Path | None, database: str
    ) -> dict[str, str]:
        extra = {
            "PGHOST": connection.host,
            "PGPORT": str(connection.port or DEFAULT_PORT),
            "PGUSER": connection.user,
            "PGDATABASE": database,
            "PGCONNECT_TIMEOUT": str(settings.connect_timeout),
            "PGAPPNAME": "backupsite",
            "PGSSLMODE": settings.sslmode,
            "PGSSLROOTCERT": settings.sslrootcert,
            "PGSSLCERT": settings.sslcert,
            "PGSSLKEY": settings.sslkey,
        }
        if passfile is not None:
            extra["PGPASSFILE"] = str(passfile)
        return base_env({key: value for key, value in extra.items() if value})

    @contextlib.contextmanager
    def _passfile(self, connection: Connection, scratch: Path) -> Iterator[Path | None]:
        if not connection.password:
            yield None
            return
        with secret_file(scratch, pgpass_line(connection.password), prefix="pgpass-") as path:
            yield path

    def _connect(
        self, connection: Connection, settings: Settings, database: str | None = None, autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        params: dict[str, Any] = {
            "host": connection.host or None,
            "port": connection.port or DEFAULT_PORT,
            "user": connection.user or None,
            "password": connection.password or None,
            "dbname": database or connection.database,
            "connect_timeout": settings.connect_timeout,
            "application_name": "backupsite",
        }
        for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
            if getattr(settings, key):
                params[key] = getattr(settings, key)
        try:
            return psycopg.connect(
                autocommit=autocommit, **{k: v for k, v in params.items() if v is not None}
            )
        except psycopg.Error as exc:
            raise EngineError(explain(str(exc), connection)) from None
