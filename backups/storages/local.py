"""Local storage: a directory on a local or mounted filesystem.

Writers create a hidden ``.NAME.partial-TOKEN`` file (0600 from the start), fsync it, and link
it to the final name (``link`` fails if the name exists, so nothing is ever overwritten).
Readers open without blocking and refuse anything but a regular file: a FIFO swapped in for a
backup would otherwise hang verify, restore, download and reindex forever.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage

from backups.plugins import Option

from .base import (
    STALE_AFTER,
    BackupStorage,
    ObjectWriter,
    StorageError,
    StoredObject,
    is_partial,
    is_partial_of,
    is_probe,
    new_token,
    partial_name,
    probe_name,
)

FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _file_kind(mode: int) -> str:
    return next((label for test, label in FILE_KINDS if test(mode)), "not a file")


class _LocalWriter(ObjectWriter):
    returns_quickly = True  # into the page cache; the commit fsyncs

    def __init__(self, storage: LocalStorage, final: Path) -> None:
        self.storage, self.final = storage, final
        self.temp = final.with_name(partial_name(final.name, new_token()))
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

    def not_regular(self, full: Path, mode: int) -> StorageError:
        return StorageError(
            f"{self.name}: {full} is {_file_kind(mode)}, not a regular file; a backup is always a "
            "regular file, so something else was put in its place"
        )

    def open_reader(self, path: str) -> BinaryIO:
        full = self.full_path(path)
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer forever; it opens at
        # once instead and fstat (of what was opened, not of the name) refuses it.
        try:
            descriptor = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StorageError(f"{self.name}: {full} does not exist") from None
        except OSError as exc:
            raise self.error("cannot read", full, exc) from None
        try:
            mode = os.fstat(descriptor).st_mode
            if not stat.S_ISREG(mode):
                raise self.not_regular(full, mode)
            os.set_blocking(descriptor, True)
            return os.fdopen(descriptor, "rb")
        except OSError as exc:
            os.close(descriptor)
            raise self.error("cannot read", full, exc) from None
        except BaseException:
            os.close(descriptor)
            raise

    def exists(self, path: str) -> bool:
        return self.full_path(path).is_file()

    def size(self, path: str) -> int:
        full = self.full_path(path)
        try:
            info = full.stat()
        except OSError as exc:
            raise self.error("cannot stat", full, exc) from None
        if not stat.S_ISREG(info.st_mode):
            raise self.not_regular(full, info.st_mode)
        return info.st_size

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
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in os.listdir(final.parent):
                if is_partial_of(name, final.name):
                    (final.parent / name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        """Only names a writer or ``check_writable`` creates, only regular files (not a symlink
        named like one), only under the prefix: anything else there belongs to someone else."""
        base = self.root / self.prefix if self.prefix else self.root
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for directory, _dirs, files in os.walk(base):  # never into symlinked directories
            for name in files:
                if not (is_partial(name) or is_probe(name)):
                    continue
                leftover = Path(directory) / name
                try:
                    info = leftover.lstat()
                    if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                        leftover.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # its writer committed or aborted meanwhile
                except OSError as exc:
                    raise self.error("cannot delete the leftover", leftover, exc) from None
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
