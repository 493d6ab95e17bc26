"""A MySQL/MariaDB target's settings: checked with field names, defaults applied, values quoted
for the tools' option file, and the servers' and tools' errors in human words."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from backups.engines.base import Connection, ServerSettings, login_fields, refuse_problems
from backups.engines.options import one_of, option_problems, pem_file, seconds, whole_number
from backups.plugins import Option

DEFAULT_PORT = 3306
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_CHARACTER_SET = "utf8mb4"
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
MAX_OPTION_VALUE = 1000  # option-file lines are read into a 4 KiB buffer; escaping can double


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
_ACCESS_DENIED = re.compile(r"Access denied for user .* \(using password")
_UNREACHABLE = (
    "Can't connect",
    "Unknown MySQL server host",
    "Unknown server host",
    "Lost connection to server at 'handshake",
    "Lost connection to MySQL server at 'reading initial",
)


def option_value(value: str) -> str:
    """``value`` quoted for a MySQL option file (mysys and Connector/C parse it the same way).

    Inside double quotes a '#' is not a comment and the escapes below are undone; without the
    quotes, leading/trailing spaces would be stripped and a '#' would end the value.
    """
    escapes = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}
    return '"' + "".join(escapes.get(char, char) for char in value) + '"'


@dataclass(frozen=True, kw_only=True)
class Settings(ServerSettings):
    """A validated connection with its defaults applied."""

    database: str
    ssl_mode: str
    ssl_files: dict[str, str]  # "ca" / "cert" / "key" -> path
    connect_timeout: int
    character_set: str
    max_allowed_packet: str


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


def tool_error_code(text: str) -> int | None:
    match = re.search(r"Got error: (\d+):", text) or re.search(r"ERROR (\d+) \(", text)
    return int(match.group(1)) if match else None


def validate(connection: Connection) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not connection.host:
        problems.append(("host", "required: the server's host name or IP address ('localhost': the socket)"))
    if connection.port is not None and not 1 <= connection.port <= 65535:
        problems.append(("port", f"must be between 1 and 65535, got {connection.port}"))
    if not connection.database:
        problems.append(("database", "required: the name of the database to back up"))
    problems += _name_problems(connection)
    for field_name, value in (("user", connection.user), ("password", connection.password)):
        if "\x00" in value or len(value) > MAX_OPTION_VALUE:
            problems.append(
                (field_name, f"must be at most {MAX_OPTION_VALUE} characters without NUL characters")
            )
    return problems + option_problems(connection.options, OPTIONS)


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
            elif any(ord(char) > 0xFFFF for char in name):
                # Servers refuse them ("Invalid utf8mb4 character string"), whatever the quoting.
                problems.append(
                    (
                        field_name,
                        f"{name!r} is not a valid MySQL name: MySQL and MariaDB names hold no "
                        "characters beyond U+FFFF (such as emoji)",
                    )
                )
    overlap = sorted(set(connection.include_tables) & set(connection.exclude_tables))
    if overlap:
        problems.append(("exclude_tables", f"also listed in include_tables: {', '.join(overlap)}"))
    return problems


def settings_for(connection: Connection) -> Settings:
    """The connection's settings with defaults; :class:`EngineError` lists static problems."""
    refuse_problems(validate(connection))
    options = connection.options
    ssl_files = {
        kind: str(options[f"ssl_{kind}"]) for kind in ("ca", "cert", "key") if options.get(f"ssl_{kind}")
    }
    return Settings(
        **login_fields(connection, DEFAULT_PORT),
        database=connection.database,
        ssl_mode=str(options.get("ssl_mode", "")).upper(),
        ssl_files=ssl_files,
        connect_timeout=int(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        character_set=str(options.get("default_character_set", DEFAULT_CHARACTER_SET)),
        max_allowed_packet=str(options.get("max_allowed_packet", "")),
    )
