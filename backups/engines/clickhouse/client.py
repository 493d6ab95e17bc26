"""Talking to ClickHouse through ``clickhouse-client``: settings, credentials, queries, errors.

Credentials reach the client only through a 0600 XML ``--config-file`` in a private directory of
the scratch dir, which is also the client's ``HOME`` (so no ``~/.clickhouse-client/config.xml``
of the worker's user applies); the directory is removed afterwards, whatever happens. The
client reads its connect and receive timeouts from that file, not from the command line
(``--connect_timeout`` there is a query setting that the handshake ignores), so there are two
files: ``client.xml`` for dumps and restores, with the client's default 300 s receive timeout,
and ``quick.xml`` for probes and catalog queries, whose receive timeout is the connect timeout,
so a server that accepts connections but never answers fails within it.

SQL is never put on the command line when it may hold a secret: statements from a backup
(``ENGINE = MySQL(..., 'password')``) go through the client's stdin.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

from backups.engines.base import Connection, EngineError, ServerSettings, login_fields, refuse_problems
from backups.engines.clickhouse.sql import quote_identifier
from backups.engines.options import boolean, option_problems, pem_file, seconds, whole_number
from backups.engines.process import base_env, describe_exit, feed_process, secret_file
from backups.plugins import Option

CLIENT = "clickhouse-client"
DEFAULT_PORT = 9000
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_PART_SIZE = 16 * 1024 * 1024
MIN_PART_SIZE = 1024
MAX_PART_SIZE = 1024 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_AUTH_CODES = (192, 193, 516)  # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED (20.x+)
_UNREACHABLE_CODES = (102, 209, 210, 1000)


@dataclass(frozen=True, kw_only=True)
class Settings(ServerSettings):
    """A validated connection with its defaults applied."""

    database: str
    secure: bool
    ca_certificate: str
    connect_timeout: int
    part_size: int
    replace_existing: bool


def validate(connection: Connection) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not connection.host:
        problems.append(("host", "required: the server's host name or IP address"))
    if connection.port is not None and not 1 <= connection.port <= 65535:
        problems.append(("port", f"must be between 1 and 65535, got {connection.port}"))
    if not connection.database:
        problems.append(("database", "required: the name of the ClickHouse database to back up"))
    for field_name, value in (("user", connection.user), ("password", connection.password)):
        if _CONTROL.search(value):
            # XML cannot carry most control characters, not even as character references.
            problems.append((field_name, "must not contain control characters (XML cannot carry them)"))
    for field_name, names in (
        ("database", [connection.database] if connection.database else []),
        ("include_tables", list(connection.include_tables)),
        ("exclude_tables", list(connection.exclude_tables)),
    ):
        for name in names:
            if not name or "\x00" in name or len(name) > 1000:
                problems.append((field_name, f"{name!r} is not a valid ClickHouse name"))
    overlap = sorted(set(connection.include_tables) & set(connection.exclude_tables))
    if overlap:
        problems.append(("exclude_tables", f"also listed in include_tables: {', '.join(overlap)}"))
    return problems + _option_problems(connection.options)


def _part_size(value: Any) -> str | None:
    if whole_number(value) and MIN_PART_SIZE <= value <= MAX_PART_SIZE:
        return None
    return f"must be a number of bytes from {MIN_PART_SIZE} to {MAX_PART_SIZE}, got {value!r}"


OPTIONS = {
    "secure": Option("true to speak TLS (the server's tcp_port_secure, usually 9440)", boolean),
    "ca_certificate": Option(
        "path of the CA certificate (PEM) that signed the server's; default: the system's CAs", pem_file
    ),
    "connect_timeout": Option(f"seconds, 1-3600 (default {DEFAULT_CONNECT_TIMEOUT})", seconds()),
    "part_size": Option(
        f"bytes of Native data per archive member, {MIN_PART_SIZE}-{MAX_PART_SIZE} "
        f"(default {DEFAULT_PART_SIZE}); also the dump's memory use",
        _part_size,
    ),
    "replace_existing": Option(
        "restore only: drop tables and views of the backup that already exist in the destination "
        "database (default false: refuse)",
        boolean,
    ),
}


def _option_problems(options: dict[str, Any]) -> list[tuple[str, str]]:
    problems = option_problems(options, OPTIONS)
    if "ca_certificate" in options and not options.get("secure"):
        problems.append(("options.ca_certificate", "only used with secure = true"))
    return problems


def settings_for(connection: Connection) -> Settings:
    """The connection's settings with defaults; :class:`EngineError` lists static problems."""
    refuse_problems(validate(connection))
    options = connection.options
    return Settings(
        **login_fields(connection, DEFAULT_PORT),
        database=connection.database,
        secure=bool(options.get("secure", False)),
        ca_certificate=str(options.get("ca_certificate", "")),
        connect_timeout=int(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        part_size=int(options.get("part_size", DEFAULT_PART_SIZE)),
        replace_existing=bool(options.get("replace_existing", False)),
    )


def config_text(settings: Settings, *, quick: bool) -> str:
    """The client's XML configuration: credentials, timeouts and TLS verification."""
    lines = ['<?xml version="1.0"?>', "<config>"]
    if settings.user:
        lines.append(f"  <user>{escape(settings.user)}</user>")
    lines.append(f"  <password>{escape(settings.password)}</password>")
    lines.append(f"  <connect_timeout>{settings.connect_timeout}</connect_timeout>")
    if quick:
        lines.append(f"  <receive_timeout>{settings.connect_timeout}</receive_timeout>")
        lines.append(f"  <send_timeout>{settings.connect_timeout}</send_timeout>")
    if settings.secure:
        # Without this section the client asks on the terminal whether to accept an unknown
        # certificate; here it must refuse instead.
        ca = (
            f"<caConfig>{escape(settings.ca_certificate)}</caConfig><loadDefaultCAFile>false</loadDefaultCAFile>"
            if settings.ca_certificate
            else "<loadDefaultCAFile>true</loadDefaultCAFile>"
        )
        lines.append(
            f"  <openSSL><client>{ca}<verificationMode>strict</verificationMode>"
            "<invalidCertificateHandler><name>RejectCertificateHandler</name></invalidCertificateHandler>"
            "</client></openSSL>"
        )
    return "\n".join([*lines, "</config>"]) + "\n"


def describe_error(stderr: str, settings: Settings) -> str:
    """A human message for the client's stderr; holds no secret."""
    return known_error(stderr, settings) or _clean(stderr)


def known_error(stderr: str, settings: Settings) -> str | None:
    """The message for failures that are about reaching the database, not about a statement."""
    code_match = re.search(r"Code: (\d+)", stderr)
    code = int(code_match.group(1)) if code_match else None
    text = _clean(stderr)
    if code in _AUTH_CODES:
        user = settings.user or "default"
        reason = "the server knows no such user" if code == 192 else "check the password"
        return f"authentication failed for user {user} on {settings.where} ({reason})"
    if code == 81 and settings.database and f"Database {settings.database} doesn't exist" in text:
        return f"database {settings.database} does not exist on {settings.where}"
    if "SSL Exception" in text or "SSL routines" in text:
        return f"TLS with the server at {settings.where} failed: {text}"
    if code in _UNREACHABLE_CODES or "Host not found" in text or "Connection refused" in text:
        if "Connection refused" in text:
            text = "connection refused"
        elif "Host not found" in text or "Not found address of host" in text:
            text = f"host {settings.host} not found"
        elif code == 209 and "reading" in text:
            text = f"no answer within {settings.connect_timeout} s ({text})"
        elif code == 102:
            text += " (is this ClickHouse's native protocol port?)"
        return f"cannot reach the server at {settings.where}: {text}"
    return None


def _clean(stderr: str) -> str:
    """The client's error without its boilerplate: 'Code: 60. Table x doesn't exist.' Lines may
    come joined with " | " (a tool's stderr tail, see process.StderrCollector.text)."""
    lines = [line.strip() for line in re.split(r"\n| \| ", stderr) if line.strip()]
    lines = [line for line in lines if not line.startswith("Received exception from server")]
    text = " | ".join(lines[-4:])
    text = re.sub(r"DB::(?:Net)?Exception: Received from [^ ]+(?:, [^ .]+)?\. ", "", text)
    text = re.sub(r"(?:DB|Poco)::(?:Net)?Exception:? ", "", text)
    return text.rstrip(". ") + "." if text else "no message"


class Client:
    """``clickhouse-client`` runs for one dump or restore, sharing one private directory."""

    def __init__(self, settings: Settings, home: Path, config: Path, quick: Path) -> None:
        self.settings = settings
        self._config = config
        self._quick = quick
        self.env = base_env({"HOME": str(home)})

    def argv(self, *extra: str, quick: bool = False, database: str | None = None) -> list[str]:
        settings = self.settings
        argv = [
            CLIENT,
            f"--config-file={self._quick if quick else self._config}",
            f"--host={settings.host}",
            f"--port={settings.port}",
        ]
        if settings.secure:
            argv.append("--secure")
        if database is not None:
            argv.append(f"--database={database}")
        return [*argv, *extra]

    def query(self, sql: str, *, quick: bool = False, timeout: float = 900) -> str:
        """Run short statements (``;``-separated) and return their TabSeparated output. The SQL
        goes through stdin: a long list of statements would not fit in one argument. ``quick``:
        the server must answer within the connect timeout (for the first contact)."""
        argv = self.argv("--multiquery", "--format=TabSeparated", quick=quick)
        try:
            result = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                timeout=timeout,
                input=sql.encode("utf-8", "surrogateescape"),
            )
        except FileNotFoundError:
            raise EngineError(f"{CLIENT} is not installed (not found on PATH)") from None
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"{CLIENT} did not answer within {timeout:.0f} s ({self.settings.where})"
            ) from None
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", "replace")
            known = known_error(stderr, self.settings)
            raise EngineError(self.scrub(known or describe_exit(CLIENT, result.returncode, _clean(stderr))))
        return result.stdout.decode("utf-8", "surrogateescape")

    def execute(self, sql: str, *, database: str, extra: tuple[str, ...] = ()) -> None:
        """Run statements read from stdin (they may hold secrets) in ``database``. A ``USE``
        statement selects it, not ``--database``: that one travels in the handshake, where the
        server refuses a name with a control character (a line break) though it holds such
        databases (Code: 36)."""
        text = f"USE {quote_identifier(database)};\n{sql}"
        stream: BinaryIO = io.BytesIO(text.encode("utf-8", "surrogateescape"))
        self.feed(self.argv("--multiquery", *extra), stream)

    def feed(self, argv: list[str], stream: BinaryIO) -> None:
        try:
            feed_process(argv, self.env, stream, tool=CLIENT, explain=self.explain)
        except EngineError as exc:
            raise EngineError(self.scrub(str(exc))) from None

    def explain(self, stderr: str) -> str:
        return describe_error(stderr, self.settings)

    def scrub(self, text: str) -> str:
        """Belt and braces: no message ever carries the password, whatever a tool printed."""
        password = self.settings.password
        return text.replace(password, "***") if len(password) >= 4 else text


@contextlib.contextmanager
def client(settings: Settings, scratch_dir: Path) -> Iterator[Client]:
    """A :class:`Client` whose private directory (config files, HOME) is removed on exit."""
    if shutil.which(CLIENT) is None:
        raise EngineError(f"{CLIENT} is not installed (not found on PATH)")
    if settings.ca_certificate and not Path(settings.ca_certificate).is_file():
        raise EngineError(f"ca_certificate file {settings.ca_certificate} does not exist")
    scratch_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="clickhouse-", dir=scratch_dir))  # 0700
    try:
        with (
            secret_file(home, config_text(settings, quick=False), prefix="client-", suffix=".xml") as config,
            secret_file(home, config_text(settings, quick=True), prefix="quick-", suffix=".xml") as quick,
        ):
            yield Client(settings, home, config, quick)
    finally:
        shutil.rmtree(home, ignore_errors=True)
