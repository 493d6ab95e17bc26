"""SQL on a sandbox server for provisioned copies: create and drop a database's own user, run a
masking script. Statements go through the driver's session (psycopg, or the MySQL engine's
MySQLdb session), never a command line, so a password never reaches argv or a file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from backups.services import Connection, EngineError, get_engine

POSTGRESQL = "postgresql"
MYSQL_FAMILY = ("mysql", "mariadb")
ENGINES = (POSTGRESQL, *MYSQL_FAMILY)


@contextlib.contextmanager
def _pg(connection: Connection, database: str | None) -> Iterator[psycopg.Connection[Any]]:
    options = connection.options
    params: dict[str, Any] = {
        "host": connection.host or None,
        "port": connection.port or 5432,
        "user": connection.user or None,
        "password": connection.password or None,
        "dbname": database or options.get("maintenance_database") or "postgres",
        "connect_timeout": int(options.get("connect_timeout") or 10),
        "application_name": "backupsite",
    }
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        if options.get(key):
            params[key] = options[key]
    try:
        session = psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None})
    except psycopg.Error as exc:
        raise EngineError(f"sandbox {connection.name}: {exc}".strip()) from None
    try:
        yield session
    except psycopg.Error as exc:
        raise EngineError(f"sandbox {connection.name}: {exc}".strip()) from None
    finally:
        session.close()


@contextlib.contextmanager
def _mysql(connection: Connection, database: str | None) -> Iterator[Any]:
    engine: Any = get_engine(connection.engine)  # the MySQL engine's own session and settings
    with engine.session(engine.settings(connection), database) as session:
        yield session


def _mysql_run(session: Any, statement: str, params: Any = None) -> None:
    cursor = session.cursor()
    try:
        cursor.execute(statement, params)
        while cursor.nextset():  # a script of several statements: each result read
            pass
    finally:
        cursor.close()


def _mysql_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def run_script(connection: Connection, database: str, script: str) -> None:
    """Run ``script`` (several statements) in ``database`` as the sandbox's own user."""
    if connection.engine == POSTGRESQL:
        with _pg(connection, database) as session:
            # No parameters: psycopg sends the script as one simple query, its statements in order.
            session.execute(script.encode())
    else:
        with _mysql(connection, database) as session:
            _mysql_run(session, script)


def create_user(connection: Connection, database: str, user: str, password: str) -> None:
    """A login for ``database`` only: it may read and change everything restored there."""
    if connection.engine == POSTGRESQL:
        role, db = sql.Identifier(user), sql.Identifier(database)
        with _pg(connection, None) as session:
            session.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(role, sql.Literal(password))
            )
            session.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
            session.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))
        with _pg(connection, database) as session:
            schemas = session.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema'"
            ).fetchall()
            for (schema,) in schemas:
                name = sql.Identifier(schema)
                for statement in (
                    "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}",
                    "GRANT ALL ON ALL TABLES IN SCHEMA {s} TO {r}",
                    "GRANT ALL ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
                    "GRANT ALL ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
                ):
                    session.execute(sql.SQL(statement).format(s=name, r=role))
    else:
        with _mysql(connection, None) as session:
            _mysql_run(session, "CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            _mysql_run(session, f"GRANT ALL PRIVILEGES ON {_mysql_name(database)}.* TO %s@'%%'", (user,))


def drop(connection: Connection, database: str, user: str) -> None:
    """Drop ``database`` (its sessions ended) and ``user``; nothing to drop is not an error."""
    if connection.engine == POSTGRESQL:
        with _pg(connection, None) as session:
            session.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            session.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
    else:
        with _mysql(connection, None) as session:
            _mysql_run(session, f"DROP DATABASE IF EXISTS {_mysql_name(database)}")
            _mysql_run(session, "DROP USER IF EXISTS %s@'%%'", (user,))
