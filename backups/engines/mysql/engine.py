"""MySQL and MariaDB: logical dumps with ``mysqldump``/``mariadb-dump``, restores with the client.

Two registered engines share this module: ``mysql`` runs ``mysqldump``/``mysql`` and ``mariadb``
runs ``mariadb-dump``/``mariadb`` (on Debian the ``mysql*`` names are MariaDB's tools too; which
family a binary belongs to is read from its ``--version``, because the two spell TLS options
differently).

Credentials reach the tools only through a 0600 ``--defaults-extra-file`` in a private directory
of the scratch dir, which is also the tools' ``HOME`` so that a ``~/.my.cnf`` or
``~/.mylogin.cnf`` of the worker's user cannot silently override the host or the user; the
directory is removed afterwards, whatever happens. The engine's own short sessions (checks, row
counts) use the MySQLdb client with the password in memory.

The dump is made of one database without ``--databases``, so it restores into any database
name. ``--single-transaction`` gives a consistent snapshot of InnoDB tables; other engines
(MyISAM, Aria) are read table by table and are only as consistent as the writers allow.

Row counts for the manifest. MySQL cannot hand mysqldump's snapshot to another session, so the
counts come from the engine's own session: it reads InnoDB's log sequence number (LSN), opens
``START TRANSACTION WITH CONSISTENT SNAPSHOT`` right before the dump is launched, counts every
dumped table (``SELECT COUNT(*)``, concurrently with the dump) and reads the LSN again after the
dump has finished. Every InnoDB commit writes redo and advances the LSN, so an unchanged LSN
means no InnoDB transaction committed between the two reads, which enclose both snapshots: the
counts then describe exactly the rows in the dump, and ``row_counts_exact`` is true. It is false
when the LSN moved (writes, or merely InnoDB's background purge, statistics or checkpoints),
when a counted table is not InnoDB (its writes leave the LSN alone), or when the server does not
report an LSN (MySQL before 8.0.30).
A restore compares its row counts with the manifest only when they are exact. One residual
window remains: a commit whose redo is written just before the first LSN read but which becomes
visible only after the counting snapshot opened, followed by complete silence until the dump
ends; the cost of that is a restore that fails loudly, never one that hides a difference.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import MySQLdb  # type: ignore[import-untyped]

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
from backups.engines.mysql.catalog import (
    RowCounter,
    count_rows,
    error_parts,
    innodb_lsn,
    list_objects,
    query,
    quote_name,
)
from backups.engines.mysql.dump_format import DumpScanner, GuardedDump, NotADump, read_head
from backups.engines.mysql.settings import (
    Settings,
    describe_error,
    option_value,
    settings_for,
    tool_error_code,
    validate,
)
from backups.engines.process import base_env, dump_process, feed_process, run_tool, secret_file

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


_TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")


@dataclass(frozen=True)
class Tool:
    binary: str
    version: str  # e.g. "10.11.19-MariaDB" or "8.0.36"
    mariadb: bool  # MariaDB's tools (TLS options and GTID handling differ from MySQL's)


@dataclass(frozen=True)
class Snapshot:
    session: Any  # the MySQLdb session holding the consistent snapshot
    lsn: int | None  # InnoDB's LSN read just before the snapshot opened
    objects: dict[str, tuple[str, str]]  # every table, view and sequence: (TABLE_TYPE, ENGINE)
    server_version: str
    dumped: list[str]  # the names the dump holds, after include/exclude


#: MariaDB's ER_STATEMENT_TIMEOUT and MySQL's ER_QUERY_TIMEOUT.
_STATEMENT_TIMEOUTS = (1969, 3024)


def tool_info(binary: str) -> Tool:
    text = run_tool([binary, "--no-defaults", "--version"], base_env({}), tool=binary, timeout=30).strip()
    match = re.search(r"Distrib (\S+?),", text) or re.search(r"Ver (\S+)", text)
    return Tool(binary=binary, version=match.group(1) if match else text, mariadb="MariaDB" in text)


def major_version(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group(0)) if match else 0


class MySQLEngine(Engine):
    key = "mysql"
    label = "MySQL"
    binaries = ("mysqldump", "mysql")
    dump_binary: ClassVar[str] = "mysqldump"
    client_binary: ClassVar[str] = "mysql"
    file_extension = ".sql"
    content_type = "application/sql"
    supported_types = ("full", "database")
    confirm_with = "database"
    has_scratch_databases = True

    # -- settings ------------------------------------------------------------------------------

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        return validate(connection)

    def settings(self, connection: Connection) -> Settings:
        return settings_for(connection)

    # -- sessions ------------------------------------------------------------------------------

    def connect(self, settings: Settings, database: str | None) -> Any:
        """A MySQLdb session (autocommit); connection problems as human :class:`EngineError`."""
        for kind, path in settings.ssl_files.items():
            if not os.access(path, os.R_OK):
                raise EngineError(f"ssl_{kind} file {path} does not exist or is not readable")
        params: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "user": settings.user,
            "password": settings.password,
            "connect_timeout": settings.connect_timeout,
            "charset": settings.character_set,
            "autocommit": True,
        }
        if database is not None:
            params["database"] = database
        if settings.ssl_files:
            params["ssl"] = dict(settings.ssl_files)
        if settings.ssl_mode:
            params["ssl_mode"] = settings.ssl_mode
        try:
            session = MySQLdb.connect(**params)
        except MySQLdb.Error as exc:
            code, text = error_parts(exc)
            raise EngineError(describe_error(code, text, settings)) from None
        if settings.ssl_mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"):
            # MySQLdb on MariaDB's Connector/C does not enforce REQUIRED; check what was negotiated.
            cipher = query(session, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            if not cipher or not cipher[0][1]:
                session.close()
                raise EngineError(
                    f"the server at {settings.where} did not use TLS, but ssl_mode is {settings.ssl_mode}"
                )
        return session

    @contextlib.contextmanager
    def session(self, settings: Settings, database: str | None) -> Iterator[Any]:
        session = self.connect(settings, database)
        try:
            yield session
        except MySQLdb.Error as exc:
            code, text = error_parts(exc)
            raise EngineError(f"{settings.where}: {describe_error(code, text, settings)}") from None
        finally:
            with contextlib.suppress(MySQLdb.Error):
                session.close()

    def option_file_text(self, settings: Settings, tool: Tool) -> str:
        lines = ["[client]", f"host={option_value(settings.host)}", f"port={settings.port}"]
        if settings.user:
            lines.append(f"user={option_value(settings.user)}")
        if settings.password:
            lines.append(f"password={option_value(settings.password)}")
        for kind, path in settings.ssl_files.items():
            lines.append(f"ssl-{kind}={option_value(path)}")
        if settings.ssl_mode and not tool.mariadb:
            lines.append(f"ssl-mode={settings.ssl_mode}")
        elif settings.ssl_mode == "DISABLED":
            lines.append("skip-ssl")
        elif settings.ssl_mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
            # MariaDB's tools verify the certificate and the host name together.
            lines += ["ssl", "ssl-verify-server-cert"]
        elif settings.ssl_mode == "REQUIRED":
            lines.append("ssl")  # MariaDB's tools cannot require TLS without verifying it
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def tool_files(
        self, scratch_dir: Path, settings: Settings, tool: Tool
    ) -> Iterator[tuple[Path, dict[str, str]]]:
        """The option file and the tool's environment, in a private directory removed on exit."""
        scratch_dir.mkdir(parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix="mysql-", dir=scratch_dir))  # 0700
        try:
            text = self.option_file_text(settings, tool)
            with secret_file(home, text, prefix="client-", suffix=".cnf") as path:
                yield path, base_env({"HOME": str(home)})
        finally:
            shutil.rmtree(home, ignore_errors=True)

    @staticmethod
    def _explain(settings: Settings, error_lines: list[str]) -> Callable[[str], str]:
        def explain(stderr: str) -> str:
            # The client echoes the failing statement (row data) before its ERROR line: keep the
            # server's message only.
            text = error_lines[-1] if error_lines else stderr
            if re.match(r"ERROR \d+ \(\w+\) at line \d+", text):
                return text  # an SQL error in the dump itself, not a connection problem
            return describe_error(tool_error_code(text), text, settings)

        return explain

    # -- dump ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        settings = self.settings(connection)
        tool = tool_info(self.dump_binary)
        snapshot = self._open_snapshot(settings, connection)
        objects = snapshot.objects
        tables = [name for name in snapshot.dumped if objects[name][0] in _TABLE_TYPES]
        info: dict[str, Any] = {
            "database": settings.database,
            "server_version": snapshot.server_version,
            "tool": self.dump_binary,
            "tool_version": tool.version,
            "character_set": settings.character_set,
            "tables": tables,
            "views": [name for name in snapshot.dumped if objects[name][0] == "VIEW"],
            "row_counts": {},
            "row_counts_exact": False,
        }
        sequences = [name for name in snapshot.dumped if objects[name][0] == "SEQUENCE"]
        if sequences:
            info["sequences"] = sequences
        counter = RowCounter(snapshot.session, tables)
        try:
            with self.tool_files(options.scratch_dir, settings, tool) as (option_file, env):
                error_lines: list[str] = []

                def on_stderr(line: str) -> None:
                    if "error" in line.lower():
                        error_lines.append(line)

                with dump_process(
                    self._dump_argv(tool, option_file, settings, connection),
                    env,
                    tool=self.dump_binary,
                    on_stderr=on_stderr,
                    explain=self._explain(settings, error_lines),
                ) as stdout:
                    counter.start()  # concurrently: the counts must not slow the dump down
                    yield Dump(stream=stdout, info=info)
        except BaseException:
            counter.abandon()
            raise
        counter.finish()
        info["row_counts"] = counter.counts
        info["row_counts_exact"], note = self._exactness(snapshot.lsn, counter, tables, objects)
        if note:
            info["row_counts_note"] = note

    def _open_snapshot(self, settings: Settings, connection: Connection) -> Snapshot:
        """The counting session with its snapshot open, and what the dump will hold."""
        session = self.connect(settings, settings.database)
        try:
            lsn = innodb_lsn(session)  # before the snapshot opens (see the module docstring)
            # The session idles between its counts and the end of a long dump; a short server
            # wait_timeout must not close it before it reads the LSN again.
            query(session, "SET SESSION wait_timeout = 86400")
            query(session, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            query(session, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            objects = list_objects(session, settings.database)
            server_version = str(query(session, "SELECT VERSION()")[0][0])
            dumped = self._select(connection, objects)
        except BaseException as exc:
            session.close()
            if isinstance(exc, MySQLdb.Error):
                code, text = error_parts(exc)
                raise EngineError(describe_error(code, text, settings)) from None
            raise
        return Snapshot(session, lsn, objects, server_version, dumped)

    def _select(self, connection: Connection, objects: dict[str, tuple[str, str]]) -> list[str]:
        """The tables and views the dump will hold; unknown names in the filters are an error."""
        unknown = [
            name for name in (*connection.include_tables, *connection.exclude_tables) if name not in objects
        ]
        if unknown:
            raise EngineError(f"table(s) not found in database {connection.database}: {', '.join(unknown)}")
        include, exclude = set(connection.include_tables), set(connection.exclude_tables)
        return [name for name in objects if (not include or name in include) and name not in exclude]

    def _dump_argv(
        self,
        tool: Tool,
        option_file: Path,
        settings: Settings,
        connection: Connection,
    ) -> list[str]:
        argv = [
            tool.binary,
            f"--defaults-extra-file={option_file}",  # must come first
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            f"--default-character-set={settings.character_set}",
            "--skip-lock-tables",
            "--no-tablespaces",  # tablespaces need PROCESS (MySQL 8) and are not per database
        ]
        if not tool.mariadb:
            # A GTID_PURGED line would fail to restore into a server with its own GTID history,
            # and MySQL 8's column statistics query fails against MariaDB servers.
            argv.append("--set-gtid-purged=OFF")
            if major_version(tool.version) >= 8:
                argv.append("--column-statistics=0")
        if settings.max_allowed_packet:
            argv.append(f"--max-allowed-packet={settings.max_allowed_packet}")
        argv += [f"--ignore-table={settings.database}.{name}" for name in connection.exclude_tables]
        # No --databases: no CREATE DATABASE/USE in the dump, so it restores under any name.
        return [*argv, "--", settings.database, *connection.include_tables]

    @staticmethod
    def _exactness(
        lsn_before: int | None, counter: RowCounter, tables: list[str], objects: dict[str, tuple[str, str]]
    ) -> tuple[bool, str]:
        not_innodb = [name for name in tables if objects[name][1].lower() != "innodb"]
        if counter.error:
            return False, counter.error
        if lsn_before is None or counter.lsn_after is None:
            return False, "the server reports no InnoDB log sequence number"
        if not_innodb:
            return False, f"not InnoDB (writes leave no trace in the LSN): {', '.join(not_innodb)}"
        if lsn_before != counter.lsn_after:
            return False, "the server wrote to InnoDB while the dump ran; counts are approximate"
        return True, ""

    # -- restore -------------------------------------------------------------------------------

    def check_restore_destination(self, connection: Connection) -> None:
        settings = self.settings(connection)
        with self.session(settings, None):
            pass

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        settings = self.settings(connection)
        tool = tool_info(self.client_binary)
        guarded = GuardedDump(stream)
        guarded.open()  # garbage is refused before the destination is touched
        with self.session(settings, None) as session:
            # Only when missing: CREATE DATABASE needs a privilege that restoring into an existing
            # database does not, even with IF NOT EXISTS.
            exists = "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s"
            if not query(session, exists, (settings.database,)):
                query(session, f"CREATE DATABASE {quote_name(settings.database)} CHARACTER SET utf8mb4")
        with self.tool_files(options.scratch_dir, settings, tool) as (option_file, env):
            argv = [
                tool.binary,
                f"--defaults-extra-file={option_file}",  # must come first
                "--binary-mode",  # the dump may hold \r and \0 escapes in strings
                f"--default-character-set={settings.character_set}",
                f"--connect-timeout={settings.connect_timeout}",
                f"--database={settings.database}",
            ]
            if settings.max_allowed_packet:
                argv.append(f"--max-allowed-packet={settings.max_allowed_packet}")
            error_lines: list[str] = []

            def on_stderr(line: str) -> None:
                if line.startswith("ERROR"):
                    error_lines.append(line)

            try:
                # The client stops at the first error (no --force) and exits non-zero.
                feed_process(
                    argv,
                    env,
                    guarded,  # type: ignore[arg-type]
                    tool=self.client_binary,
                    on_stderr=on_stderr,
                    explain=self._explain(settings, error_lines),
                )
                guarded.check_complete()
            except NotADump:
                raise
            except EngineError as exc:
                raise EngineError(self._failure(settings, str(exc), guarded)) from None
        return self._check_restored(settings, options)

    def _failure(self, settings: Settings, error: str, guarded: GuardedDump) -> str:
        """The message of a restore the client stopped: its error, then what that left behind,
        from the line it names. DDL commits implicitly, so nothing can be rolled back: the
        message says which tables were replaced, which one was half done and which were left."""
        text = f"restore into database {settings.database} on {settings.where} failed: {error.rstrip('.')}"
        # A statement over the server's max_allowed_packet: the server says so and closes the
        # connection, and the client reports whichever of the two it notices first.
        if re.search(r"ERROR 1153 ", error):
            text += f" ({self._packet_limit(settings)})"
        elif re.search(r"ERROR (2006|2013) ", error):
            text += (
                " (the server closed the connection: it stopped, or a statement was larger than its "
                f"max_allowed_packet; {self._packet_limit(settings)})"
            )
        text += ". The database may be partially restored (MySQL DDL is not transactional)"
        line = re.search(r"ERROR \d+ \(\w+\) at line (\d+)", error)
        progress = guarded.sections.progress_at(int(line.group(1))) if line else ""
        return f"{text}: {progress}." if progress else f"{text}."

    def _packet_limit(self, settings: Settings) -> str:
        """The server's max_allowed_packet in words, when the server can still tell."""
        try:
            with self.session(settings, None) as session:
                limit = int(query(session, "SELECT @@GLOBAL.max_allowed_packet")[0][0])
        except (EngineError, MySQLdb.Error, IndexError, TypeError, ValueError):
            return "raise max_allowed_packet on the server for larger rows"
        return f"max_allowed_packet is {limit} bytes on this server: raise it there for larger rows"

    def _check_restored(self, settings: Settings, options: RestoreOptions) -> RestoreResult:
        info = options.manifest.get("engine_info") or {}
        expected = info.get("tables")
        if expected is None:
            expected = options.manifest.get("tables")
        with self.session(settings, settings.database) as session:
            objects = list_objects(session, settings.database)
            present = [name for name, (kind, _) in objects.items() if kind in _TABLE_TYPES]
            if expected is None:
                tables = present
            else:
                missing = [name for name in expected if name not in present]
                if missing:
                    raise EngineError(
                        f"the restore into database {settings.database} finished but table(s) of the backup "
                        f"are missing: {', '.join(missing)}"
                    )
                tables = list(expected)
            counts: dict[str, int] = {}
            recorded = info.get("row_counts")
            counted = bool(info.get("row_counts_exact") and isinstance(recorded, dict))
            if counted and isinstance(recorded, dict):
                counts = count_rows(session, [name for name in recorded if name in objects])
                wrong = [
                    f"restored table {name} has {counts.get(name, 0)} rows, the backup recorded {rows}"
                    for name, rows in recorded.items()
                    if counts.get(name, 0) != rows
                ]
                if wrong:
                    raise EngineError("; ".join(wrong))
        # Say what was and was not proven, so the restore log never implies a check that did not run.
        proof = (
            "row counts match the backup"
            if counted
            else "row counts not compared: the backup's counts are approximate "
            f"({info.get('row_counts_note') or 'the source was written during the dump'})"
        )
        return RestoreResult(
            tables=tables,
            message=f"restored {len(tables)} table(s) into database {settings.database} on {settings.where}; {proof}",
            row_counts=counts,
        )

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        """Without a server to restore into, check what mysqldump promises about a good dump:
        its header, its ``-- Dump completed`` trailer (written only on success), text in the
        dump's character set without raw NUL bytes; count the statements."""
        scanner = DumpScanner(check_text=True)
        scanner.begin(read_head(stream))
        while chunk := stream.read(_CHUNK):
            scanner.feed(chunk)
        scanner.check_complete()
        return scanner.summary()

    # -- scratch databases ---------------------------------------------------------------------

    def probe(self, connection: Connection) -> None:
        settings = self.settings(connection)
        with self.session(settings, settings.database):
            pass

    def row_counts(self, connection: Connection) -> dict[str, int]:
        settings = self.settings(connection)
        with self.session(settings, settings.database) as session:
            objects = list_objects(session, settings.database)
            return count_rows(session, [name for name, (kind, _) in objects.items() if kind in _TABLE_TYPES])

    def drop_database(self, connection: Connection) -> None:
        settings = self.settings(connection)
        with self.session(settings, None) as session:
            query(session, f"DROP DATABASE IF EXISTS {quote_name(settings.database)}")

    def check_assertion(self, connection: Connection, sql: str, timeout_seconds: float) -> str:
        """In a read-only session, stopped after ``timeout_seconds`` (MariaDB's
        ``max_statement_time``; MySQL's ``max_execution_time``, which stops SELECTs only)."""
        settings = self.settings(connection)
        session = self.connect(settings, settings.database)
        try:
            cursor = session.cursor()
            cursor.execute("SELECT VERSION()")
            version = str(cursor.fetchone()[0])
            if "mariadb" in version.lower():
                cursor.execute("SET SESSION max_statement_time = %s", (float(timeout_seconds),))
            else:
                cursor.execute("SET SESSION max_execution_time = %s", (max(1, int(timeout_seconds * 1000)),))
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.execute(sql)
            return assertion_text(cursor.fetchone() if cursor.description else None)
        except MySQLdb.Error as exc:
            code, text = error_parts(exc)
            if code in _STATEMENT_TIMEOUTS:
                raise EngineError(
                    f"the check ran longer than {timeout_seconds:g} s and was stopped"
                ) from None
            raise EngineError(f"the check failed: {text}") from None
        finally:
            with contextlib.suppress(MySQLdb.Error):
                session.close()

    def fingerprint(self, connection: Connection) -> str | None:
        """Always None: MySQL/MariaDB cannot say "nothing changed" both cheaply and for sure.

        InnoDB's LSN also moves without data changes (purge, statistics) and, worse, stays put
        when MyISAM/Aria tables change or when routines, views or events change (their
        definitions live outside InnoDB, e.g. in ``.frm`` files or Aria system tables). The
        binary log may be off, and ``SET sql_log_bin = 0`` lets a session write without it.
        Checksumming every table is as expensive as the dump itself.
        """
        return None


class MariaDBEngine(MySQLEngine):
    key = "mariadb"
    label = "MariaDB"
    binaries = ("mariadb-dump", "mariadb")
    dump_binary = "mariadb-dump"
    client_binary = "mariadb"


# -- queries --------------------------------------------------------------------------------------
