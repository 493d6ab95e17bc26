"""Writing a files archive: walk the roots, archive what a full or incremental backup needs, and
index the whole tree as it is now.

**The index** (``Dump.info["index"]``) maps the archive path of every directory, symlink and
regular file of the backup's tree (``"<root name>/<relative path>"``, the root itself as
``"<root name>"``) to one space-separated string, so each entry stays on one line even in an
indented JSON manifest:

- ``"d <mode>"``: a directory, its permission bits in octal;
- ``"l <target>"``: a symlink and the path it holds (everything after ``"l "``, spaces included);
- ``"f <size> <mtime_ns> <mode> <sha256>"``: a regular file, its size in bytes, its modification
  time in nanoseconds, its permission bits in octal and the SHA-256 (hex) of the bytes archived.

A full backup archives everything; each file is hashed while it streams into the tar (one read).

**An incremental backup** archives only what is new or changed against the previous link's index:
a directory or symlink whose entry differs, and a regular file unless it is unchanged. A file whose
size, mtime and mode all equal the previous entry is trusted unchanged and not even opened (the
quick check of rsync and restic): a program that rewrites a file in place keeping its size and
then sets its mtime back is not seen, until the next full backup. A file with the same size and
mode but another mtime is read and hashed first; when the hash equals the previous one (only
touched) it is not archived and the index takes the new mtime. Otherwise it is read a second time
into the tar (a tar header needs the size up front, so the first read cannot be the archive's).
If the hash of that second read differs from the first, the file changed between the reads: the
archive keeps the second read, the index describes exactly that, and the path is reported in
``changed_while_reading`` (a later write moves the mtime past the one recorded, so the next
incremental reads it again). The mtime recorded is always the one seen before reading.

**Memory**: the index is held in memory, and during an incremental the previous link's index
too: O(number of entries), roughly 200 bytes each. File contents are only ever streamed.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import grp
import hashlib
import os
import pwd
import stat
import tarfile
import threading
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import BinaryIO

from backups.engines.base import EngineError

#: Chunk and tar stream buffer size. tarfile's stream copies its buffer on every write, so with
#: many small files 1 MiB is twice as slow as 256 KiB; big files stream as fast either way.
BUFFER = 256 * 1024


def matches(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def file_entry(size: int, mtime_ns: int, mode: int, sha256: str) -> str:
    return f"f {size} {mtime_ns} {mode:o} {sha256}"


def parse_file_entry(entry: str | None) -> tuple[int, int, int, str] | None:
    """``(size, mtime_ns, mode, sha256)`` of a file entry; None for anything else."""
    if not entry or not entry.startswith("f "):
        return None
    _, size, mtime_ns, mode, sha256 = entry.split(" ")
    return int(size), int(mtime_ns), int(mode, 8), sha256


def deleted_paths(previous: Mapping[str, str], index: Mapping[str, str]) -> list[str]:
    """Paths of ``previous`` gone from ``index``; a deleted directory stands for all beneath it."""
    gone = {path for path in previous if path not in index}
    return sorted(path for path in gone if path.rpartition("/")[0] not in gone)


class _HashingReader:
    """What ``tarfile`` reads a file through: it hashes exactly the bytes that are archived."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        return chunk


@cache
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@cache
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _header(arcname: str, st: os.stat_result, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """The tar header of what ``st`` describes (what ``TarFile.gettarinfo`` makes, from a stat
    already taken, so the header and the index describe one and the same moment)."""
    info = tarfile.TarInfo(arcname)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = _user_name(st.st_uid), _group_name(st.st_gid)
    info.mtime = st.st_mtime
    info.linkname = linkname
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    return info


class ArchiveWriter(threading.Thread):
    """Writes the tar stream of ``roots`` into ``sink`` and indexes the tree; records the first
    error. ``previous`` is the index of the link an incremental builds on ({} for a full backup)."""

    def __init__(
        self,
        roots: list[Path],
        sink: BinaryIO,
        include: list[str],
        exclude: list[str],
        previous: Mapping[str, str],
    ) -> None:
        super().__init__(name="files-archive-writer", daemon=True)
        self.roots, self.sink, self.include, self.exclude = roots, sink, include, exclude
        self.previous = previous
        self.error: BaseException | None = None
        self.index: dict[str, str] = {}
        self.files = self.bytes = 0  # regular files archived, and their bytes
        self.tree_files = self.tree_bytes = 0  # regular files in the tree, archived or not
        self.changed = 0  # members archived: new or changed files, directories and symlinks
        self.touched = 0  # files read because their mtime moved, found identical, not archived
        self.changed_while_reading: list[str] = []
        self.skipped: list[str] = []

    def run(self) -> None:
        try:
            with tarfile.open(fileobj=self.sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFFER) as tar:
                tar.copybufsize = BUFFER  # type: ignore[attr-defined]  # (not in typeshed)
                for root in self.roots:
                    for arcname, path, st in self._walk(root):
                        self._add(tar, arcname, path, st)
        except BaseException as exc:  # reported to the consumer when the dump context exits
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()

    def _walk(self, root: Path) -> Iterator[tuple[str, str, os.stat_result]]:
        """``(archive path, path, lstat)`` of the root and everything kept under it by the
        filters, parents before children, each directory's entries sorted by name."""
        # A symlinked root is archived as the directory it points to (its entries are listed
        # through it), so tar -xf by hand gives files, not a link back to the live tree.
        yield root.name, str(root), os.stat(root)
        pending = [(str(root), root.name)]
        while pending:
            directory, prefix = pending.pop()
            subdirectories = []
            for entry in self._list(directory):
                arcname = f"{prefix}/{entry.name}"
                relative = arcname.partition("/")[2]
                if self.exclude and matches(relative, self.exclude):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished since it was listed: not part of this snapshot
                if stat.S_ISDIR(st.st_mode):
                    subdirectories.append((entry.path, arcname))
                elif self.include and not matches(relative, self.include):
                    continue
                yield arcname, entry.path, st
            pending.extend(reversed(subdirectories))

    @staticmethod
    def _list(directory: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as listing:
                return sorted(listing, key=lambda entry: entry.name)
        except FileNotFoundError:
            return []  # removed since it was listed: empty as far as this snapshot goes
        except OSError as exc:
            raise EngineError(f"cannot list {directory}: {exc.strerror}") from None

    def _add(self, tar: tarfile.TarFile, arcname: str, path: str, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode):
            self._add_file(tar, arcname, path, st)
            return
        if stat.S_ISDIR(st.st_mode):
            entry, header = f"d {stat.S_IMODE(st.st_mode):o}", _header(arcname, st, tarfile.DIRTYPE)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINVAL):
                    return  # removed or replaced since it was listed
                raise EngineError(f"cannot read the symlink {path}: {exc.strerror}") from None
            entry, header = f"l {target}", _header(arcname, st, tarfile.SYMTYPE, target)
        else:
            self.skipped.append(arcname)  # sockets, fifos, devices are not data
            return
        self.index[arcname] = entry
        if self.previous.get(arcname) != entry:
            tar.addfile(header)
            self.changed += 1

    def _add_file(self, tar: tarfile.TarFile, arcname: str, path: str, st: os.stat_result) -> None:
        before = self.previous.get(arcname)
        old = parse_file_entry(before)
        mode = stat.S_IMODE(st.st_mode)
        if before is not None and old is not None and old[:3] == (st.st_size, st.st_mtime_ns, mode):
            self._index_file(arcname, before, st.st_size)  # trusted unchanged: not even opened
            return
        try:
            # O_NONBLOCK: a path swapped for a fifo since it was listed must not hang the backup.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return  # replaced by a symlink since it was listed
            raise EngineError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(fd)  # what is read from here on; recorded before reading
            if not stat.S_ISREG(st.st_mode):
                return
            first = None
            if old is not None and (old[0], old[2]) == (st.st_size, stat.S_IMODE(st.st_mode)):
                first = _sha256(handle)
                if first == old[3]:
                    self.touched += 1
                    entry = file_entry(st.st_size, st.st_mtime_ns, old[2], first)
                    self._index_file(arcname, entry, st.st_size)
                    return
                handle.seek(0)
                st = os.fstat(fd)
            reader = _HashingReader(handle)
            try:
                tar.addfile(_header(arcname, st, tarfile.REGTYPE), reader)
            except OSError as exc:
                if str(exc) == "unexpected end of data":  # tarfile's words for a short read
                    raise EngineError(f"{path} shrank while it was archived; run the backup again") from None
                raise
        digest = reader.digest.hexdigest()
        if first is not None and digest != first:
            self.changed_while_reading.append(arcname)
        entry = file_entry(st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), digest)
        self._index_file(arcname, entry, st.st_size)
        self.files += 1
        self.bytes += st.st_size
        self.changed += 1

    def _index_file(self, arcname: str, entry: str, size: int) -> None:
        self.index[arcname] = entry
        self.tree_files += 1
        self.tree_bytes += size


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(BUFFER):
        digest.update(chunk)
    return digest.hexdigest()
