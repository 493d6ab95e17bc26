"""The engine contract: how Backupsite talks to one kind of database or file tree.

An engine gets plain values (a :class:`Connection` with secrets already resolved, option
dataclasses, byte streams) and returns plain values or raises :class:`EngineError`. It never
touches models, services or tasks, so it can be tested and reused on its own: an engine imports
:mod:`backups.plugins`, the engines' own modules, the standard library and its client library.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar


class EngineError(Exception):
    """A dump, restore or check failed. The message is meant for a human and holds no secret."""


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """What every server engine's validated settings begin with: where the server is and who
    logs in. Each engine's ``Settings`` adds its own fields (built with :func:`login_fields`)."""

    host: str
    port: int
    user: str
    password: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def refuse_problems(problems: list[tuple[str, str]]) -> None:
    """Raise :class:`EngineError` listing ``problems`` (``field: message; ...``), if there are any."""
    if problems:
        raise EngineError("; ".join(f"{field}: {message}" for field, message in problems))


def login_fields(connection: Connection, default_port: int) -> dict[str, Any]:
    """:class:`ServerSettings`' fields from ``connection``, with the engine's default port."""
    return {
        "host": connection.host,
        "port": connection.port or default_port,
        "user": connection.user,
        "password": connection.password,
    }


@dataclass(frozen=True)
class Connection:
    """Everything an engine needs to reach a source, with the password already resolved."""

    name: str
    engine: str
    host: str = ""
    port: int | None = None
    database: str = ""
    user: str = ""
    password: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    include_tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class DumpOptions:
    backup_type: str = "full"
    #: What the pipeline does to the stream; engines that can compress turn theirs off unless "none".
    compression: str = "gzip"
    scratch_dir: Path = Path("/tmp")  # noqa: S108  (overridden by services with BACKUPSITE_TMP)
    #: For an ``incremental`` dump: the ``engine_info`` (from its manifest) of the backup this one
    #: builds on, the previous link of the chain. None for every other type.
    previous: dict[str, Any] | None = None


@dataclass(frozen=True)
class RestoreOptions:
    scratch_dir: Path = Path("/tmp")  # noqa: S108
    manifest: dict[str, Any] = field(default_factory=dict)
    #: Where the restore is, as a short sentence ("pg_restore: data for 37 of 200 tables
    #: loaded"), for a restore that runs long after the last byte of the backup was read. Engines
    #: call it only from the thread that called ``restore`` (the caller may write a database row
    #: there), as often as they like: the caller throttles. None: nobody listens.
    on_phase: Callable[[str], None] | None = None


@dataclass
class Dump:
    """A dump in progress: the byte stream to read, and facts for the manifest.

    ``info`` may gain entries while or after the stream is read (e.g. a file count); read it
    only after the dump context has exited cleanly.
    """

    stream: BinaryIO
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainLink:
    """One backup of an incremental chain, handed to :meth:`Engine.restore_chain` oldest first.

    ``feed(consume)`` streams the link's decompressed, digest-checked bytes into ``consume`` and
    returns what ``consume`` returned; it raises if the stored bytes are damaged.
    """

    manifest: dict[str, Any]
    feed: Callable[[Callable[[BinaryIO], str]], str]


@dataclass
class RestoreResult:
    tables: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    message: str = ""
    #: Row counts the engine took after restoring (to check them), so callers need not count again.
    row_counts: dict[str, int] = field(default_factory=dict)


class Engine:
    """Base class of every engine. Subclasses set ``key`` and implement ``dump``/``restore``."""

    key: ClassVar[str]
    label: ClassVar[str]
    binaries: ClassVar[tuple[str, ...]] = ()
    file_extension: ClassVar[str] = ".dump"
    content_type: ClassVar[str] = "application/octet-stream"
    #: Backup types the engine makes itself ("configuration" is made for every engine by
    #: ``backups.engines.configuration`` from the target's ``config_paths``).
    supported_types: ClassVar[tuple[str, ...]] = ("full", "database")
    #: What an operator must type to confirm a restore: the target's "name" or its "database".
    confirm_with: ClassVar[str] = "name"
    #: True for database servers that can host a scratch database (``backup_verify --deep``
    #: with a sandbox target: restore, count rows, compare with the manifest, drop).
    has_scratch_databases: ClassVar[bool] = False

    def missing_binaries(self) -> list[str]:
        return [name for name in self.binaries if shutil.which(name) is None]

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        """Static problems with a target's settings as ``(field, message)`` pairs."""
        return []

    def probe(self, connection: Connection) -> None:
        """Check that the source can be read right now; raise :class:`EngineError` if not."""

    def check_restore_destination(self, connection: Connection) -> None:
        """Raise :class:`EngineError` if ``connection`` cannot receive a restore (checked before
        anything is read or written)."""

    def dump(self, connection: Connection, options: DumpOptions) -> AbstractContextManager[Dump]:
        """A context manager yielding a :class:`Dump`.

        On exit it must release every resource and raise :class:`EngineError` if the dump
        failed in any way, even when the consumer has already read an apparently whole stream.
        """
        raise NotImplementedError

    def restore_refusal(
        self, connection: Connection, manifest: dict[str, Any], scratch_dir: Path
    ) -> str | None:
        """Why a restore into ``connection`` would fail before changing anything, found without
        reading the backup (None when nothing is known against it). ``manifest`` holds the
        catalog's facts of the backup (``raw_size``, ``engine_info``) and ``scratch_dir`` is the
        scratch directory, as :meth:`restore` gets them in its options. Called before the first
        byte is read, after :meth:`check_restore_destination` passed; may raise :class:`EngineError`."""
        return None

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        """Feed an uncompressed dump stream into the destination; fail on the first error."""
        raise NotImplementedError

    def restore_chain(
        self, connection: Connection, links: Sequence[ChainLink], options: RestoreOptions
    ) -> RestoreResult:
        """Restore an incremental chain: ``links[0]`` is the full backup, each later link an
        incremental built on the one before; the destination ends up as of the last link, and is
        left untouched if any link fails. ``options.manifest`` is the last link's manifest."""
        raise EngineError(f"engine {self.key} has no incremental backups to restore")

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        """The cheapest real proof that an uncompressed dump is usable; returns a summary."""
        raise EngineError(f"engine {self.key} has no trial restore")

    def fingerprint(self, connection: Connection) -> str | None:
        """A cheap token that changes whenever the source changes, or None when unknown.

        Called before the dump starts. Must never return the same token for different data:
        when the server cannot tell for sure, return None (the backup then always runs)."""
        return None

    def row_counts(self, connection: Connection) -> dict[str, int]:
        """Exact row count of every table of the database (used after a scratch restore)."""
        raise EngineError(f"engine {self.key} cannot count rows")

    def drop_database(self, connection: Connection) -> None:
        """Drop ``connection.database`` (a scratch database made by a deep verify)."""
        raise EngineError(f"engine {self.key} has no scratch databases")

    def check_assertion(self, connection: Connection, sql: str, timeout_seconds: float) -> str:
        """Run one read-only SQL assertion (a restore drill's custom check) against
        ``connection.database``, stopped after ``timeout_seconds``; return the first column of
        its first row as text ("true"/"false" for booleans, "null" for none). Raises
        :class:`EngineError` when it fails, times out or returns no row."""
        raise EngineError(f"engine {self.key} runs no SQL checks")


def assertion_text(row: Sequence[Any] | None) -> str:
    """An assertion's first row as :meth:`Engine.check_assertion` returns it."""
    if not row:
        raise EngineError("the check returned no row")
    value = row[0]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
