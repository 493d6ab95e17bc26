"""Redis: RDB snapshots with ``redis-cli --rdb -``, restored key by key into a running server.

Dump. ``redis-cli --rdb -`` asks the server for the same snapshot a new replica gets (``SYNC``,
with ``REPLCONF rdb-only`` so the server forgets the pseudo-replica afterwards) and writes it to
stdout: every logical database and the Redis 7 function libraries, in Redis's standard RDB
format, loadable by any ``redis-server`` at least as new as the source. The password reaches
redis-cli only through ``REDISCLI_AUTH`` in its environment, never argv; TLS settings are file
paths. :class:`~.redis_rdb.GuardedSnapshot` makes sure the stream is one whole snapshot (and
drops the transfer mark a diskless transfer leaves on a pipe); redis-cli's exit status catches a
connection lost midway. The engine's own short sessions (probe, facts for the manifest) use
redis-py with the password in memory.

Restore. Redis cannot load an RDB into a running server, and replacing its data file means a
restart and losing every key written since. So the snapshot is loaded into a private scratch
``redis-server`` (:mod:`.redis_scratch`) and its keys are copied into the destination with
``DUMP``/``RESTORE`` (:mod:`.redis_copy`), TTLs preserved; the destination keeps serving. Without
the ``replace`` option, a backup key that already exists in the destination stops the restore
before anything is written, and a restore that fails midway deletes the keys it had written
(each was absent before), so the destination is left as it was.

ACL permissions that suffice (tested): a backup user ``-@all +ping +info +replconf +sync``; a
restore user ``~* -@all +ping +select +exists +restore``, plus ``+function|list
+function|restore`` when the backup holds function libraries; ``+unlink`` (and
``+function|delete``) let a failed restore delete what it wrote.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import redis

from backups.engines.base import (
    Connection,
    Dump,
    DumpOptions,
    Engine,
    EngineError,
    RestoreOptions,
    RestoreResult,
    ServerSettings,
    login_fields,
    refuse_problems,
)
from backups.engines.options import boolean, option_problems, pem_file, seconds, whole_number
from backups.engines.process import base_env, dump_process
from backups.engines.redis.copy import Copier, redis_message, restored_counts, summary
from backups.engines.redis.rdb import GuardedSnapshot, announced_size
from backups.engines.redis.scratch import COMMAND_TIMEOUT, MIN_DATABASES, loaded_snapshot, no_retry
from backups.plugins import Option

DEFAULT_PORT = 6379
DEFAULT_CONNECT_TIMEOUT = 10
MAX_DATABASE = 1_000_000
_FILE_OPTIONS = ("tls_ca_file", "tls_cert_file", "tls_key_file")


def _databases(value: Any) -> str | None:
    if (
        isinstance(value, list)
        and value
        and all(whole_number(n) and 0 <= n < MAX_DATABASE for n in value)
        and len(set(value)) == len(value)
    ):
        return None
    return f"must be a list of distinct database numbers such as [0, 2], got {value!r}"


OPTIONS = {
    "tls": Option("true to connect with TLS (default false)", boolean),
    "tls_ca_file": Option("CA certificates to verify the server with (PEM; default: the system's)", pem_file),
    "tls_cert_file": Option(
        "client certificate (PEM), with tls_key_file, for servers that ask for one", pem_file
    ),
    "tls_key_file": Option("the client certificate's private key (PEM, not encrypted)", pem_file),
    "tls_insecure": Option("true to accept any server certificate (default false)", boolean),
    "connect_timeout": Option(f"seconds, 1-3600 (default {DEFAULT_CONNECT_TIMEOUT})", seconds()),
    "replace": Option(
        "restore: true to overwrite keys that exist in the destination (default false: refuse)", boolean
    ),
    "databases": Option(
        "restore: the logical databases to restore, e.g. [0, 2] (default: every one in the backup)",
        _databases,
    ),
}
_CLI_NOISE = ("sending REPLCONF", "SYNC sent to master", "Transfer finished")


@dataclass(frozen=True, kw_only=True)
class Settings(ServerSettings):
    """A validated connection with its defaults applied."""

    tls: bool
    tls_files: dict[str, str]  # option name -> path
    tls_insecure: bool
    connect_timeout: int
    replace: bool
    databases: tuple[int, ...] | None

    @property
    def who(self) -> str:
        return self.user or "default"

    def scrub(self, text: str) -> str:
        """Belt and braces: Redis and redis-cli do not echo passwords, but a message never may.
        (A password of a few characters is left alone: replacing it would garble the text.)"""
        return text.replace(self.password, "***") if len(self.password) >= 4 else text


def describe_error(exc: redis.RedisError, settings: Settings) -> str:
    """A human message for a redis-py error; holds no secret."""
    text = settings.scrub(redis_message(exc))
    where = settings.where
    if "without any password configured" in text or "no password is set" in text:
        return (
            f"authentication failed: the server at {where} has no password for user {settings.who}; "
            "clear the target's password"
        )
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "invalid password" in text:
        if "NOAUTH" in text or "Authentication required" in text:
            return f"authentication failed: the server at {where} requires a password and none is set"
        return f"authentication failed for user {settings.who} on {where} (check the password)"
    if isinstance(exc, redis.TimeoutError):
        return f"cannot connect to the server at {where}: no answer within {settings.connect_timeout} s"
    if isinstance(exc, redis.ConnectionError):
        if "SSL" in text or "TLS" in text:
            return f"TLS with the server at {where} failed: {text}"
        if "refused" in text.lower():
            return f"cannot connect to the server at {where}: connection refused"
        return f"cannot connect to the server at {where}: {text}"
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return f"user {settings.who} lacks a permission on {where}: {text}"
    return f"{where}: {text}"


def explain_cli(settings: Settings, lines: collections.deque[str]) -> Callable[[str], str]:
    """Turns redis-cli's stderr into the same messages the engine's sessions give."""

    def explain(tail: str) -> str:
        text = settings.scrub(" | ".join(line for line in lines if not line.startswith(_CLI_NOISE)) or tail)
        where = settings.where
        if "WRONGPASS" in text or "AUTH failed" in text:
            return f"authentication failed for user {settings.who} on {where} (check the password)"
        if "NOAUTH" in text:
            return f"authentication failed: the server at {where} requires a password and none is set"
        if match := re.search(r"Could not connect to Redis at \S+: (.*?)(?: \||$)", text):
            reason = match.group(1)
            if "SSL" in reason:
                return f"TLS with the server at {where} failed: {reason}"
            return f"cannot connect to the server at {where}: {reason[:1].lower() + reason[1:]}"
        if "NOPERM" in text:
            return (
                f"user {settings.who} may not take a snapshot on {where} (it needs the ACL permissions "
                f"+replconf +sync): {text}"
            )
        if "I/O Error" in text or "Error reading" in text:
            return f"the connection to {where} broke during the transfer: {text}"
        return text

    return explain


class RedisEngine(Engine):
    key = "redis"
    label = "Redis"
    binaries = ("redis-cli", "redis-server", "redis-check-rdb")
    file_extension = ".rdb"
    content_type = "application/octet-stream"
    supported_types = ("full", "database")
    confirm_with = "name"
    has_scratch_databases = False

    # -- settings ------------------------------------------------------------------------------

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        host = connection.host
        if not host:
            problems.append(("host", "required: the server's host name or IP address"))
        elif host.startswith(("-", "/")) or any(char.isspace() or not char.isprintable() for char in host):
            problems.append(("host", "must be a host name or IP address (Unix sockets are not supported)"))
        if connection.port is not None and not 1 <= connection.port <= 65535:
            problems.append(("port", f"must be between 1 and 65535, got {connection.port}"))
        if connection.database:
            problems.append(
                ("database", "leave empty: a snapshot holds every logical database (options.databases "
                 "chooses the ones a restore writes)")
            )  # fmt: skip
        if connection.user and (
            connection.user.startswith("-")
            or any(c.isspace() or not c.isprintable() for c in connection.user)
        ):
            problems.append(("user", "must be an ACL user name without spaces or control characters"))
        if "\x00" in connection.password:
            problems.append(("password", "must not contain NUL characters"))
        for field_name in ("include_tables", "exclude_tables", "paths"):
            if getattr(connection, field_name):
                problems.append(
                    (field_name, "not used by the redis engine: a snapshot holds the whole server")
                )
        return problems + self._option_problems(connection.options)

    @staticmethod
    def _option_problems(options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = option_problems(options, OPTIONS)
        if not options.get("tls") and any(name in options for name in (*_FILE_OPTIONS, "tls_insecure")):
            problems.append(
                (
                    "options.tls",
                    "must be true when tls_ca_file, tls_cert_file, tls_key_file or tls_insecure is set",
                )
            )
        if ("tls_cert_file" in options) != ("tls_key_file" in options):
            problems.append(("options.tls_key_file", "tls_cert_file and tls_key_file go together"))
        return problems

    def settings(self, connection: Connection) -> Settings:
        """The connection's settings with defaults; :class:`EngineError` lists static problems."""
        refuse_problems(self.validate(connection))
        options = connection.options
        databases = options.get("databases")
        return Settings(
            **login_fields(connection, DEFAULT_PORT),
            tls=bool(options.get("tls")),
            tls_files={name: str(options[name]) for name in _FILE_OPTIONS if options.get(name)},
            tls_insecure=bool(options.get("tls_insecure")),
            connect_timeout=int(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
            replace=bool(options.get("replace")),
            databases=tuple(sorted(databases)) if databases else None,
        )

    # -- sessions ------------------------------------------------------------------------------

    def client(self, settings: Settings, db: int = 0, *, timeout: float | None = None) -> redis.Redis:
        """A connected redis-py session on database ``db``: no automatic retries, no CLIENT
        SETNAME (an extra ACL right)."""
        params: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "db": db,
            "username": settings.user or None,
            "password": settings.password or None,
            "socket_connect_timeout": settings.connect_timeout,
            "socket_timeout": timeout or settings.connect_timeout,
            "retry": no_retry(),
            "single_connection_client": True,  # connects now, so errors surface here
        }
        if settings.tls:
            params.update(
                ssl=True,
                ssl_ca_certs=settings.tls_files.get("tls_ca_file"),
                ssl_certfile=settings.tls_files.get("tls_cert_file"),
                ssl_keyfile=settings.tls_files.get("tls_key_file"),
                ssl_cert_reqs="none" if settings.tls_insecure else "required",
                ssl_check_hostname=not settings.tls_insecure,
            )
        try:
            return redis.Redis(**params)
        except redis.RedisError as exc:
            raise EngineError(describe_error(exc, settings)) from None

    @contextlib.contextmanager
    def session(self, settings: Settings) -> Iterator[redis.Redis]:
        client = self.client(settings)
        try:
            yield client
        except redis.RedisError as exc:
            raise EngineError(describe_error(exc, settings)) from None
        finally:
            client.close()

    def probe(self, connection: Connection) -> None:
        settings = self.settings(connection)
        with self.session(settings) as client:
            client.ping()

    def check_restore_destination(self, connection: Connection) -> None:
        self.probe(connection)

    def fingerprint(self, connection: Connection) -> str | None:
        """Always None: Redis offers no cheap token that surely changes with every write.

        ``rdb_changes_since_last_save`` goes back to zero at every save, and ``rdb_last_save_time``
        has one-second resolution, so a write followed by a save within the same second gives the
        same pair as before the write; ``master_repl_offset`` moves only while a replication
        backlog exists; ``DEBUG DIGEST`` hashes the whole data set (as costly as the dump, and
        usually disabled).
        """
        return None

    # -- dump ----------------------------------------------------------------------------------

    def dump(self, connection: Connection, options: DumpOptions) -> contextlib.AbstractContextManager[Dump]:
        return self._dump(connection)

    @contextlib.contextmanager
    def _dump(self, connection: Connection) -> Iterator[Dump]:
        settings = self.settings(connection)
        info = self._facts(settings)
        argv = ["redis-cli", "-h", settings.host, "-p", str(settings.port), "--no-auth-warning"]
        if settings.user:
            argv += ["--user", settings.user]
        if settings.tls:
            argv.append("--tls")
            flags = {"tls_ca_file": "--cacert", "tls_cert_file": "--cert", "tls_key_file": "--key"}
            for name, path in settings.tls_files.items():
                argv += [flags[name], path]
            if settings.tls_insecure:
                argv.append("--insecure")
        argv += ["--rdb", "-"]
        env = base_env({"REDISCLI_AUTH": settings.password} if settings.password else {})
        lines: collections.deque[str] = collections.deque(maxlen=50)
        explain = explain_cli(settings, lines)
        with dump_process(argv, env, tool="redis-cli", on_stderr=lines.append, explain=explain) as stdout:
            guarded = GuardedSnapshot(stdout)
            yield Dump(stream=guarded, info=info)  # type: ignore[arg-type]
        try:
            info["rdb_version"] = guarded.check(announced_size(list(lines)))
        except EngineError as exc:
            raise EngineError(f"the snapshot from {settings.where} is not usable: {exc}") from None
        info["transfer"] = "diskless" if guarded.mark_dropped else "disk"

    def _facts(self, settings: Settings) -> dict[str, Any]:
        """What the manifest says about the source (read just before the snapshot starts)."""
        with self.session(settings) as client:
            try:
                server = client.info("server")
                keyspace = client.info("keyspace")
            except redis.exceptions.NoPermissionError as exc:  # a backup user without +info still backs up
                return {"server_info": f"not readable: {describe_error(exc, settings)}"}
        return {
            "server_version": str(server.get("redis_version", "")),
            "redis_mode": str(server.get("redis_mode", "")),
            "keyspace": {
                name: {"keys": int(values["keys"]), "expires": int(values["expires"])}
                for name, values in keyspace.items()
                if name.startswith("db")
            },
            "keyspace_note": "from INFO keyspace just before the snapshot: approximate, keys may change meanwhile",
        }

    # -- restore -------------------------------------------------------------------------------

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        settings = self.settings(connection)
        self.probe(connection)  # an unreachable destination fails before the snapshot is loaded
        scratch = self._scratch_databases(options.manifest)
        with loaded_snapshot(stream, options.scratch_dir, databases=scratch) as snapshot:
            present = snapshot.keyspace()
            chosen = list(settings.databases) if settings.databases is not None else sorted(present)
            # Function libraries are server-wide: only a restore of every database brings them back.
            with_functions = settings.databases is None

            def connect(db: int) -> redis.Redis:
                return self.client(settings, db, timeout=COMMAND_TIMEOUT)

            copier = Copier(snapshot, connect, replace=settings.replace, where=settings.where)
            try:
                try:
                    copier.preflight(chosen, with_functions)
                except redis.RedisError as exc:
                    raise EngineError(f"{describe_error(exc, settings)}; nothing was written") from None
                try:
                    copied = copier.copy(chosen, with_functions)
                except (EngineError, redis.RedisError) as exc:
                    error = describe_error(exc, settings) if isinstance(exc, redis.RedisError) else str(exc)
                    raise EngineError(f"{error.rstrip('.')}. {copier.aftermath()}") from None
            finally:
                copier.close()
        return RestoreResult(
            tables=[f"db{db}" for db in chosen],
            message=summary(copied, settings.where, settings.replace),
            row_counts=restored_counts(copied),
        )

    @staticmethod
    def _scratch_databases(manifest: dict[str, Any]) -> int:
        """Enough databases for the scratch server to load the snapshot (see redis_scratch)."""
        keyspace = (manifest.get("engine_info") or {}).get("keyspace") or {}
        numbers = [int(name[2:]) for name in keyspace if re.fullmatch(r"db\d+", name)]
        return max([MIN_DATABASES, *(n + 1 for n in numbers)])

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        """``redis-check-rdb`` reads the snapshot (structure and checksum) while a scratch
        ``redis-server`` loads it from the same stream; the key count the checker reports must
        equal the number of keys the server holds (exactly: see redis_scratch)."""
        scratch = self._scratch_databases(options.manifest)
        with loaded_snapshot(stream, options.scratch_dir, databases=scratch, check=True) as snapshot:
            report = snapshot.check
            assert report is not None
            sizes = snapshot.keyspace()
            loaded = sum(sizes.values())
            if loaded != report.keys:
                raise EngineError(
                    f"redis-check-rdb read {report.keys} key(s) but redis-server loaded {loaded} from the same snapshot"
                )
            per_db = ", ".join(f"db{db} {count}" for db, count in sorted(sizes.items())) or "no keys"
            return (
                f"RDB version {snapshot.rdb_version}: redis-check-rdb found it sound ({report.keys} key(s), "
                f"{report.expires} with a TTL, {report.already_expired} already expired) and a scratch "
                f"redis-server loaded the same keys ({per_db})"
            )
