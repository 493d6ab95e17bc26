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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import MySQLdb  # type: ignore[import-untyped]

from .base import Connection, Dump, DumpOptions, Engine, EngineError, RestoreOptions, RestoreResult
from .mysqldump_format import DumpScanner, GuardedDump, NotADump, read_head
from .options import Option, one_of, option_problems, pem_file, seconds, whole_number
from .process import base_env, dump_process, feed_process, run_tool, secret_file

logger = logging.getLogger(__name__)

DEFAULT_PORT = 3306
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_CHARACTER_SET = "utf8mb4"
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
MAX_OPTION_VALUE = 1000  # option-file lines are read into a 4 KiB buffer; escaping can double
_CHUNK = 1024 * 1024


def _character_set(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_]{1,32}", value):
        return None
    return f"must be a character set name such as utf8mb4, got {value!r}"


def _packet_size(value: Any) -> str | None:
    if (whole_number(value) and value > 0) or (
        isinstance(value, str) and re.fullmatch(r"[1-9][0-9]*[KMG]?", value)
    ):
        return None
    return f"must be a number of bytes such as 67108864 or '64M', got {value!r}"


OPTIONS = {
    "ssl_mode": Option(f"one of {', '.join(SSL_MODES)}", one_of(SSL_MODES, fold_case=True)),
    "ssl_ca": Option("path of the CA certificate (PEM)", pem_file),
    "ssl_cert": Option("path of the client certificate (PEM)", pem_file),
    "ssl_key": Option("path of the client key (PEM)", pem_file),
    "connect_timeout": Option(f"seconds, 1-3600 (default {DEFAULT_CONNECT_TIMEOUT})", seconds()),
    "default_character_set": Option(
        f"connection character set (default {DEFAULT_CHARACTER_SET})", _character_set
    ),
    "max_allowed_packet": Option(
        "largest statement or row, e.g. 67108864 or '64M' (default: the tool's)", _packet_size
    ),
}
_TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED")
_ACCESS_DENIED = re.compile(r"Access denied for user .* \(using password")
_UNREACHABLE = (
    "Can't connect",
    "Unknown MySQL server host",
    "Unknown server host",
    "Lost connection to server at 'handshake",
    "Lost connection to MySQL server at 'reading initial",
)


def quote_name(name: str) -> str:
    """A MySQL identifier in backticks (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def option_value(value: str) -> str:
    """``value`` quoted for a MySQL option file (mysys and Connector/C parse it the same way).

    Inside double quotes a '#' is not a comment and the escapes below are undone; without the
    quotes, leading/trailing spaces would be stripped and a '#' would end the value.
    """
    escapes = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}
    return '"' + "".join(escapes.get(char, char) for char in value) + '"'


@dataclass(frozen=True)
class Settings:
    """A validated connection with its defaults applied."""

    host: str
    port: int
    database: str
    user: str
    password: str
    ssl_mode: str
    ssl_files: dict[str, str]  # "ca" / "cert" / "key" -> path
    connect_timeout: int
    character_set: str
    max_allowed_packet: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


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


def tool_info(binary: str) -> Tool:
    text = run_tool([binary, "--no-defaults", "--version"], base_env({}), tool=binary, timeout=30).strip()
    match = re.search(r"Distrib (\S+?),", text) or re.search(r"Ver (\S+)", text)
    return Tool(binary=binary, version=match.group(1) if match else text, mariadb="MariaDB" in text)


def major_version(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group(0)) if match else 0


def describe_error(code: int | None, text: str, settings: Settings) -> str:
    """A human message for a server or client error; holds no secret."""
    if code == 1045 or _ACCESS_DENIED.search(text):
        user = settings.user or "(the default user)"
        return f"authentication failed for user {user} on {settings.where} (check the password)"
    if code == 1049 or "Unknown database" in text:
        return f"database {settings.database} does not exist on {settings.where}"
    if code == 1044:
        return f"user {settings.user} may not use database {settings.database} on {settings.where}: {text}"
    if code == 2026 or text.startswith("TLS/SSL error"):
        return f"TLS with the server at {settings.where} failed: {text}"
    if code in (2002, 2003, 2005, 2013) or any(marker in text for marker in _UNREACHABLE):
        if code == 2013 or re.search(r"\(110\)|system error: 110", text):  # 110: ETIMEDOUT
            text = f"no answer within {settings.connect_timeout} s ({text})"
        return f"cannot reach the server at {settings.where}: {text}"
    return text


def _tool_error_code(text: str) -> int | None:
    match = re.search(r"Got error: (\d+):", text) or re.search(r"ERROR (\d+) \(", text)
    return int(match.group(1)) if match else None


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
        problems: list[tuple[str, str]] = []
        if not connection.host:
            problems.append(
                ("host", "required: the server's host name or IP address ('localhost': the socket)")
            )
        if connection.port is not None and not 1 <= connection.port <= 65535:
            problems.append(("port", f"must be between 1 and 65535, got {connection.port}"))
        if not connection.database:
            problems.append(("database", "required: the name of the database to back up"))
        problems += self._name_problems(connection)
        for field_name, value in (("user", connection.user), ("password", connection.password)):
            if "\x00" in value or len(value) > MAX_OPTION_VALUE:
                problems.append(
                    (field_name, f"must be at most {MAX_OPTION_VALUE} characters without NUL characters")
                )
        return problems + self._option_problems(connection.options)

    @staticmethod
    def _name_problems(connection: Connection) -> list[tuple[str, str]]:
        problems = []
        for field_name, names in (
            ("database", [connection.database] if connection.database else []),
            ("include_tables", list(connection.include_tables)),
            ("exclude_tables", list(connection.exclude_tables)),
        ):
            for name in names:
                if len(name) > 64 or "\x00" in name or name != name.rstrip(" "):
                    problems.append((field_name, f"{name!r} is not a valid MySQL name"))
        overlap = sorted(set(connection.include_tables) & set(connection.exclude_tables))
        if overlap:
            problems.append(("exclude_tables", f"also listed in include_tables: {', '.join(overlap)}"))
        return problems

    @staticmethod
    def _option_problems(options: dict[str, Any]) -> list[tuple[str, str]]:
        return option_problems(options, OPTIONS)

    def settings(self, connection: Connection) -> Settings:
        """The connection's settings with defaults; :class:`EngineError` lists static problems."""
        problems = self.validate(connection)
        if problems:
            raise EngineError("; ".join(f"{field}: {message}" for field, message in problems))
        options = connection.options
        ssl_files = {
            kind: str(options[f"ssl_{kind}"]) for kind in ("ca", "cert", "key") if options.get(f"ssl_{kind}")
        }
        return Settings(
            host=connection.host,
            port=connection.port or DEFAULT_PORT,
            database=connection.database,
            user=connection.user,
            password=connection.password,
            ssl_mode=str(options.get("ssl_mode", "")).upper(),
            ssl_files=ssl_files,
            connect_timeout=int(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
            character_set=str(options.get("default_character_set", DEFAULT_CHARACTER_SET)),
            max_allowed_packet=str(options.get("max_allowed_packet", "")),
        )

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
            code, text = _error_parts(exc)
            raise EngineError(describe_error(code, text, settings)) from None
        if settings.ssl_mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"):
            # MySQLdb on MariaDB's Connector/C does not enforce REQUIRED; check what was negotiated.
            cipher = _query(session, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
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
            code, text = _error_parts(exc)
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
            return describe_error(_tool_error_code(text), text, settings)

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
            _query(session, "SET SESSION wait_timeout = 86400")
            _query(session, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            _query(session, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            objects = list_objects(session, settings.database)
            server_version = str(_query(session, "SELECT VERSION()")[0][0])
            dumped = self._select(connection, objects)
        except BaseException as exc:
            session.close()
            if isinstance(exc, MySQLdb.Error):
                code, text = _error_parts(exc)
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
            if not _query(session, exists, (settings.database,)):
                _query(session, f"CREATE DATABASE {quote_name(settings.database)} CHARACTER SET utf8mb4")
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
                raise EngineError(
                    f"restore into database {settings.database} on {settings.where} failed: {exc}. The "
                    "database may be partially restored (MySQL DDL is not transactional)."
                ) from None
        return self._check_restored(settings, options)

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
            _query(session, f"DROP DATABASE IF EXISTS {quote_name(settings.database)}")

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


def _query(session: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with session.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def _error_parts(exc: Exception) -> tuple[int | None, str]:
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return exc.args[0], str(exc.args[1])
    return None, str(exc)


def list_objects(session: Any, database: str) -> dict[str, tuple[str, str]]:
    """Tables, views and sequences of ``database``: name -> (TABLE_TYPE, ENGINE), by name."""
    rows = _query(
        session,
        "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE <> 'TEMPORARY' ORDER BY TABLE_NAME",
        (database,),
    )
    return {str(name): (str(kind), str(engine)) for name, kind, engine in rows}


def count_rows(session: Any, tables: list[str]) -> dict[str, int]:
    return {name: count_table(session, name) for name in tables}


def count_table(session: Any, name: str) -> int:
    sql = f"SELECT COUNT(*) FROM {quote_name(name)}"  # noqa: S608  (a quoted identifier, no data)
    return int(_query(session, sql)[0][0])


def innodb_lsn(session: Any) -> int | None:
    """InnoDB's current log sequence number (MariaDB; MySQL 8.0.30+), or None."""
    rows = _query(
        session,
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_lsn_current', 'Innodb_redo_log_current_lsn')",
    )
    return int(rows[0][1]) if rows else None


class RowCounter:
    """Counts rows in the snapshot session while the dump runs, then reads the LSN again once the
    dump has finished. From :meth:`start` on the thread owns the session and closes it, so a
    failed dump can leave without waiting for a long ``COUNT(*)``."""

    def __init__(self, session: Any, tables: list[str]) -> None:
        self._session = session
        self._tables = tables
        self._stop = threading.Event()
        self._dump_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mysql-row-counts", daemon=True)
        self.counts: dict[str, int] = {}
        self.lsn_after: int | None = None
        self.error = ""

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for name in self._tables:
                if self._stop.is_set():
                    return
                self.counts[name] = count_table(self._session, name)
        except MySQLdb.Error as exc:
            self.error = f"row counts incomplete: {_error_parts(exc)[1]}"
            logger.warning("row counts for the manifest failed: %s", self.error)
        try:
            self._dump_done.wait()
            if not self._stop.is_set() and not self.error:
                self.lsn_after = innodb_lsn(self._session)
        except MySQLdb.Error as exc:
            self.error = f"InnoDB's LSN could not be read after the dump: {_error_parts(exc)[1]}"
        finally:
            with contextlib.suppress(MySQLdb.Error):
                self._session.close()

    def finish(self) -> None:
        self._dump_done.set()
        self._thread.join()

    def abandon(self) -> None:
        self._stop.set()
        self._dump_done.set()
        if not self._thread.ident:
            with contextlib.suppress(MySQLdb.Error):
                self._session.close()
