"""Files: a tar (POSIX pax) stream of directory trees with include/exclude globs, full or
incremental.

Each configured root becomes one top-level directory in the archive, named after the root's
last component, so ``tar -xf`` by hand gives the familiar layout. The archive is written by a
thread into an OS pipe that the pipeline reads, so nothing is buffered beyond the pipe.

Every dump records in ``Dump.info`` an ``index`` of the whole tree (format, change detection and
memory bounds: :mod:`.files_archive`), a random ``snapshot`` id, and for an ``incremental`` the
``previous_snapshot`` it was built on and the paths ``deleted`` since. An incremental archive is
an ordinary tar holding only the new and changed entries.

Restore extracts into staging directories beside each destination (a chain: the full backup,
then each incremental over it, see :mod:`.files_extract`), checks the result against the last
backup's index, and only then renames the staging directories into place; a destination that
already holds files is kept aside as ``<dir>.before-restore-<timestamp>``, never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from backups.engines.base import (
    ChainLink,
    Connection,
    Dump,
    DumpOptions,
    Engine,
    EngineError,
    RestoreOptions,
    RestoreResult,
)
from backups.engines.files.archive import ArchiveWriter, deleted_paths
from backups.engines.files.extract import StagingTree, read_archive, swap_in


class FilesEngine(Engine):
    key = "files"
    label = "Files"
    file_extension = ".tar"
    content_type = "application/x-tar"
    supported_types = ("full", "files", "incremental")

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        if not connection.paths:
            return [("paths", "required: a list of absolute directory paths")]
        problems: list[tuple[str, str]] = []
        names: dict[str, str] = {}
        for raw in connection.paths:
            problem = path_problem(raw)
            if problem:
                problems.append(("paths", problem))
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
        info: dict[str, Any] = {
            "roots": {root.name: str(root) for root in roots},
            "snapshot": uuid.uuid4().hex,
        }
        previous: dict[str, str] = {}
        if options.backup_type == "incremental":
            base = self._base(options.previous, info["roots"])
            previous, info["previous_snapshot"] = base["index"], base["snapshot"]
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        writer = ArchiveWriter(
            roots,
            os.fdopen(write_fd, "wb", buffering=0),
            list(connection.options.get("include", [])),
            list(connection.options.get("exclude", [])),
            previous,
        )
        writer.start()
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
        if options.backup_type == "incremental":
            info.update(
                changed=writer.changed,
                touched=writer.touched,
                deleted=deleted_paths(previous, writer.index),
                tree_files=writer.tree_files,
                tree_bytes=writer.tree_bytes,
                changed_while_reading=writer.changed_while_reading[:100],
            )
        info["index"] = writer.index

    @staticmethod
    def _base(previous: dict[str, Any] | None, roots: dict[str, str]) -> dict[str, Any]:
        """The engine info of the link an incremental builds on, after checking it can be."""
        if previous is None:
            raise EngineError(
                "an incremental backup needs the previous backup of its chain; take a full backup"
            )
        index = previous.get("index")
        if not isinstance(index, dict) or not isinstance(previous.get("snapshot"), str):
            raise EngineError(
                "the previous backup has no file index (made before incremental backups existed, "
                "or its manifest lost it); take a full backup to start a chain"
            )
        if previous.get("roots") != roots:
            before = ", ".join(sorted(map(str, (previous.get("roots") or {}).values()))) or "none"
            raise EngineError(
                f"the target's paths changed since the previous backup (then: {before}; now: "
                f"{', '.join(sorted(roots.values()))}); take a full backup to start a new chain"
            )
        return previous

    # -- restore -------------------------------------------------------------------------------

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
            problem = path_problem(raw)
            if problem:
                raise EngineError(f"restore destination {problem}")
            if Path(raw).exists() and not Path(raw).is_dir():
                raise EngineError(f"restore destination {raw} exists and is not a directory")

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        def feed(consume: Callable[[BinaryIO], str]) -> str:
            return consume(stream)

        return self.restore_chain(connection, [ChainLink(manifest=options.manifest, feed=feed)], options)

    def restore_chain(
        self, connection: Connection, links: Sequence[ChainLink], options: RestoreOptions
    ) -> RestoreResult:
        self.check_restore_destination(connection)
        infos = self._chain_infos(links)
        destinations = self._destinations(list(infos[-1]["roots"]), connection.paths)
        for destination in destinations.values():
            if destination.exists() and not destination.is_dir():
                raise EngineError(f"restore destination {destination} exists and is not a directory")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        staging = {
            name: dest.parent / f".{dest.name}.restore-{stamp}-{os.getpid()}"
            for name, dest in destinations.items()
        }
        tree = StagingTree(staging)
        try:
            for path in staging.values():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
            for number, (link, info) in enumerate(zip(links, infos, strict=True), start=1):
                try:
                    tree.delete(info.get("deleted", []))
                    link.feed(tree.extract)
                except EngineError as exc:
                    if len(links) == 1:
                        raise
                    raise EngineError(f"{_describe(link, number, len(links))}: {exc}") from None
            tree.finish()
            index = infos[-1].get("index")
            restored = tree.check(index) if index is not None else tree.regular_files()
        except OSError as exc:
            self._discard(staging.values())
            raise EngineError(
                f"restoring into the staging directory failed: {_describe_os_error(exc)}; "
                "the destination was not changed"
            ) from None
        except BaseException:
            self._discard(staging.values())
            raise
        try:
            kept_aside = [swap_in(staging[name], dest, stamp) for name, dest in destinations.items()]
        except OSError as exc:
            self._discard(path for path in staging.values() if path.exists())
            raise EngineError(
                f"cannot move the restored files into place: {_describe_os_error(exc)}"
            ) from None
        message = f"restored {len(restored)} file(s) into {', '.join(str(d) for d in destinations.values())}"
        if len(links) > 1:
            message += f" from a chain of {len(links)} backups"
        if index is not None:
            message += ", checked against the backup's file index"
        aside = [str(path) for path in kept_aside if path]
        if aside:
            message += f"; previous contents kept in {', '.join(aside)}"
        return RestoreResult(files=restored, message=message)

    @staticmethod
    def _chain_infos(links: Sequence[ChainLink]) -> list[dict[str, Any]]:
        """Each link's engine info, after checking the links form one chain: a full backup first,
        then incrementals each built on the one before, all of the same directories."""
        if not links:
            raise EngineError("nothing to restore: the chain has no backup")
        infos = [link.manifest.get("engine_info") or {} for link in links]
        roots = infos[-1].get("roots")
        if not roots:
            raise EngineError("the backup manifest does not list the archived directories")
        for number, (link, info) in enumerate(zip(links, infos, strict=True), start=1):
            where = _describe(link, number, len(links))
            if set(info.get("roots") or {}) != set(roots):
                raise EngineError(
                    f"{where} holds other directories than the last one; a chain cannot mix them"
                )
            built_on = info.get("previous_snapshot")
            if number == 1 and built_on:
                raise EngineError(f"{where} is an incremental backup; a chain starts with a full backup")
            if number > 1 and (not built_on or built_on != infos[number - 2].get("snapshot")):
                raise EngineError(
                    f"{where} was not built on the backup before it in the chain: a link is missing "
                    "or out of order"
                )
        return infos

    @staticmethod
    def _discard(paths: Any) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        files, total = read_archive(stream)
        return f"archive lists {files} file(s), {total} bytes read back"


def path_problem(raw: str) -> str | None:
    """Why ``raw`` cannot be one of the ``paths`` (a directory backed up or restored into), or
    None. Each path's last part names its directory in the archive, and restores refuse ``..``,
    so a path with a ``..`` part (``/srv/data/..``) would make backups no restore accepts."""
    if not os.path.isabs(raw):
        return f"{raw!r} must be an absolute path"
    if ".." in PurePosixPath(raw).parts:
        return (
            f"{raw!r} has a '..' part; write the directory it means without it "
            f"(e.g. {os.path.normpath(raw)!r})"
        )
    return None


def _describe_os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _describe(link: ChainLink, number: int, count: int) -> str:
    name = link.manifest.get("file")
    return f"backup {number} of {count} in the chain" + (f" ({name})" if name else "")
