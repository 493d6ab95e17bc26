"""PostgreSQL: ``pg_dump`` in custom format, restored with ``pg_restore``.

Consistency and exact row counts: the engine opens its own REPEATABLE READ session, exports its
snapshot and runs ``pg_dump --snapshot`` on it, so the dump and the per-table row counts recorded
in the manifest describe the very same state of the database, even under concurrent writes.

Credentials: host, port, user and database go to the tools through ``PG*`` environment
variables, the password through a 0600 passfile (``PGPASSFILE``) that is removed afterwards.
Nothing secret is ever in argv.

Tool versions: :mod:`.postgresql_tools` picks the client for the server and the archive;
options and their defaults are in :mod:`.postgresql_settings`.

Restores run in a single transaction with ``--exit-on-error`` by default: the first error rolls
everything back and the destination is left as it was; a database the failed restore created is
dropped again. ``restore_jobs`` > 1 restores with ``pg_restore --jobs`` from a spooled copy
instead (:mod:`.parallel`), only where a failure can still be undone.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import psycopg
from psycopg import sql

from backups.engines.base import (
    Connection,
    Dump,
    DumpOptions,
    Engine,
    EngineError,
    RestoreOptions,
    RestoreResult,
    assertion_text,
)
from backups.engines.postgresql import parallel
from backups.engines.postgresql.settings import DEFAULT_PORT, Settings, settings_for, validate
from backups.engines.postgresql.tools import Tool, choose_tool, installed_tools, major
from backups.engines.process import base_env, dump_process, feed_process, secret_file

_DATA_LINE = re.compile(r'processing data for table "(?P<table>.+)"$')


def pattern(schema: str, table: str) -> str:
    """An exact (quoted) pg_dump pattern for ``schema.table``: no wildcards, no surprises."""
    return '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))


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


class PostgreSQLEngine(Engine):
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

    # -- restore ---------------------------------------------------------------------------------

    def _destination(
        self, connection: Connection, settings: Settings, info: dict[str, Any]
    ) -> tuple[Tool, bool]:
        """Pick a pg_restore for the destination server and the archive; returns it and whether
        the database exists. Changes nothing."""
        archive_major = major(str(info.get("tool_version", "")))
        server_major, exists = self._server(connection, settings)
        tool = choose_tool(
            "pg_restore",
            installed_tools("pg_restore", settings.bin_dir),
            max(server_major, archive_major),
            f"a pg_dump {archive_major or '?'} archive into a PostgreSQL {server_major} server",
        )
        return tool, exists

    def _server(self, connection: Connection, settings: Settings) -> tuple[int, bool]:
        """The destination server's major version and whether the database exists."""
        with (
            contextlib.closing(self._connect(connection, settings, settings.maintenance_database)) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(
                "SELECT current_setting('server_version_num')::int, "
                "EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)",
                (connection.database,),
            )
            row = cur.fetchone()
        return (int(row[0]) // 10000, bool(row[1])) if row else (0, False)

    def _create_database(self, connection: Connection, settings: Settings, info: dict[str, Any]) -> None:
        """Create the destination database (only once a usable tool is known)."""
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
            sql.Identifier(connection.database)
        )
        encoding = str(info.get("encoding", ""))
        if encoding:
            statement += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
        with contextlib.closing(self._connect(connection, settings, settings.maintenance_database)) as conn:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                raise EngineError(f"cannot create database {connection.database}: {exc}") from None

    def _restore_argv(self, tool: Tool, connection: Connection, settings: Settings, jobs: int) -> list[str]:
        argv = [tool.path, "--verbose", "--no-password", f"--dbname={connection.database}"]
        if settings.exit_on_error:
            argv.append("--exit-on-error")
        if jobs > 1:
            argv.append(f"--jobs={jobs}")  # never in one transaction: see parallel.py
        elif settings.single_transaction:
            argv.append("--single-transaction")
        if settings.clean:
            # Also for a new database: a dump of chosen schemas re-creates them (even "public").
            argv += ["--clean", "--if-exists"]
        if settings.no_owner:
            argv.append("--no-owner")
        if settings.no_privileges:
            argv.append("--no-privileges")
        return argv

    def restore_refusal(
        self, connection: Connection, manifest: dict[str, Any], scratch_dir: Path
    ) -> str | None:
        """A parallel restore (``restore_jobs``) whose spool would not fit in the scratch directory."""
        settings = self._settings(connection)
        if settings.restore_jobs <= 1:
            return None  # streamed: no scratch space, and no need to ask the server
        _server_major, exists = self._server(connection, settings)
        jobs, _note = parallel.jobs_for(
            settings.restore_jobs,
            exists=exists,
            single_transaction=settings.single_transaction,
            database=connection.database,
        )
        return parallel.space_problem(scratch_dir, manifest.get("raw_size"), jobs) if jobs > 1 else None

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        settings = self._settings(connection)
        info = options.manifest.get("engine_info", {})
        tool, exists = self._destination(connection, settings, info)
        jobs, note = parallel.jobs_for(
            settings.restore_jobs,
            exists=exists,
            single_transaction=settings.single_transaction,
            database=connection.database,
        )
        argv = self._restore_argv(tool, connection, settings, jobs)
        restored: list[str] = []
        phase = parallel.Phase(options.on_phase, total=_data_tables(info), jobs=jobs)

        def follow(line: str) -> None:
            match = _DATA_LINE.search(line)
            if match:
                restored.append(match.group("table"))
            phase.follow(line)

        def wording(text: str) -> str:
            return explain(_restore_error(text), connection)

        def streamed(env: dict[str, str]) -> None:
            # Read in this thread: each read hands the phase on (the stderr thread may not).
            relaying = cast(BinaryIO, parallel.Relaying(stream, phase.report))
            feed_process(argv, env, relaying, tool="pg_restore", on_stderr=follow, explain=wording)
            phase.end()
            phase.report()

        if jobs > 1:
            # Refused before a byte is read (restores.refusals asks restore_refusal first; the
            # disk may have filled since).
            problem = parallel.space_problem(options.scratch_dir, options.manifest.get("raw_size"), jobs)
            if problem:
                raise EngineError(problem)
            phase.report(f"spooling the backup to the scratch directory for pg_restore --jobs={jobs}")
            # The whole archive is spooled (and its digest checked) before the destination is touched.
            with parallel.spooled(stream, options.scratch_dir, jobs=jobs) as spool:

                def from_spool(env: dict[str, str]) -> None:
                    phase.report(f"pg_restore --jobs={jobs}: creating tables and other objects")
                    parallel.run_restore(
                        argv, env, spool, on_stderr=follow, explain=wording, on_tick=phase.report
                    )
                    phase.end()
                    phase.report()

                self._apply(
                    connection, settings, info, options, exists=exists, all_or_nothing=False, run=from_spool
                )
            how = f" with {jobs} jobs from a {parallel.human(spool.size)} spool in the scratch directory"
            # All or nothing too: a failure drops the database it created (existing ones: see jobs_for).
            atomic = not exists
        else:
            atomic = settings.single_transaction and settings.exit_on_error
            self._apply(
                connection, settings, info, options, exists=exists, all_or_nothing=atomic, run=streamed
            )
            how = ""
        tables = list(info.get("tables", [])) or restored
        counts, proof = self._check_restored(connection, settings, info, atomic=atomic)
        where = f"database {connection.database}" + ("" if exists else " (created)")
        message = f"restored {len(tables)} table(s), data for {len(restored)}, into {where}{how}; {proof}"
        return RestoreResult(
            tables=tables, message=message + (f"; {note}" if note else ""), row_counts=counts
        )

    def _apply(
        self,
        connection: Connection,
        settings: Settings,
        info: dict[str, Any],
        options: RestoreOptions,
        *,
        exists: bool,
        all_or_nothing: bool,
        run: Callable[[dict[str, str]], None],
    ) -> None:
        """Create the database when it does not exist, then ``run`` pg_restore with its
        environment. On failure the error says what the destination was left as; a database this
        restore created is dropped again (also when a parallel restore is interrupted)."""
        if not exists:
            self._create_database(connection, settings, info)
        with self._passfile(connection, options.scratch_dir) as passfile:
            try:
                run(self._env(connection, settings, passfile, connection.database))
            except EngineError as exc:
                outcome = (
                    "nothing was changed: the restore ran in one transaction"
                    if all_or_nothing
                    else "the destination may be partially restored"
                )
                if not exists:
                    outcome = self._drop_created(connection, settings, outcome)
                raise EngineError(f"{exc} ({outcome})") from None
            except BaseException:
                if not exists and not all_or_nothing:  # a parallel restore stopped half way
                    self._drop_created(connection, settings, "")
                raise

    def _drop_created(self, connection: Connection, settings: Settings, outcome: str) -> str:
        """Drop the database a failed restore created, so the server is left as it was; returns
        what the error message says about the destination (``outcome`` if the drop fails).
        Without FORCE: a session someone opened in it meanwhile keeps it, and the message says so."""
        name = connection.database
        try:
            with contextlib.closing(
                self._connect(connection, settings, settings.maintenance_database)
            ) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        except (psycopg.Error, EngineError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"{outcome}; database {name} was created by this restore and could not be dropped again: {detail}"
        return f"nothing was changed: database {name}, which this restore had created, was dropped again"

    def _check_restored(
        self, connection: Connection, settings: Settings, info: dict[str, Any], *, atomic: bool
    ) -> tuple[dict[str, int], str]:
        """A restore that reports success but restored nothing is the worst bug a backup tool can
        have: check the restored tables against the row counts recorded at backup time. Returns
        the counts taken (empty unless ``restore_check = "exact"``) and what was proven.

        ``atomic``: the restore was all or nothing (pg_restore with --single-transaction and
        --exit-on-error, or in parallel into a database dropped again on failure), so by
        default ("presence") every counted table must exist and every table that had rows must
        have rows. "exact" (and a restore that is not all-or-nothing) compares every count."""
        expected: dict[str, int] = info.get("row_counts") or {}
        if not expected or not info.get("row_counts_exact"):
            return {}, "the backup recorded no row counts to compare"
        if settings.restore_check == "exact" or not atomic:
            actual = self._count(connection, settings, list(expected))
            wrong = [
                f"{name} has {actual.get(name, 'no table')} rows, the backup recorded {count}"
                for name, count in expected.items()
                if actual.get(name) != count
            ]
            if wrong:
                raise EngineError("restored data does not match the backup: " + "; ".join(wrong[:10]))
            return actual, "row counts match the backup"
        present = self._count(
            connection, settings, list(expected), query="SELECT EXISTS (SELECT 1 FROM {}.{})"
        )
        wrong = [
            f"{name} is missing"
            if name not in present
            else f"{name} is empty, the backup recorded {count} rows"
            for name, count in expected.items()
            if name not in present or (count > 0 and not present[name])
        ]
        if wrong:
            raise EngineError("restored data does not match the backup: " + "; ".join(wrong[:10]))
        filled = sum(1 for count in expected.values() if count > 0)
        return {}, (
            f"all {len(expected)} counted table(s) exist and the {filled} with rows have rows "
            '(row counts not compared: restore_check = "presence")'
        )

    def _count(
        self,
        connection: Connection,
        settings: Settings,
        tables: list[str],
        query: str = "SELECT count(*) FROM {}.{}",
    ) -> dict[str, int]:
        """Runs ``query`` (a count, or an existence test) per table; missing tables are left out."""
        counts: dict[str, int] = {}
        with contextlib.closing(self._connect(connection, settings)) as conn, conn.cursor() as cur:
            cur.execute(TABLES_SQL)
            parts = table_parts(cur.fetchall())
            for name in tables:
                if name not in parts:
                    continue
                schema, table = parts[name]
                try:
                    cur.execute(sql.SQL(query).format(sql.Identifier(schema), sql.Identifier(table)))
                except psycopg.errors.UndefinedTable:
                    continue
                row = cur.fetchone()
                counts[name] = int(row[0]) if row else 0
        return counts

    def row_counts(self, connection: Connection) -> dict[str, int]:
        settings = self._settings(connection)
        with contextlib.closing(self._connect(connection, settings)) as conn, conn.cursor() as cur:
            cur.execute(TABLES_SQL)
            tables = [f"{schema}.{name}" for schema, name, kind in cur.fetchall() if kind == "r"]
        return self._count(connection, settings, tables)

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
            explain=_restore_error,
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


def _data_tables(info: dict[str, Any]) -> int | None:
    """How many tables of the backup have data for pg_restore to load: those counted at backup
    time (partitioned parents hold none), else every table listed; None when unknown."""
    counted = info.get("row_counts")
    if isinstance(counted, dict) and counted:
        return len(counted)
    tables = info.get("tables")
    return len(tables) if isinstance(tables, list) and tables else None


def _restore_error(text: str) -> str:
    """pg_restore's useful part: from its first ``error:`` onward."""
    index = text.find("error:")
    return text[index:] if index >= 0 else text
