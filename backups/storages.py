"""Backup storages: atomic, streaming put/get/delete/exists over django-storages backends.

A :class:`BackupStorage` is built from a ``Storage`` row's kind, options and prefix by
:func:`build_storage`. Writers never expose a partial object: bytes go to a temporary name and
become visible only on :meth:`ObjectWriter.commit`; :meth:`ObjectWriter.abort` removes them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage

STORAGE_KINDS = ("local", "s3", "sftp", "ftp", "gcs", "azure")
AVAILABLE_KINDS = ("local",)
PARTIAL_MARKER = ".partial-"


class StorageError(Exception):
    """A storage operation failed. The message names the storage and path, never a secret."""


@dataclass(frozen=True)
class StoredObject:
    path: str
    size: int
    etag: str = ""


class ObjectWriter(ABC):
    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> StoredObject:
        """Make the object visible under its final name; refuse to overwrite an existing one."""

    @abstractmethod
    def abort(self) -> None:
        """Remove everything written so far. Safe to call more than once, and after commit fails."""


class BackupStorage(ABC):
    kind: str

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        self.name = name
        self.options = options
        self.prefix = prefix.strip("/")

    def key(self, path: str) -> str:
        """The object key for a catalog path, with the storage prefix; rejects escaping paths."""
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise StorageError(f"{self.name}: invalid object path {path!r}")
        return str(PurePosixPath(self.prefix) / pure) if self.prefix else str(pure)

    @abstractmethod
    def open_writer(self, path: str) -> ObjectWriter: ...

    @abstractmethod
    def open_reader(self, path: str) -> BinaryIO: ...

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
    def location(self, path: str) -> str:
        """Where a human finds the object (a filesystem path or a URL without credentials)."""

    def put_bytes(self, path: str, data: bytes) -> StoredObject:
        writer = self.open_writer(path)
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise


class _LocalWriter(ObjectWriter):
    def __init__(self, storage: LocalStorage, final: Path) -> None:
        self.storage, self.final = storage, final
        self.temp = final.with_name(f".{final.name}{PARTIAL_MARKER}{uuid.uuid4().hex[:12]}")
        self.size = 0
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise storage.error("cannot create", final, exc) from None
        self.handle = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = self.handle.write(view)
                if not written:
                    raise StorageError(f"{self.storage.name}: short write to {self.final}")
                view = view[written:]
                self.size += written
        except OSError as exc:
            raise self.storage.error("write failed for", self.final, exc) from None

    def commit(self) -> StoredObject:
        try:
            os.fsync(self.handle.fileno())
            self.handle.close()
            # link() fails if the name exists: an existing backup is never overwritten.
            os.link(self.temp, self.final)
            os.unlink(self.temp)
            _fsync_dir(self.final.parent)
        except FileExistsError:
            raise StorageError(
                f"{self.storage.name}: {self.final} already exists; not overwriting it"
            ) from None
        except OSError as exc:
            raise self.storage.error("cannot commit", self.final, exc) from None
        return StoredObject(path=str(self.final), size=self.final.stat().st_size)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(BackupStorage):
    """A directory on a local or mounted filesystem (Django's FileSystemStorage underneath)."""

    kind = "local"

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)
        raw = options.get("path")
        if not isinstance(raw, str) or not raw:
            raise StorageError(f"{name}: local storage needs a 'path'")
        self.root = Path(raw)
        self.backend = FileSystemStorage(location=self.root, file_permissions_mode=0o600)

    def error(self, action: str, path: Path, exc: OSError) -> StorageError:
        return StorageError(f"{self.name}: {action} {path}: {exc.strerror or exc}")

    def full_path(self, path: str) -> Path:
        try:
            return Path(self.backend.path(self.key(path)))
        except SuspiciousFileOperation:
            raise StorageError(f"{self.name}: object path {path!r} escapes the storage directory") from None

    def open_writer(self, path: str) -> ObjectWriter:
        return _LocalWriter(self, self.full_path(path))

    def open_reader(self, path: str) -> BinaryIO:
        full = self.full_path(path)
        try:
            return open(full, "rb")
        except FileNotFoundError:
            raise StorageError(f"{self.name}: {full} does not exist") from None
        except OSError as exc:
            raise self.error("cannot read", full, exc) from None

    def exists(self, path: str) -> bool:
        return self.full_path(path).is_file()

    def size(self, path: str) -> int:
        full = self.full_path(path)
        try:
            return full.stat().st_size
        except OSError as exc:
            raise self.error("cannot stat", full, exc) from None

    def delete(self, path: str) -> None:
        full = self.full_path(path)
        try:
            full.unlink(missing_ok=True)
        except OSError as exc:
            raise self.error("cannot delete", full, exc) from None

    def check_writable(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StorageError(f"{self.name}: {root} exists but is not a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.error("cannot create directory", root, exc) from None
        probe = root / f".backupsite-write-test-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"{self.name}: directory {root} is not writable: {exc.strerror}") from None

    def sweep_partials(self, path: str) -> int:
        final = self.full_path(path)
        removed = 0
        for leftover in final.parent.glob(f".{final.name}{PARTIAL_MARKER}*"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def location(self, path: str) -> str:
        return str(self.full_path(path))


_KIND_CLASSES: dict[str, type[BackupStorage]] = {"local": LocalStorage}


def build_storage(name: str, kind: str, options: dict[str, Any], prefix: str = "") -> BackupStorage:
    """Build a storage from plain values (options with secrets already resolved)."""
    if kind not in STORAGE_KINDS:
        raise StorageError(f"{name}: unknown storage kind {kind!r}; use one of {', '.join(STORAGE_KINDS)}")
    if kind not in _KIND_CLASSES:
        raise StorageError(
            f"{name}: storage kind {kind!r} is not available in this version; available: {', '.join(AVAILABLE_KINDS)}"
        )
    return _KIND_CLASSES[kind](name, options, prefix)
