"""Applying files archives to staging directories: a full backup, then each incremental of its
chain, then a check of the result against the last backup's index.

Each archived root has its own staging directory. For each link of a chain, the paths its
manifest lists as deleted are removed first (while every parent is still the real directory the
previous link left, never a symlink that a later member may put in its place), then its members
are extracted over the tree: a member replaces whatever is at its path, a directory member over a
directory only updates its attributes. Regular files are hashed while they are written, so the
final check compares sizes, modes and SHA-256 digests with the index without reading anything
again. Directory modes and times are applied at the very end (as ``extractall`` does), so a
read-only directory still takes the files of later links.

Modes are restored exactly as archived, setuid, setgid, sticky and group/other write bits
included (``tarfile``'s ``tar`` filter would clear them: it is used here only for its refusal of
paths that resolve outside the staging directory). Running as root, owners are restored too, by
user and group name when this host knows the name, else by the archived uid/gid (what ``tar -x``
does as root); as any other user files belong to that user. Refused, failing the whole restore
(the staging directories are discarded, the destination is untouched): absolute paths, ``..``,
members under a symlink (a parent that resolves outside the staging directory), devices, fifos
and hard links.

Memory: one digest per regular file and one header per directory restored, plus a scan of the
staged tree for the check: O(number of entries).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import stat
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath

from backups.engines.base import EngineError
from backups.engines.files.archive import BUFFER, parse_file_entry

DAMAGED = "the archive is damaged or not a tar stream"


def check_member(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path, after refusing absolute paths, ``..`` and anything but files,
    directories and symlinks."""
    path = PurePosixPath(member.name)
    if member.name.startswith("/") or path.is_absolute():
        raise EngineError(f"refusing archive member with an absolute path: {member.name!r}")
    if ".." in path.parts:
        raise EngineError(f"refusing archive member that climbs out with '..': {member.name!r}")
    if not (member.isreg() or member.isdir() or member.issym()):
        raise EngineError(f"refusing special archive member (device, fifo or link): {member.name!r}")
    return path


def read_archive(stream: BinaryIO) -> tuple[int, int]:
    """Read a whole tar stream, checking every member: (regular files, bytes of content)."""
    files = total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=BUFFER) as tar:
            for member in tar:
                check_member(member)
                if member.isreg():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        while chunk := handle.read(BUFFER):
                            total += len(chunk)
                    files += 1
    except tarfile.TarError as exc:
        raise EngineError(f"{DAMAGED}: {exc}") from None
    return files, total


def swap_in(staged: Path, destination: Path, stamp: str) -> Path | None:
    """Rename ``staged`` to ``destination``; a destination holding files is first renamed to
    ``<name>.before-restore-<stamp>`` (returned), never overwritten, and renamed back if the
    staged directory cannot take its place."""
    aside = None
    emptied = False
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
            emptied = True
    try:
        os.rename(staged, destination)
    except OSError:
        if aside is not None:
            os.rename(aside, destination)  # put the old contents back where they were
        elif emptied:
            destination.mkdir()
        raise
    return aside


class _DigestingTarFile(tarfile.TarFile):
    """Writes regular files as ``TarFile`` does, hashing the bytes on the way (``makefile`` is
    one of the methods tarfile's source marks as meant to be replaced in a subclass)."""

    last_digest: str | None = None

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: StrOrBytesPath) -> None:
        if tarinfo.sparse is not None:  # never in our archives; GNU tar -S makes them
            self.last_digest = None
            super().makefile(tarinfo, targetpath)
            return
        source: Any = self.fileobj
        source.seek(tarinfo.offset_data)
        digest = hashlib.sha256()
        remaining = tarinfo.size
        with open(targetpath, "wb") as target:
            while remaining:
                chunk = source.read(min(remaining, BUFFER))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                digest.update(chunk)
                target.write(chunk)
                remaining -= len(chunk)
        self.last_digest = digest.hexdigest()


class StagingTree:
    """The staging directories of one restore (root name -> directory) and what went into them."""

    def __init__(self, staging: Mapping[str, Path]) -> None:
        self.roots = dict(staging)
        self.real_roots = {name: os.path.realpath(path) for name, path in staging.items()}
        self.digests: dict[str, str | None] = {}  # archive path -> SHA-256 of the file written
        self.directories: dict[str, tarfile.TarInfo] = {}  # archive path -> its latest header

    def delete(self, paths: Any) -> None:
        """Remove the paths a link's manifest lists as deleted (missing ones are ignored)."""
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise EngineError("the manifest's engine_info.deleted is not a list of paths")
        for name in paths:
            root, parts = self._locate(name)
            if not parts:
                raise EngineError(f"the manifest lists a whole archived directory as deleted: {name!r}")
            self._clear(name, root, parts, keep_directory=False)
            self.digests.pop(name, None)

    def extract(self, stream: BinaryIO) -> str:
        """Extract one archive over the tree; returns a summary. Raises EngineError."""
        members = 0
        try:
            with _DigestingTarFile.open(fileobj=stream, mode="r|", bufsize=BUFFER) as tar:
                for member in tar:
                    check_member(member)
                    name = member.name
                    root, parts = self._locate(name)
                    if not parts:
                        # The root directory itself: its staging directory stands for it and
                        # takes its mode, owner and time at the end.
                        if member.isdir():
                            self.directories[name] = member
                        continue
                    self._clear(name, root, parts, keep_directory=member.isdir())
                    member.name = "/".join(parts)
                    # The tar filter for its refusals only; the archived mode is kept whole.
                    header = tarfile.tar_filter(member, str(root)).replace(mode=member.mode, deep=False)
                    tar.last_digest = None
                    try:
                        tar.extract(header, root, set_attrs=not header.isdir(), filter="fully_trusted")
                    except OSError as exc:
                        raise EngineError(f"cannot restore {name}: {exc}") from None
                    if header.isreg():
                        self.digests[name] = tar.last_digest
                    elif header.isdir():
                        self.directories[name] = header
                    members += 1
        except tarfile.TarError as exc:
            raise EngineError(f"{DAMAGED}: {exc}") from None
        return f"{members} member(s) extracted"

    def finish(self) -> None:
        """Give directories their archived mode, owner and time, children before parents."""
        for name in sorted(self.directories, reverse=True):
            root, parts = self._locate(name)
            path = root.joinpath(*parts)
            if path.is_dir() and not path.is_symlink():
                _set_attributes(str(path), self.directories[name])

    def scan(self) -> dict[str, tuple[str, object, int]]:
        """Every entry of the staged tree by archive path, with its permission bits:
        ("d", None, mode), ("l", target, mode) or ("f", size, mode)."""
        found: dict[str, tuple[str, object, int]] = {}
        for name, root in self.roots.items():
            found[name] = ("d", None, stat.S_IMODE(os.lstat(root).st_mode))
            pending = [(str(root), name)]
            while pending:
                directory, prefix = pending.pop()
                with os.scandir(directory) as listing:
                    for entry in listing:
                        arcname = f"{prefix}/{entry.name}"
                        st = entry.stat(follow_symlinks=False)
                        mode = stat.S_IMODE(st.st_mode)
                        if stat.S_ISDIR(st.st_mode):
                            found[arcname] = ("d", None, mode)
                            pending.append((entry.path, arcname))
                        elif stat.S_ISLNK(st.st_mode):
                            found[arcname] = ("l", os.readlink(entry.path), mode)
                        else:
                            found[arcname] = ("f", st.st_size, mode)
        return found

    def regular_files(self) -> list[str]:
        return [name for name, (kind, _, _) in self.scan().items() if kind == "f"]

    def check(self, index: Any) -> list[str]:
        """Raise EngineError unless the staged tree is exactly what ``index`` describes (paths,
        types, symlink targets, modes of files and directories, file sizes and SHA-256); returns
        the regular files restored."""
        if not isinstance(index, dict):
            raise EngineError("the manifest's engine_info.index is not a mapping of paths")
        found = self.scan()
        files = [name for name, (kind, _, _) in found.items() if kind == "f"]
        problems: list[str] = []
        for name, entry in index.items():
            actual = found.pop(name, None)
            if actual is None:
                problems.append(f"{name} is missing")
            elif not isinstance(entry, str) or entry[:2] not in ("d ", "l ", "f "):
                problems.append(f"{name} has an unreadable index entry {entry!r}")
            elif actual[0] != entry[0]:
                problems.append(f"{name} is a {_KINDS[actual[0]]}, not a {_KINDS[entry[0]]}")
            elif entry[0] == "l" and actual[1] != entry[2:]:
                problems.append(f"{name} points to {actual[1]!r}, not {entry[2:]!r}")
            elif entry[0] == "d":
                problems.extend(_check_mode(name, actual[2], entry[2:]))
            elif entry[0] == "f":
                problems.extend(self._check_file(name, entry, actual[1], actual[2]))
        problems.extend(f"{name} is not in the backup's index" for name in sorted(found))
        if problems:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise EngineError(
                f"the restored tree does not match the backup's index ({len(problems)} difference(s)): "
                f"{shown}"
            )
        return files

    def _check_file(self, name: str, entry: str, size: object, mode: int) -> list[str]:
        expected = parse_file_entry(entry)
        assert expected is not None
        if size != expected[0]:
            return [f"{name} has {size} bytes, not {expected[0]}"]
        if mode != expected[2]:
            return [f"{name} has mode {mode:04o}, not {expected[2]:04o} as the backup recorded"]
        if name not in self.digests:
            return [f"{name} was not restored from any archive of the chain"]
        digest = self.digests[name]
        if digest is not None and digest != expected[3]:
            return [f"{name} has other content than the backup recorded (SHA-256 differs)"]
        return []

    def _locate(self, name: str) -> tuple[Path, tuple[str, ...]]:
        path = PurePosixPath(name)
        if name.startswith("/") or path.is_absolute() or ".." in path.parts or not path.parts:
            raise EngineError(f"refusing a path that is absolute, empty or climbs out with '..': {name!r}")
        if path.parts[0] not in self.roots:
            raise EngineError(f"archive member {name!r} is outside the archived directories")
        return self.roots[path.parts[0]], path.parts[1:]

    def _clear(self, name: str, root: Path, parts: Iterable[str], *, keep_directory: bool) -> None:
        """Make way for ``name``: remove what is at its path (a directory stays if a directory
        comes), after checking that its parent resolves inside the staging directory."""
        target = root.joinpath(*parts)
        parent = os.path.realpath(target.parent)
        real_root = self.real_roots[PurePosixPath(name).parts[0]]
        if os.path.commonpath([parent, real_root]) != real_root:
            raise EngineError(f"archive member {name!r} would be written outside the destination")
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            if not keep_directory:
                shutil.rmtree(target)
        else:
            os.unlink(target)


_KINDS = {"d": "directory", "l": "symlink", "f": "regular file"}


def _check_mode(name: str, mode: int, recorded: str) -> list[str]:
    """A directory's mode against its index entry's (``"d <octal>"``)."""
    try:
        expected = int(recorded, 8)
    except ValueError:
        return [f"{name} has an unreadable mode {recorded!r} in the index"]
    return (
        [] if mode == expected else [f"{name} has mode {mode:04o}, not {expected:04o} as the backup recorded"]
    )


def _set_attributes(path: str, header: tarfile.TarInfo) -> None:
    """What ``TarFile`` does to a directory it extracts, applied late."""
    if os.geteuid() == 0:
        uid, gid = header.uid, header.gid
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(header.uname).pw_uid if header.uname else uid
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(header.gname).gr_gid if header.gname else gid
        os.chown(path, uid, gid)
    os.chmod(path, header.mode)
    os.utime(path, (header.mtime, header.mtime))
