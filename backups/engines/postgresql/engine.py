"""PostgreSQL: ``pg_dump`` in custom format, restored with ``pg_restore``.

Consistency and exact row counts: the engine opens its own REPEATABLE READ session, exports its
snapshot and runs ``pg_dump --snapshot`` on it, so the dump and the per-table row counts recorded
in the manifest describe the very same state of the database, even under concurrent writes.

Credentials: host, port, user and database go to the tools through ``PG*`` environment
variables, the password through a 0600 passfile (``PGPASSFILE``) that is removed afterwards.
Nothing secret is ever in argv.

Tool versions: :mod:`.tools` picks the client for the server and the archive; options and
their defaults are in :mod:`.settings`; connections and libpq's messages in :mod:`.session`; the
restore side (pg_restore, streamed or in parallel, and the check of what it restored) in
:mod:`.restoring`.

Restores run in a single transaction with ``--exit-on-error`` by default: the first error rolls
everything back and the destination is left as it was; a database the failed restore created is
dropped again. ``restore_jobs`` > 1 restores with ``pg_restore --jobs`` from a spooled copy
instead (:mod:`.parallel`), only where a failure can still be undone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

from backups.engines.base import (
    Connection,
    Dump,
    DumpOptions,
    EngineError,
    RestoreOptions,
    assertion_text,
)
from backups.engines.postgresql.restoring import RestoreSide, restore_error
from backups.engines.postgresql.session import TABLES_SQL, explain, pgpass_line, table_parts
from backups.engines.postgresql.settings import Settings, validate
from backups.engines.postgresql.tools import choose_tool, installed_tools
from backups.engines.process import base_env, dump_process, feed_process

__all__ = ["PostgreSQLEngine", "explain", "pgpass_line"]


def pattern(schema: str, table: str) -> str:
    """An exact (quoted) pg_dump pattern for ``schema.table``: no wildcards, no surprises."""
    return '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))


@dataclass
class _Counter:
    """Counts the rows of each table in the dump's own snapshot, in a thread beside pg_dump."""

    session: psycopg.Connection[Any]
    tables: dict[str, tuple[str, str]]  # schema.table -> (schema, table)
    counts: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="pg-row-counts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.session.cursor() as cur:
                # One backend per count, no parallel workers: the count only has to finish before
                # the dump does, and workers would take CPU from pg_dump's own backend on the
                # source server (measured: 0.12 s of 0.17 s the counts cost at pgbench scale 50).
                cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                for name, (schema, table) in self.tables.items():
                    cur.execute(
                        sql.SQL("SELECT count(*) FROM {}.{}").format(
                            sql.Identifier(schema), sql.Identifier(table)
                        )
                    )
                    row = cur.fetchone()
                    self.counts[name] = int(row[0]) if row else 0
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self) -> dict[str, int]:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise EngineError(f"counting rows failed: {self.error}")
        return self.counts


class PostgreSQLEngine(RestoreSide):
    key = "postgresql"
    label = "PostgreSQL"
    binaries = ("pg_dump", "pg_restore")
    file_extension = ".dump"
    content_type = "application/x-postgresql-dump"
    confirm_with = "database"
    has_scratch_databases = True

    # -- settings --------------------------------------------------------------------------------

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        return validate(connection)

    # -- checks ----------------------------------------------------------------------------------

    def probe(self, connection: Connection) -> None:
        settings = self._settings(connection)
        with contextlib.closing(self._connect(connection, settings)):
            pass

    def check_restore_destination(self, connection: Connection) -> None:
        settings = self._settings(connection)
        with contextlib.closing(self._connect(connection, settings, settings.maintenance_database)):
            pass

    def fingerprint(self, connection: Connection) -> str | None:
        """The cluster's WAL position and timeline, its start time and the database's oid.

        Every change to logged data, schema, sequences or large objects writes WAL, so an
        unchanged position means nothing in the database changed. Unlogged tables change
        without WAL: a database that has any gets no fingerprint (never skipped). Background work
        (autovacuum, hint bits) can move the position without a real change; that only costs an
        unneeded backup, never a missed one.
        """
        settings = self._settings(connection)
        with contextlib.closing(self._connect(connection, settings)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_class WHERE relpersistence = 'u' AND relkind IN ('r', 'p', 'm')"
            )
            unlogged = cur.fetchone()
            if unlogged is None or unlogged[0]:
                return None
            # Only functions every role may call; a restarted or restored cluster never matches.
            # The *insert* position: with asynchronous commit the write position lags behind.
            cur.execute(
                """SELECT pg_postmaster_start_time(),
                          CASE WHEN pg_is_in_recovery() THEN 'replica:' || pg_last_wal_replay_lsn()
                               ELSE pg_walfile_name(pg_current_wal_insert_lsn()) || ':' || pg_current_wal_insert_lsn()
                          END,
                          (SELECT oid FROM pg_database WHERE datname = current_database())"""
            )
            row = cur.fetchone()
        if row is None or row[1] is None:
            return None
        return f"pg:{row[0].timestamp():.6f}:{row[1]}:{row[2]}"

    # -- dump ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        settings = self._settings(connection)
        session = self._connect(connection, settings, autocommit=False)
        counter: _Counter | None = None
        try:
            with session.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute(
                    "SELECT current_setting('server_version_num')::int, current_setting('server_version'), "
                    "pg_encoding_to_char(encoding), pg_export_snapshot() "
                    "FROM pg_database WHERE datname = current_database()"
                )
                row = cur.fetchone()
                assert row is not None
                version_num, server_version, encoding, snapshot = row
                cur.execute(TABLES_SQL)
                rows = cur.fetchall()
                catalog = [(f"{schema}.{name}", kind) for schema, name, kind in rows]
                parts = table_parts(rows)
            tables = self._select(catalog, parts, connection, settings)
            tool = choose_tool(
                "pg_dump",
                installed_tools("pg_dump", settings.bin_dir),
                version_num // 10000,
                f"a PostgreSQL {server_version} server",
            )
            info: dict[str, Any] = {
                "server_version": f"PostgreSQL {server_version}",
                "tool": "pg_dump",
                "tool_version": tool.version,
                "format": "custom",
                "encoding": encoding,
                "database": connection.database,
                "schemas": list(settings.schemas),
                "tables": [name for name, _ in tables],
            }
            argv = [
                tool.path,
                "--format=custom",
                # Our pipeline compresses; compressing twice costs CPU and gains nothing.
                "--compress=0" if options.compression != "none" else "--compress=6",
                f"--snapshot={snapshot}",
                "--no-password",
                "--strict-names",
            ]
            argv += [f"--schema={pattern_schema(s)}" for s in settings.schemas]
            argv += [f"--table={pattern(*parts[in_catalog(t)])}" for t in connection.include_tables]
            argv += [f"--exclude-table={pattern(*parts[in_catalog(t)])}" for t in connection.exclude_tables]
            counter = _Counter(session, {name: parts[name] for name, kind in tables if kind == "r"})
            with (
                self._passfile(connection, options.scratch_dir) as passfile,
                dump_process(
                    argv,
                    self._env(connection, settings, passfile, connection.database),
                    tool="pg_dump",
                    explain=lambda text: explain(text, connection),
                ) as stdout,
            ):
                if settings.row_counts:
                    counter.start()
                yield Dump(stream=stdout, info=info)
            if settings.row_counts:
                info["row_counts"] = counter.join()
                info["row_counts_exact"] = True
        except BaseException:
            if counter is not None and counter.thread is not None:
                with contextlib.suppress(psycopg.Error):
                    session.cancel_safe()  # stop a long count; the dump already failed
                counter.thread.join()
            raise
        finally:
            with contextlib.suppress(psycopg.Error):
                session.rollback()
            session.close()

    def _select(
        self,
        catalog: list[tuple[str, str]],
        parts: dict[str, tuple[str, str]],
        connection: Connection,
        settings: Settings,
    ) -> list[tuple[str, str]]:
        names = {name for name, _ in catalog}
        wanted = [in_catalog(n) for n in connection.include_tables]
        unwanted = [in_catalog(n) for n in connection.exclude_tables]
        unknown = [n for n in wanted + unwanted if n not in names]
        if unknown:
            raise EngineError(
                f"table(s) not found in database {connection.database}: {', '.join(unknown)} "
                "(write them schema.table)"
            )
        selected = []
        for name, kind in catalog:
            schema = parts[name][0]
            if settings.schemas and schema not in settings.schemas:
                continue
            if wanted and name not in wanted:
                continue
            if name in unwanted:
                continue
            selected.append((name, kind))
        return selected

    def drop_database(self, connection: Connection) -> None:
        settings = self._settings(connection)
        with contextlib.closing(self._connect(connection, settings, settings.maintenance_database)) as conn:
            try:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(connection.database)
                    )
                )
            except psycopg.Error as exc:
                raise EngineError(f"cannot drop database {connection.database}: {exc}") from None

    def check_assertion(self, connection: Connection, sql_text: str, timeout_seconds: float) -> str:
        """Through the engine's own psycopg session (the password never in argv or a file), in a
        read-only transaction with ``statement_timeout``."""
        settings = self._settings(connection)
        milliseconds = max(1, int(timeout_seconds * 1000))
        with contextlib.closing(self._connect(connection, settings, autocommit=False)) as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION READ ONLY")
                    cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(milliseconds)))
                    cur.execute(sql_text.encode())
                    row = cur.fetchone() if cur.description else None
            except psycopg.errors.QueryCanceled:
                raise EngineError(
                    f"the check ran longer than {timeout_seconds:g} s and was stopped"
                ) from None
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EngineError(f"the check failed: {first}") from None
            finally:
                conn.rollback()
        return assertion_text(row)

    # -- trial restore ---------------------------------------------------------------------------

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        """Read the whole archive with ``pg_restore`` (TOC and every data block) into /dev/null."""
        tools = installed_tools("pg_restore")
        if not tools:
            raise EngineError("pg_restore is not installed; install postgresql-client")
        newest = max(tools, key=lambda t: t.major)
        items = {"tables": 0, "data": 0, "other": 0}

        def follow(line: str) -> None:
            if "processing data for table" in line:
                items["data"] += 1
            elif 'creating TABLE "' in line:
                items["tables"] += 1
            elif "creating " in line:
                items["other"] += 1

        feed_process(
            [newest.path, "--verbose", "--file=/dev/null"],
            base_env({}),
            stream,
            tool="pg_restore",
            on_stderr=follow,
            explain=restore_error,
        )
        if not (items["tables"] or items["data"] or items["other"]):
            raise EngineError("pg_restore read the archive but found nothing in it")
        return (
            f"pg_restore {newest.version} read the whole archive: {items['tables']} table(s), "
            f"{items['data']} with data, {items['other']} other object(s)"
        )


def in_catalog(name: str) -> str:
    """A table of ``include_tables``/``exclude_tables`` as the catalog names it (``public.`` added
    to a bare name)."""
    return name if "." in name else f"public.{name}"


def pattern_schema(name: str) -> str:
    return '"{}"'.format(name.replace('"', '""'))
