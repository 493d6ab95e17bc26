"""Configuration backups: a target's declared configuration files and directories as one tar.

Any target can list ``config_paths`` (``postgresql.conf``, ``my.cnf``, the Backupsite TOML
itself ...); a backup of type ``configuration`` archives them whatever the target's engine. Each
path is stored under its absolute path without the leading ``/`` (``etc/mysql/my.cnf``), so by
hand ``tar -xf FILE -C /`` puts every file back where it was and ``tar -xf FILE -C DIR`` lays the
same tree out under ``DIR``. A listed path that is a symlink is archived as what it points to
(``/etc/mysql/my.cnf`` is often a link into ``/etc/alternatives``); links inside a listed
directory stay links.

A listed path that is missing or unreadable fails the backup: a configuration backup that
silently lacks a file is exactly what nobody notices until the day it is needed.

Restores go to a directory (never straight over ``/etc``): the archive is extracted into a
staging directory beside it and renamed into place only when it was read whole; a directory
that already holds files is kept aside as ``<dir>.before-restore-<timestamp>``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from backups.engines.files.extract import DAMAGED, check_member, read_archive, swap_in

from .base import Connection, Dump, DumpOptions, Engine, EngineError, RestoreOptions, RestoreResult

_BUFFER = 1024 * 1024
KEY = "configuration"


def archive_name(path: str) -> str:
    """The member name of a listed path: absolute, normalised, without the leading slash."""
    return os.path.normpath(path).lstrip("/")


def path_problems(paths: list[Any] | tuple[Any, ...]) -> list[str]:
    """What is wrong with a ``config_paths`` list, one message each (empty: fine)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for raw in paths:
        if not isinstance(raw, str) or not raw.strip():
            problems.append(f"{raw!r} is not a path: give absolute paths as strings")
            continue
        if not os.path.isabs(raw):
            problems.append(f"{raw!r} must be an absolute path")
            continue
        name = archive_name(raw)
        if not name or name == ".":
            problems.append(f"{raw!r}: the filesystem root cannot be a configuration path")
            continue
        for other, original in seen.items():
            if name == other or name.startswith(other + "/") or other.startswith(name + "/"):
                problems.append(f"{raw!r} overlaps {original!r}: list each file or directory once")
        seen[name] = raw
    return problems


class _Writer(threading.Thread):
    def __init__(self, paths: list[str], sink: BinaryIO) -> None:
        super().__init__(name="configuration-archive-writer", daemon=True)
        self.paths, self.sink = paths, sink
        self.error: BaseException | None = None
        self.files = 0
        self.bytes = 0
        self.parents: set[str] = set()

    def run(self) -> None:
        try:
            with tarfile.open(
                fileobj=self.sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BUFFER
            ) as tar:
                for raw in self.paths:
                    self._add_listed(tar, raw)
        except BaseException as exc:  # reported when the dump context exits
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()

    def _add_listed(self, tar: tarfile.TarFile, raw: str) -> None:
        name = archive_name(raw)
        real = os.path.realpath(raw)
        self._add_parents(tar, name)
        if os.path.isdir(real):
            tar.addfile(tar.gettarinfo(real, arcname=name))
            for directory, dirnames, filenames in os.walk(real, onerror=_walk_error):
                dirnames.sort()
                for entry in sorted(dirnames) + sorted(filenames):
                    path = os.path.join(directory, entry)
                    self._add(tar, path, f"{name}/{os.path.relpath(path, real)}")
        else:
            self._add(tar, real, name, listed=raw)

    def _add_parents(self, tar: tarfile.TarFile, name: str) -> None:
        """Directory entries for the parents (``etc``, ``etc/mysql``) so extraction keeps their modes."""
        parts = PurePosixPath(name).parts[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in self.parents:
                continue
            self.parents.add(parent)
            with contextlib.suppress(OSError):
                tar.addfile(tar.gettarinfo("/" + parent, arcname=parent))

    def _add(self, tar: tarfile.TarFile, path: str, arcname: str, listed: str = "") -> None:
        try:
            info = tar.gettarinfo(path, arcname=arcname)
        except FileNotFoundError:
            if listed:
                raise EngineError(
                    f"configuration path {listed} does not exist; fix the target's config_paths"
                ) from None
            return  # vanished while the directory was read: not part of this snapshot
        if info.islnk():
            info.type, info.linkname, info.size = tarfile.REGTYPE, "", os.stat(path).st_size
        if info.isreg():
            try:
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            except PermissionError:
                raise EngineError(f"cannot read configuration file {path}: permission denied") from None
            self.files += 1
            self.bytes += info.size
        elif info.isdir() or info.issym():
            tar.addfile(info)
        elif listed:
            raise EngineError(f"configuration path {listed} is not a file or a directory")


def _walk_error(exc: OSError) -> None:
    raise EngineError(f"cannot list {exc.filename}: {exc.strerror}")


class ConfigurationEngine(Engine):
    """Archives ``Connection.paths`` (the target's ``config_paths``); restores into a directory."""

    key = KEY
    label = "Configuration files"
    file_extension = ".config.tar"
    content_type = "application/x-tar"
    supported_types = ("configuration",)

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        if not connection.paths:
            return [
                ("config_paths", "required for configuration backups: list absolute file or directory paths")
            ]
        return [("config_paths", message) for message in path_problems(connection.paths)]

    def probe(self, connection: Connection) -> None:
        for raw in connection.paths:
            if not os.path.lexists(raw):
                raise EngineError(f"configuration path {raw} does not exist; fix the target's config_paths")
            if not os.access(raw, os.R_OK):
                raise EngineError(f"configuration path {raw} is not readable by this user")

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        self.probe(connection)
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        writer = _Writer(list(connection.paths), os.fdopen(write_fd, "wb", buffering=0))
        writer.start()
        info: dict[str, Any] = {"config_paths": list(connection.paths)}
        try:
            yield Dump(stream=reader, info=info)
        finally:
            reader.close()
            writer.join()
        if writer.error is not None:
            if isinstance(writer.error, EngineError):
                raise writer.error
            raise EngineError(f"archiving the configuration files failed: {writer.error}")
        info.update(files=writer.files, bytes=writer.bytes)

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        raise EngineError("configuration backups are restored into a directory: use --to-dir DIR")

    def restore_to_directory(self, directory: Path, stream: BinaryIO) -> RestoreResult:
        if directory.exists() and not directory.is_dir():
            raise EngineError(f"{directory} exists and is not a directory")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        staging = directory.parent / f".{directory.name}.restore-{stamp}-{os.getpid()}"
        restored: list[str] = []
        try:
            staging.mkdir(parents=True)
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_BUFFER) as tar:
                for member in tar:
                    check_member(member)
                    tar.extract(member, staging, filter="tar")
                    if member.isreg():
                        restored.append("/" + member.name)
        except tarfile.TarError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise EngineError(f"{DAMAGED}: {exc}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        aside = swap_in(staging, directory, stamp)
        message = f"restored {len(restored)} configuration file(s) into {directory}"
        if aside:
            message += f"; previous contents kept in {aside}"
        return RestoreResult(files=restored, message=message)

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        files, total = read_archive(stream)
        if not files:
            raise EngineError("the configuration archive holds no file")
        return f"archive lists {files} configuration file(s), {total} bytes read back"
