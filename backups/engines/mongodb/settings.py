"""MongoDB target settings: validation with field names, defaults, the connection string and
the YAML ``--config`` file the tools read, and human wording for the tools' errors."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from backups.engines.base import Connection, ServerSettings, login_fields, refuse_problems
from backups.engines.options import boolean, one_of, option_problems, pem_file, seconds
from backups.plugins import Option

DEFAULT_PORT = 27017
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_AUTH_DATABASE = "admin"
READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
MAX_VALUE = 1000
#: Characters MongoDB refuses in database names on Linux (and "." would split a namespace).
_DATABASE_FORBIDDEN = frozenset('/\\. "$\x00')
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{4}\s+")  # the tools' log line prefix
_URI = re.compile(r"mongodb(\+srv)?://\S*?(?=:?(\s|$))")
_UNREACHABLE = (
    "server selection",
    "connection refused",
    "no reachable servers",
    "i/o timeout",
    "context deadline exceeded",
    "no such host",
    "network is unreachable",
)


@dataclass(frozen=True, kw_only=True)
class Settings(ServerSettings):
    """A validated connection with its defaults applied."""

    database: str
    auth_database: str
    tls: bool
    tls_ca_file: str
    tls_certificate_key_file: str
    tls_key_password: str
    drop: bool
    connect_timeout: int
    read_preference: str

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def uri(self, *, for_dump: bool) -> str:
        """The connection string for the ``--config`` file: everything but the secrets."""
        params: dict[str, str] = {
            "connectTimeoutMS": str(self.connect_timeout * 1000),
            "serverSelectionTimeoutMS": str(self.connect_timeout * 1000),
        }
        if self.user:
            params["authSource"] = self.auth_database
        if self.tls:
            params["tls"] = "true"
        if self.tls_ca_file:
            params["tlsCAFile"] = self.tls_ca_file
        if self.tls_certificate_key_file:
            params["tlsCertificateKeyFile"] = self.tls_certificate_key_file
        if for_dump and self.read_preference != "primary":
            params["readPreference"] = self.read_preference
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        return f"mongodb://{user}{self.where}/?{urlencode(params, quote_via=quote, safe='')}"


def yaml_quoted(value: str) -> str:
    """``value`` as a YAML double-quoted scalar that any YAML 1.1 parser (the tools use Go's
    yaml.v2) reads back unchanged: line breaks escaped rather than folded, and characters YAML
    may not carry raw (controls, NEL, LS/PS, BOM, non-characters) written as escapes."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for char in value:
        code = ord(char)
        if char in escapes:
            out.append(escapes[char])
        elif _yaml_printable(code):
            out.append(char)
        else:
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def _yaml_printable(code: int) -> bool:
    if 0x20 <= code <= 0x7E or code >= 0x10000:
        return True
    if 0xA0 <= code <= 0xD7FF:
        return code not in (0x2028, 0x2029)  # YAML 1.1 line and paragraph separators
    return 0xE000 <= code <= 0xFFFD and code != 0xFEFF


def database_name_problem(name: str) -> str:
    """Why ``name`` cannot be a MongoDB database name, or "" if it can."""
    if not name:
        return "must not be empty"
    if len(name.encode("utf-8", "surrogatepass")) >= 64:
        return "must be shorter than 64 bytes"
    forbidden = sorted(set(name) & _DATABASE_FORBIDDEN)
    if forbidden:
        return f"must not contain {' '.join(repr(char) for char in forbidden)}"
    return ""


def describe_error(text: str, settings: Settings) -> str:
    """A human message for a tool's error output (already stripped of secrets)."""
    lowered = text.lower()
    if "authenticationfailed" in lowered or "authentication failed" in lowered or "auth error" in lowered:
        user = settings.user or "(no user)"
        return (
            f"authentication failed for user {user} on {settings.where} "
            f"(check the password and auth_database, now {settings.auth_database})"
        )
    if "(unauthorized)" in lowered or "not authorized" in lowered:
        return f"user {settings.user or '(no user)'} lacks a privilege on {settings.where}: {text}"
    if "x509" in lowered or "tls:" in lowered or "certificate" in lowered:
        return f"TLS with the server at {settings.where} failed: {text}"
    if any(marker in lowered for marker in _UNREACHABLE):
        return f"cannot reach the server at {settings.where} within {settings.connect_timeout} s: {text}"
    return text


def validate(connection: Connection) -> list[tuple[str, str]]:
    """Static problems with a target's settings as ``(field, message)`` pairs."""
    problems: list[tuple[str, str]] = []
    if not connection.host:
        problems.append(("host", "required: the server's host name or IP address"))
    elif not _valid_host(connection.host):
        problems.append(("host", "must be one host name or IP address (no port, scheme or replica set list)"))
    if connection.port is not None and not 1 <= connection.port <= 65535:
        problems.append(("port", f"must be between 1 and 65535, got {connection.port}"))
    if not connection.database:
        problems.append(("database", "required: the name of the database to back up"))
    elif problem := database_name_problem(connection.database):
        problems.append(("database", f"{connection.database!r} {problem}"))
    for field_name, value in (("user", connection.user), ("password", connection.password)):
        if _bad_text(value):
            problems.append((field_name, f"must be at most {MAX_VALUE} characters without NUL characters"))
    if connection.password and not connection.user:
        problems.append(("password", "is set but user is not: set the user name too"))
    if connection.user and not connection.password:
        problems.append(("password", "required when user is set (MongoDB's tools would prompt for it)"))
    return problems + _collection_problems(connection) + _option_problems(connection.options)


def settings_for(connection: Connection) -> Settings:
    """The connection's settings with defaults; :class:`EngineError` lists static problems."""
    refuse_problems(validate(connection))
    options = connection.options
    ca_file = str(options.get("tls_ca_file", ""))
    key_file = str(options.get("tls_certificate_key_file", ""))
    return Settings(
        **login_fields(connection, DEFAULT_PORT),
        database=connection.database,
        auth_database=str(options.get("auth_database", DEFAULT_AUTH_DATABASE)),
        tls=bool(options.get("tls", bool(ca_file or key_file))),
        tls_ca_file=ca_file,
        tls_certificate_key_file=key_file,
        tls_key_password=str(options.get("tls_certificate_key_file_password", "")),
        drop=bool(options.get("drop", True)),
        connect_timeout=int(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        read_preference=str(options.get("read_preference", "primary")),
    )


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.fullmatch(host)) and ".." not in host
    return True


def _bad_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in value or len(value) > MAX_VALUE


def _collection_problems(connection: Connection) -> list[tuple[str, str]]:
    problems = []
    for field_name, names in (
        ("include_tables", connection.include_tables),
        ("exclude_tables", connection.exclude_tables),
    ):
        for name in names:
            if not name or "\x00" in name or len(name.encode("utf-8", "surrogatepass")) > 255:
                problems.append((field_name, f"{name!r} is not a valid collection name"))
            elif name.startswith("system.buckets."):
                problems.append((field_name, f"{name!r}: name the time series collection itself"))
    if len(connection.include_tables) > 1:
        problems.append(
            (
                "include_tables",
                "mongodump dumps one named collection or all but some: list one collection, or list "
                "the collections to leave out in exclude_tables",
            )
        )
    if connection.include_tables and connection.exclude_tables:
        problems.append(("exclude_tables", "mongodump takes include_tables or exclude_tables, not both"))
    return problems


def _auth_database(value: Any) -> str | None:
    problem = database_name_problem(value) if isinstance(value, str) else "must be a database name"
    return f"{value!r} {problem}" if problem else None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and not _bad_text(value):
        return None
    return f"must be text of at most {MAX_VALUE} characters"


OPTIONS = {
    "auth_database": Option(
        f"the database that holds the user (default {DEFAULT_AUTH_DATABASE})", _auth_database
    ),
    "tls": Option("true to connect with TLS (implied by the tls_* files)", boolean),
    "tls_ca_file": Option("path of the CA certificate (PEM)", pem_file),
    "tls_certificate_key_file": Option("path of the client certificate and key (PEM)", pem_file),
    "tls_certificate_key_file_password": Option("password of the client key (use a ${ENV} reference)", _text),
    "drop": Option(
        "restores: drop each collection of the backup before restoring it (default true)", boolean
    ),
    "connect_timeout": Option(f"seconds, 1-3600 (default {DEFAULT_CONNECT_TIMEOUT})", seconds()),
    "read_preference": Option(
        f"dumps: one of {', '.join(READ_PREFERENCES)} (default primary)", one_of(READ_PREFERENCES)
    ),
}


def _option_problems(options: dict[str, Any]) -> list[tuple[str, str]]:
    problems = option_problems(options, OPTIONS)
    if options.get("tls") is False and (
        options.get("tls_ca_file") or options.get("tls_certificate_key_file")
    ):
        problems.append(("options.tls", "is false, but TLS files are set: remove them or set tls = true"))
    return problems


def config_text(settings: Settings, *, for_dump: bool) -> str:
    """The YAML for the tools' ``--config``: mongo-tools reads exactly the keys ``uri``,
    ``password`` and ``sslPEMKeyPassword`` from it (``yaml.UnmarshalStrict``)."""
    lines = [f"uri: {yaml_quoted(settings.uri(for_dump=for_dump))}"]
    if settings.password:
        lines.append(f"password: {yaml_quoted(settings.password)}")
    if settings.tls_key_password:
        lines.append(f"sslPEMKeyPassword: {yaml_quoted(settings.tls_key_password)}")
    return "\n".join(lines) + "\n"


def human_error(text: str, settings: Settings) -> str:
    """The tool's own error ("Failed: ..." for mongodump and mongorestore's restore errors,
    "error connecting to host: ..." for mongorestore's), without secrets, log timestamps or the
    connection string, in human words where we know them."""
    text = redact(text, settings)
    if "Failed:" in text:
        text = text.rsplit("Failed:", 1)[-1]
    for wrapper in (
        "can't create session: ",
        "error connecting to host: ",
        f"failed to connect to {settings.where}: ",
    ):
        text = text.replace(wrapper, "")
    return describe_error(text.strip(), settings)


def redact(text: str, settings: Settings) -> str:
    """``text`` without secrets, log timestamps and the connection string the tools quote in
    their errors (the target's host and port instead)."""
    for secret in (settings.password, settings.tls_key_password):
        if secret:
            text = text.replace(secret, "****")
    return _URI.sub(settings.where, _TIMESTAMP.sub("", text))
