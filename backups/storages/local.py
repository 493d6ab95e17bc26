"""Local storage: a directory on a local or mounted filesystem.

Writers create a hidden ``.NAME.partial-TOKEN`` file (0600 from the start), fsync it, and link
it to the final name (``link`` fails if the name exists, so nothing is ever overwritten).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage

from backups.plugins import Option

from .base import (
    PARTIAL_MARKER,
    STALE_AFTER,
    BackupStorage,
    ObjectWriter,
    StorageError,
    StoredObject,
    is_partial,
    is_probe,
    partial_name,
    probe_name,
)


class _LocalWriter(ObjectWriter):
    def __init__(self, storage: LocalStorage, final: Path) -> None:
        self.storage, self.final = storage, final
        self.temp = final.with_name(partial_name(final.name, uuid.uuid4().hex[:12]))
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
    OPTIONS = {"path": Option(str, "the directory that holds the backups", required=True, path=True)}

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)
        self.root = Path(options["path"])
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
        probe = root / probe_name()
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

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        base = self.root / self.prefix if self.prefix else self.root
        if not base.is_dir():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for leftover in base.rglob(f".*{PARTIAL_MARKER}*"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed

    def list_objects(self) -> Iterator[StoredObject]:
        base = self.root / self.prefix if self.prefix else self.root
        if not base.is_dir():
            return
        for directory, _dirs, files in os.walk(base):
            for name in sorted(files):
                if is_partial(name) or is_probe(name):
                    continue
                full = Path(directory) / name
                try:
                    info = full.stat()
                except FileNotFoundError:
                    continue
                yield StoredObject(
                    path=str(full.relative_to(base)),
                    size=info.st_size,
                    modified=datetime.fromtimestamp(info.st_mtime, tz=UTC),
                )

    def location(self, path: str) -> str:
        return str(self.full_path(path))
