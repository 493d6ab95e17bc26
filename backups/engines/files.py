"""Files: a tar (POSIX pax) stream of directory trees with include/exclude globs.

Each configured root becomes one top-level directory in the archive, named after the root's
last component, so ``tar -xf`` by hand gives the familiar layout. The archive is written by a
thread into an OS pipe that the pipeline reads, so nothing is buffered beyond the pipe.

Restore extracts into staging directories beside each destination and only renames them into
place when the whole archive has been read without error; a destination that already holds
files is kept aside as ``<dir>.before-restore-<timestamp>``, never overwritten.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .base import Connection, Dump, DumpOptions, Engine, EngineError, RestoreOptions, RestoreResult

_BUFFER = 1024 * 1024


def _matches(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


class _ArchiveWriter(threading.Thread):
    """Writes the tar stream of ``roots`` into ``sink``; records the first error."""

    def __init__(self, roots: list[Path], sink: BinaryIO, include: list[str], exclude: list[str]) -> None:
        super().__init__(name="files-archive-writer", daemon=True)
        self.roots, self.sink, self.include, self.exclude = roots, sink, include, exclude
        self.error: BaseException | None = None
        self.files = 0
        self.bytes = 0
        self.skipped: list[str] = []

    def run(self) -> None:
        try:
            with tarfile.open(
                fileobj=self.sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BUFFER
            ) as tar:
                tar.copybufsize = _BUFFER  # type: ignore[attr-defined]  # (not in typeshed)
                for root in self.roots:
                    self._add_tree(tar, root)
        except BaseException as exc:  # reported to the consumer when the dump context exits
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()

    def _add_tree(self, tar: tarfile.TarFile, root: Path) -> None:
        prefix = root.name
        # A symlinked root is archived as the directory it points to (os.walk follows it too).
        tar.addfile(tar.gettarinfo(os.path.realpath(root), arcname=prefix))
        for directory, dirnames, filenames in os.walk(root, onerror=self._walk_error):
            dirnames.sort()
            base = Path(directory)
            for name in sorted(dirnames) + sorted(filenames):
                path = base / name
                relative = path.relative_to(root).as_posix()
                if self.exclude and _matches(relative, self.exclude):
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
                self._add_entry(tar, path, f"{prefix}/{relative}", relative, is_dir=name in dirnames)

    def _add_entry(self, tar: tarfile.TarFile, path: Path, arcname: str, relative: str, is_dir: bool) -> None:
        if not is_dir and self.include and not _matches(relative, self.include):
            return
        try:
            info = tar.gettarinfo(str(path), arcname=arcname)
        except FileNotFoundError:
            return  # vanished between listing and reading: it is not part of this snapshot
        if info.islnk():  # store hard links as plain files: each archive member stands alone
            info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
        if info.isreg():
            try:
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            except PermissionError:
                raise EngineError(f"cannot read {path}: permission denied") from None
            self.files += 1
            self.bytes += info.size
        elif info.isdir() or info.issym():
            tar.addfile(info)
        else:
            self.skipped.append(arcname)  # sockets, fifos, devices are not data

    @staticmethod
    def _walk_error(exc: OSError) -> None:
        raise EngineError(f"cannot list {exc.filename}: {exc.strerror}")


class FilesEngine(Engine):
    key = "files"
    label = "Files"
    file_extension = ".tar"
    content_type = "application/x-tar"
    supported_types = ("full", "files")

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        if not connection.paths:
            return [("paths", "required: a list of absolute directory paths")]
        problems: list[tuple[str, str]] = []
        names: dict[str, str] = {}
        for raw in connection.paths:
            if not os.path.isabs(raw):
                problems.append(("paths", f"{raw!r} must be an absolute path"))
                continue
            name = Path(raw).name
            if not name:
                problems.append(("paths", f"{raw!r}: the filesystem root cannot be backed up as a whole"))
            elif name in names:
                problems.append(("paths", f"{raw!r} and {names[name]!r} share the name {name!r}"))
            names[name] = raw
        for key in ("include", "exclude"):
            value = connection.options.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                problems.append((f"options.{key}", "must be a list of glob patterns"))
        return problems

    def probe(self, connection: Connection) -> None:
        for raw in connection.paths:
            path = Path(raw)
            if not path.exists():
                raise EngineError(f"path {path} does not exist")
            if not path.is_dir():
                raise EngineError(f"path {path} is not a directory; list directories to back up")
            if not os.access(path, os.R_OK | os.X_OK):
                raise EngineError(f"path {path} is not readable by this user")

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        self.probe(connection)
        roots = [Path(raw) for raw in connection.paths]
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        writer = _ArchiveWriter(
            roots,
            os.fdopen(write_fd, "wb", buffering=0),
            list(connection.options.get("include", [])),
            list(connection.options.get("exclude", [])),
        )
        writer.start()
        info: dict[str, Any] = {"roots": {root.name: str(root) for root in roots}}
        try:
            yield Dump(stream=reader, info=info)
        finally:
            reader.close()  # a writer still blocked on the pipe now fails instead of hanging
            writer.join()
        if writer.error is not None:
            error = writer.error
            if isinstance(error, EngineError):
                raise error
            raise EngineError(f"archiving files failed: {error}")
        info.update(files=writer.files, bytes=writer.bytes, skipped_special=writer.skipped[:100])

    # -- restore -------------------------------------------------------------------------------

    @staticmethod
    def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
        path = PurePosixPath(member.name)
        if member.name.startswith("/") or path.is_absolute():
            raise EngineError(f"refusing archive member with an absolute path: {member.name!r}")
        if ".." in path.parts:
            raise EngineError(f"refusing archive member that climbs out with '..': {member.name!r}")
        if not (member.isreg() or member.isdir() or member.issym()):
            raise EngineError(f"refusing special archive member (device, fifo or link): {member.name!r}")
        return path

    @staticmethod
    def _destinations(roots: list[str], paths: tuple[str, ...]) -> dict[str, Path]:
        if not paths:
            raise EngineError("the destination target has no paths to restore into")
        if len(paths) == len(roots):
            return {name: Path(dest) for name, dest in zip(roots, paths, strict=True)}
        if len(paths) == 1:
            return {name: Path(paths[0]) / name for name in roots}
        raise EngineError(
            f"the backup holds {len(roots)} directories but the destination lists {len(paths)} paths; "
            "give it one path (each directory goes beneath it) or exactly one per directory"
        )

    def check_restore_destination(self, connection: Connection) -> None:
        if not connection.paths:
            raise EngineError("the destination target has no paths to restore into")
        for raw in connection.paths:
            if Path(raw).exists() and not Path(raw).is_dir():
                raise EngineError(f"restore destination {raw} exists and is not a directory")

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        roots = list(options.manifest.get("engine_info", {}).get("roots", {}))
        if not roots:
            raise EngineError("the backup manifest does not list the archived directories")
        destinations = self._destinations(roots, connection.paths)
        for destination in destinations.values():
            if destination.exists() and not destination.is_dir():
                raise EngineError(f"restore destination {destination} exists and is not a directory")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        staging = {
            name: dest.parent / f".{dest.name}.restore-{stamp}-{os.getpid()}"
            for name, dest in destinations.items()
        }
        restored: list[str] = []
        try:
            for path in staging.values():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_BUFFER) as tar:
                for member in tar:
                    parts = self._check_member(member).parts
                    if parts[0] not in staging:
                        raise EngineError(
                            f"archive member {member.name!r} is outside the archived directories"
                        )
                    if len(parts) == 1:
                        continue  # the root directory itself
                    member.name = "/".join(parts[1:])
                    tar.extract(member, staging[parts[0]], filter="tar")
                    if member.isreg():
                        restored.append("/".join(parts))
        except tarfile.TarError as exc:
            self._discard(staging.values())
            raise EngineError(f"the archive is damaged or not a tar stream: {exc}") from None
        except BaseException:
            self._discard(staging.values())
            raise
        kept_aside = [self._swap_in(staging[name], dest, stamp) for name, dest in destinations.items()]
        message = f"restored {len(restored)} file(s) into {', '.join(str(d) for d in destinations.values())}"
        aside = [str(path) for path in kept_aside if path]
        if aside:
            message += f"; previous contents kept in {', '.join(aside)}"
        return RestoreResult(files=restored, message=message)

    @staticmethod
    def _discard(paths: Any) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _swap_in(staged: Path, destination: Path, stamp: str) -> Path | None:
        aside = None
        if destination.exists():
            if any(destination.iterdir()):
                aside = destination.with_name(f"{destination.name}.before-restore-{stamp}")
                counter = 1
                while os.path.lexists(aside):  # an earlier restore within the same second
                    counter += 1
                    aside = destination.with_name(f"{destination.name}.before-restore-{stamp}-{counter}")
                os.rename(destination, aside)
            else:
                destination.rmdir()
        os.rename(staged, destination)
        return aside

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        files = total = 0
        try:
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_BUFFER) as tar:
                for member in tar:
                    self._check_member(member)
                    if member.isreg():
                        handle = tar.extractfile(member)
                        if handle is not None:
                            while chunk := handle.read(_BUFFER):
                                total += len(chunk)
                        files += 1
        except tarfile.TarError as exc:
            raise EngineError(f"the archive is damaged or not a tar stream: {exc}") from None
        return f"archive lists {files} file(s), {total} bytes read back"
