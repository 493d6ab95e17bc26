"""PostgreSQL restores: pick a pg_restore for the destination, create the database, feed the
archive (streamed in one transaction, or ``pg_restore --jobs`` from a spool: :mod:`.parallel`),
drop a database a failed restore created, and check the restored tables against the row counts
recorded at backup time. The restore side of :class:`~.engine.PostgreSQLEngine`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import psycopg
from psycopg import sql

from backups.engines.base import Connection, EngineError, RestoreOptions, RestoreResult
from backups.engines.postgresql import parallel
from backups.engines.postgresql.session import TABLES_SQL, Sessions, explain, table_parts
from backups.engines.postgresql.settings import Settings
from backups.engines.postgresql.tools import Tool, choose_tool, installed_tools, major
from backups.engines.process import feed_process


class RestoreSide(Sessions):
    """Everything a restore into a PostgreSQL server does."""

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

    def _jobs(self, connection: Connection, settings: Settings, exists: bool) -> tuple[int, str]:
        """The jobs this restore runs with (``restore_jobs`` where it can be undone) and why not."""
        return parallel.jobs_for(
            settings.restore_jobs,
            exists=exists,
            single_transaction=settings.single_transaction,
            database=connection.database,
        )

    def restore_refusal(
        self, connection: Connection, manifest: dict[str, Any], scratch_dir: Path
    ) -> str | None:
        """A parallel restore (``restore_jobs``) whose spool would not fit in the scratch directory."""
        settings = self._settings(connection)
        if settings.restore_jobs <= 1:
            return None  # streamed: no scratch space, and no need to ask the server
        _server_major, exists = self._server(connection, settings)
        jobs, _note = self._jobs(connection, settings, exists)
        return parallel.space_problem(scratch_dir, manifest.get("raw_size"), jobs) if jobs > 1 else None

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        settings = self._settings(connection)
        info = options.manifest.get("engine_info", {})
        tool, exists = self._destination(connection, settings, info)
        jobs, note = self._jobs(connection, settings, exists)
        argv = self._restore_argv(tool, connection, settings, jobs)
        restored: list[str] = []
        phase = parallel.Phase(options.on_phase, total=_data_tables(info), jobs=jobs)

        def follow(line: str) -> None:
            match = parallel.DATA_BEGINS.search(line)
            if match:
                restored.append(match.group("table"))
            phase.follow(line)

        def wording(text: str) -> str:
            return explain(restore_error(text), connection)

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


def _data_tables(info: dict[str, Any]) -> int | None:
    """How many tables of the backup have data for pg_restore to load: those counted at backup
    time (partitioned parents hold none), else every table listed; None when unknown."""
    counted = info.get("row_counts")
    if isinstance(counted, dict) and counted:
        return len(counted)
    tables = info.get("tables")
    return len(tables) if isinstance(tables, list) and tables else None


def restore_error(text: str) -> str:
    """pg_restore's useful part: from its first ``error:`` onward."""
    index = text.find("error:")
    return text[index:] if index >= 0 else text
