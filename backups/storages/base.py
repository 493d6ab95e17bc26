"""The storage contract: atomic, streaming writers, streaming readers, listings, sweeps.

Every storage kind is one class in its own module, registered in ``backups.storages``. It gets
plain values (options with secrets already resolved) and raises :class:`StorageError` with a
message that names the storage and the object, never a secret. A kind imports
:mod:`backups.plugins` (its ``Option`` spec), this module, the standard library and its client
library.

Atomicity: bytes written through :meth:`BackupStorage.open_writer` are invisible under the
final name until :meth:`ObjectWriter.commit` (a temporary name renamed, a multipart upload
completed, a block list committed); :meth:`ObjectWriter.abort` removes everything written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO, ClassVar

from backups.plugins import Option, validate_options

PARTIAL_MARKER = ".partial-"
PARTIAL_TOKEN_LENGTH = 12  # hex digits of a writer's token: ``.NAME.partial-0123456789ab``
PROBE_PREFIX = ".backupsite-write-test-"  # check_writable's short-lived test objects
PROBE_TOKEN_LENGTH = 8
# Exactly the names the writers create, so a sweep never touches a look-alike someone else owns
# (an SFTP storage without a root or prefix walks the login's whole home).
_PARTIAL = re.compile(rf"\..+{re.escape(PARTIAL_MARKER)}[0-9a-f]{{{PARTIAL_TOKEN_LENGTH}}}")
_PROBE = re.compile(rf"{re.escape(PROBE_PREFIX)}[0-9a-f]{{{PROBE_TOKEN_LENGTH}}}")
STALE_AFTER = timedelta(days=1)  # leftovers of a dead writer older than this are swept
READ_CHUNK = 1024 * 1024


class StorageError(Exception):
    """A storage operation failed. The message names the storage and path, never a secret."""


@dataclass(frozen=True)
class StoredObject:
    path: str
    size: int
    etag: str = ""
    version: str = ""
    modified: datetime | None = None


def partial_name(final_name: str, token: str) -> str:
    """The hidden temporary name of an object being written (same directory, so a rename works);
    ``token`` is :data:`PARTIAL_TOKEN_LENGTH` lower-case hex digits."""
    return f".{final_name}{PARTIAL_MARKER}{token}"


def new_token() -> str:
    """A fresh writer token for :func:`partial_name`."""
    return uuid.uuid4().hex[:PARTIAL_TOKEN_LENGTH]


def is_partial(name: str) -> bool:
    """Whether a file name (not a path) is exactly one a writer creates (:func:`partial_name`)."""
    return _PARTIAL.fullmatch(name) is not None


def is_partial_of(name: str, final_name: str) -> bool:
    """Whether ``name`` is a writer's temporary for the object named ``final_name``."""
    return is_partial(name) and name[:-PARTIAL_TOKEN_LENGTH] == f".{final_name}{PARTIAL_MARKER}"


def probe_name() -> str:
    """A fresh name for the test object ``check_writable`` writes and removes."""
    return f"{PROBE_PREFIX}{uuid.uuid4().hex[:PROBE_TOKEN_LENGTH]}"


def is_probe(name: str) -> bool:
    """Whether a file name (not a path) is exactly one of ``check_writable``'s test objects."""
    return _PROBE.fullmatch(name) is not None


def prefix_problem(prefix: str) -> str:
    """Why ``prefix`` cannot be a storage's prefix (a folder inside it), or "". One rule for the
    admin, the TOML file and building a storage: a prefix never leads out of the storage."""
    if any(char in prefix for char in "\0\r\n"):
        return "must not contain a NUL or line break"
    if ".." in prefix.split("/"):
        return "must not contain '..': write a folder inside the storage, e.g. 'backups/production'"
    return ""


class ObjectReader(io.RawIOBase):
    """Base of the kinds' streaming readers: a kind implements ``read(size)`` (or ``readinto``);
    ``readinto`` on top of ``read`` lets buffered wrappers use it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class ObjectWriter(ABC):
    # True when ``write`` hands the bytes off without waiting on a network: to the page cache
    # (local disk, fsynced at commit) or to threads of the writer's own (S3's concurrent parts,
    # bounded). The run then writes to it from the streaming thread; every other writer gets a
    # thread of its own behind a bounded queue, so a slow link does not stall compression.
    returns_quickly: bool = False

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> StoredObject:
        """Make the object visible under its final name; refuse to overwrite an existing one."""

    @abstractmethod
    def abort(self) -> None:
        """Remove everything written so far. Safe to call more than once, and after commit fails."""


class BackupStorage(ABC):
    kind: ClassVar[str]
    OPTIONS: ClassVar[dict[str, Option]] = {}
    can_sign_urls: ClassVar[bool] = False

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        problems = [*self.validate_options(options)]
        if prefix_problem(prefix):  # a row saved before the rule existed: refused, never followed
            problems.append(("prefix", prefix_problem(prefix)))
        if problems:
            raise StorageError(f"{name}: " + "; ".join(f"{key}: {message}" for key, message in problems))
        self.name = name
        self.options = options
        self.prefix = prefix.strip("/")

    # -- options -------------------------------------------------------------------------------

    @classmethod
    def validate_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """(option, message) for every problem; empty when the options are usable."""
        # A list where a string belongs is reported once, as the wrong type (not also as missing).
        problems = validate_options(options, cls.OPTIONS, family=f"{cls.kind} storage", empty=(None, ""))
        return problems or cls.check_options(options)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """Kind-specific checks across options (their types are already right)."""
        return []

    def opt(self, key: str, default: Any = None) -> Any:
        value = self.options.get(key)
        return default if value in (None, "") else value

    # -- paths ---------------------------------------------------------------------------------

    def key(self, path: str) -> str:
        """The object key for a catalog path, with the storage prefix; rejects escaping paths."""
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts or path.endswith("/"):
            raise StorageError(f"{self.name}: invalid object path {path!r}")
        return str(PurePosixPath(self.prefix) / pure) if self.prefix else str(pure)

    def relative(self, key: str) -> str:
        """The catalog path of an object key (the inverse of :meth:`key`)."""
        if not self.prefix:
            return key
        return key[len(self.prefix) + 1 :] if key.startswith(self.prefix + "/") else key

    # -- the contract ----------------------------------------------------------------------------

    @abstractmethod
    def open_writer(self, path: str) -> ObjectWriter: ...

    @abstractmethod
    def open_reader(self, path: str) -> BinaryIO:
        """A stream of the object's bytes; never the whole object in memory."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def size(self, path: str) -> int: ...

    @abstractmethod
    def delete(self, path: str) -> None:
        """Delete an object; a missing object is not an error."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise :class:`StorageError` with a plain message unless objects can be written now."""

    @abstractmethod
    def sweep_partials(self, path: str) -> int:
        """Remove temporary objects a dead writer left for ``path``; returns how many."""

    @abstractmethod
    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        """Remove every writer leftover under the prefix older than ``older_than``."""

    @abstractmethod
    def list_objects(self) -> Iterator[StoredObject]:
        """Every complete object under the prefix (paths relative to it), never a temporary."""

    @abstractmethod
    def location(self, path: str) -> str:
        """Where a human finds the object (a filesystem path or a URL without credentials)."""

    def signed_url(self, path: str, expires_seconds: int) -> str:
        """A URL that downloads the object without credentials for ``expires_seconds``."""
        raise StorageError(f"{self.name}: a {self.kind} storage cannot sign download URLs")

    def close(self) -> None:  # noqa: B027  (most kinds hold no connection)
        """Release connections. The storage may be used again afterwards (it reconnects)."""

    def __enter__(self) -> BackupStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers built on the contract -----------------------------------------------------------

    def put_bytes(self, path: str, data: bytes) -> StoredObject:
        writer = self.open_writer(path)
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def read_bytes(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
        """A small object (a manifest) whole; refuses one larger than ``limit``."""
        with contextlib.closing(self.open_reader(path)) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StorageError(f"{self.name}: {path} is larger than {limit} bytes")
        return data

    def digest(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of the stored object, read back as a stream."""
        sha = hashlib.sha256()
        size = 0
        with contextlib.closing(self.open_reader(path)) as handle:
            while chunk := handle.read(READ_CHUNK):
                sha.update(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    def confirm(self, path: str, size: int, sha256: str) -> None:
        """Prove the stored object is exactly what was written: its size, then its bytes."""
        actual = self.size(path)
        if actual != size:
            raise StorageError(f"{self.name}: stored size {actual} differs from the {size} bytes written")
        read, digest = self.digest(path)
        if read != size or digest != sha256:
            raise StorageError(f"{self.name}: sha256 of the stored copy differs from the bytes written")
