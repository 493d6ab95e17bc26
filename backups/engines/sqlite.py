"""SQLite: a consistent snapshot through SQLite's online backup API.

The backup API writes to a database file, never to a pipe, so the snapshot goes to a 0600 temp
file in the scratch directory; the file is unlinked as soon as it is opened for streaming, so
nothing is left behind even if the process dies.

**Restore** writes a temp file beside the destination and checks it (``PRAGMA
integrity_check``); only then is it swapped in. The previous file is kept beside it as
``<name>.before-restore-<UTC time>`` (with its ``-wal``/``-shm``/``-journal`` files, renamed
alike), and the new file takes the destination's name in one rename, so the path never goes
missing. An error before the swap (a full disk, a damaged backup) leaves the destination as it
was; the message carries the underlying error.

**Refused, nothing changed**: a destination that exists and is not a regular file (a directory, a
device such as ``/dev/null``, a fifo, a socket; :meth:`SQLiteEngine.validate` refuses it at config
check too), and a destination in use. A symlink destination is followed: the restore goes into
the file it points to (the message says so) and the link stays.

**In use** is detected twice: by :meth:`SQLiteEngine.check_restore_destination` (the first test
only) and again right before the swap (both):

1. ``/proc/<pid>/fd`` and ``fdinfo`` of every process: one holding the database file open for
   writing refuses the restore. Every SQLite connection not opened read-only holds it so, even
   an idle one that would later write into the file kept aside or beside the new one.
2. The database's own lock: ``BEGIN EXCLUSIVE`` with a short busy timeout (``LOCK_TIMEOUT``)
   fails while another connection holds a write transaction (with a rollback journal, a read
   transaction too). Then the WAL is folded into the old file, so the file kept aside is whole.

Limits: ``/proc`` exists on Linux only and shows the processes of this PID namespace (not those
of another container sharing the file), and, unless running as root, only this user's; the lock
is seen by every process of this host (the kernel's locks span containers) but only during a
transaction. Neither sees another host through a network filesystem, nor a process that opens
the database in the few milliseconds between the check and the swap.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .base import (
    Connection,
    Dump,
    DumpOptions,
    Engine,
    EngineError,
    RestoreOptions,
    RestoreResult,
    assertion_text,
)

_CHUNK = 1024 * 1024
#: Seconds a restore waits for the destination's exclusive lock before refusing.
LOCK_TIMEOUT = 2.0
#: The files SQLite keeps beside a database; they follow it when it is kept aside.
_COMPANIONS = ("-wal", "-shm", "-journal")
REFUSED = "Restore refused: nothing was changed."
_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
}


def _user_tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [row[0] for row in rows]


def _integrity_problem(path: Path) -> str | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as db:
            rows = [row[0] for row in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(str(row) for row in rows[:5])


def _write_stream(stream: BinaryIO, path: Path) -> int:
    written = 0
    with open(path, "wb") as out:
        while chunk := stream.read(_CHUNK):
            out.write(chunk)
            written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return written


def file_problem(raw: str) -> str | None:
    """Why the database path ``raw`` (followed if it is a symlink) cannot hold a SQLite file, or
    None; nothing there yet is fine (a restore creates it)."""
    try:
        st = os.stat(raw)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"{raw} cannot be checked: {exc.strerror}"
    if stat.S_ISREG(st.st_mode):
        return None
    where = f"{raw} (a symlink to {os.path.realpath(raw)})" if os.path.islink(raw) else raw
    if stat.S_ISDIR(st.st_mode):
        return f"{where} is a directory; set the database to the path of a SQLite file"
    return (
        f"{where} is {_KINDS.get(stat.S_IFMT(st.st_mode), 'something else')}, not a regular file, and a restore would replace it; "
        "set the database to the path of a SQLite file"
    )


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return "?"


def writers(path: Path) -> list[str]:
    """The processes holding ``path`` open for writing, as far as ``/proc`` shows them (this
    PID namespace; only this user's processes unless root), as ``"process PID (command)"``."""
    try:
        wanted = os.stat(path)
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                if (st.st_dev, st.st_ino) != (wanted.st_dev, wanted.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(line for line in info if line.startswith("flags:")).split()[1]
            except (OSError, StopIteration, IndexError):
                continue
            if int(flags, 8) & os.O_ACCMODE != os.O_RDONLY:
                found.append(f"process {pid} ({_command(pid)})")
                break
    return found


def _lock_problem(path: Path) -> str | None:
    """Whether another connection holds a transaction on the database at ``path``; on the way
    out the WAL is folded into the file."""
    try:
        with contextlib.closing(
            sqlite3.connect(
                f"file:{quote(str(path))}?mode=rw", uri=True, timeout=LOCK_TIMEOUT, isolation_level=None
            )
        ) as old:
            old.execute("BEGIN EXCLUSIVE")
            old.execute("ROLLBACK")
            old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        # Any other error: a damaged file (what restores are often for) or one this user cannot
        # lock has no lock to ask; /proc was asked first.
        if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return f"another connection holds a transaction open on it ({exc}, waited {LOCK_TIMEOUT:g} s)"
    return None


def in_use_problem(path: Path) -> str | None:
    """Why the database at ``path`` is in use (open for writing, or locked), or None."""
    holders = writers(path)
    if holders:
        return f"it is open for writing by {', '.join(holders)}"
    return _lock_problem(path)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside_name(destination: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = destination.with_name(f"{destination.name}.before-restore-{stamp}")
    counter = 1
    while os.path.lexists(aside):  # an earlier restore within the same second
        counter += 1
        aside = destination.with_name(f"{destination.name}.before-restore-{stamp}-{counter}")
    return aside


class SQLiteEngine(Engine):
    key = "sqlite"
    label = "SQLite"
    file_extension = ".sqlite3"
    content_type = "application/vnd.sqlite3"

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        if not connection.database:
            return [("database", "required: the path of the SQLite database file")]
        if not os.path.isabs(connection.database):
            return [("database", f"must be an absolute path, got {connection.database!r}")]
        problem = file_problem(connection.database)
        return [("database", problem)] if problem else []

    def probe(self, connection: Connection) -> None:
        path = Path(connection.database)
        if not path.exists():
            raise EngineError(f"SQLite database {path} does not exist")
        if path.is_dir():
            raise EngineError(f"SQLite database {path} is a directory, not a database file")
        if not os.access(path, os.R_OK):
            raise EngineError(f"SQLite database {path} is not readable by this user")
        try:
            with contextlib.closing(self._open_source(path)) as db:
                db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise EngineError(f"SQLite database {path} cannot be read: {exc}") from None

    @staticmethod
    def _open_source(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=60)

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        source = Path(connection.database)
        self.probe(connection)
        options.scratch_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="sqlite-snapshot-", suffix=".db", dir=options.scratch_dir)
        os.close(fd)
        snapshot = Path(name)
        try:
            info = self._snapshot(source, snapshot, connection)
            handle = open(snapshot, "rb")  # noqa: SIM115  (closed below, after streaming)
        finally:
            snapshot.unlink(missing_ok=True)
        with handle:
            yield Dump(stream=handle, info=info)

    def _snapshot(self, source: Path, snapshot: Path, connection: Connection) -> dict[str, object]:
        try:
            with (
                contextlib.closing(self._open_source(source)) as src,
                contextlib.closing(sqlite3.connect(snapshot)) as dst,
            ):
                # One step (pages=-1) so the copy is a single consistent read transaction.
                src.backup(dst, pages=-1)
                tables = _user_tables(dst)
                kept = self._apply_table_filters(dst, tables, connection)
                version = sqlite3.sqlite_version
        except sqlite3.DatabaseError as exc:
            raise EngineError(f"SQLite backup of {source} failed: {exc}") from None
        except OSError as exc:
            raise EngineError(f"SQLite backup of {source} failed: {exc.strerror}") from None
        return {"tables": kept, "server_version": f"SQLite {version}", "tool": "sqlite3 backup API"}

    @staticmethod
    def _apply_table_filters(db: sqlite3.Connection, tables: list[str], connection: Connection) -> list[str]:
        include, exclude = list(connection.include_tables), list(connection.exclude_tables)
        unknown = [name for name in include + exclude if name not in tables]
        if unknown:
            raise EngineError(f"table(s) not found in the database: {', '.join(unknown)}")
        keep = [t for t in tables if (not include or t in include) and t not in exclude]
        dropped = [t for t in tables if t not in keep]
        if dropped:
            for table in dropped:
                db.execute(f'DROP TABLE "{table.replace(chr(34), chr(34) * 2)}"')
            db.commit()
            db.execute("VACUUM")
        return keep

    def check_restore_destination(self, connection: Connection) -> None:
        """Refuse a destination that is not a regular file or is open for writing (``/proc``
        only: the lock is asked right before the swap)."""
        if not connection.database:
            raise EngineError("the destination target has no database path")
        if not os.path.isabs(connection.database):
            raise EngineError(
                f"the destination's database must be an absolute path, got {connection.database!r}"
            )
        problem = file_problem(connection.database)
        if problem:
            raise EngineError(f"restore destination {problem}. {REFUSED}")
        destination = Path(os.path.realpath(connection.database))
        holders = writers(destination)
        if holders:
            raise EngineError(
                f"restore destination {destination} is open for writing by {', '.join(holders)}; stop "
                f"it (or close its database connection) and restore again. {REFUSED}"
            )

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        self.check_restore_destination(connection)
        # A symlink stays a symlink: the restore goes into the file it points to.
        destination = Path(os.path.realpath(connection.database))
        followed = (
            f" (the file {connection.database} points to)" if os.path.islink(connection.database) else ""
        )
        staged: Path | None = None
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{destination.name}.restore-", dir=destination.parent)
            os.close(fd)
            staged = Path(name)
            if _write_stream(stream, staged) == 0:
                raise EngineError("the backup holds an empty database file; nothing was restored")
            problem = _integrity_problem(staged)
            if problem:
                raise EngineError(f"restored database failed its integrity check: {problem}")
            with contextlib.closing(sqlite3.connect(staged)) as db:
                tables = _user_tables(db)
            aside = self._swap_in(staged, destination)
        except OSError as exc:
            if staged is not None:
                staged.unlink(missing_ok=True)
            where = f" ({exc.filename})" if exc.filename else ""
            raise EngineError(
                f"restore failed: {exc.strerror or exc}{where}; {destination} was not changed"
            ) from None
        except BaseException:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        message = f"restored {len(tables)} table(s) into {destination}{followed}"
        if aside is not None:
            message += f"; the previous file is kept as {aside}"
        return RestoreResult(tables=tables, message=message)

    @staticmethod
    def _swap_in(staged: Path, destination: Path) -> Path | None:
        """Put ``staged`` in the destination's place; the previous file (returned) and its
        companions are kept beside it under ``<name>.before-restore-<UTC time>``. Raises
        EngineError (nothing changed) if the destination is not a regular file or is in use."""
        if not os.path.lexists(destination):
            os.rename(staged, destination)
            _fsync_directory(destination.parent)
            return None
        problem = file_problem(str(destination))
        if problem:
            raise EngineError(f"restore destination {problem}. {REFUSED}")
        problem = in_use_problem(destination)
        if problem:
            raise EngineError(
                f"restore destination {destination} is in use: {problem}; stop the application using "
                f"it and restore again. {REFUSED}"
            )
        st = os.stat(destination)
        os.chmod(staged, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.chown(staged, st.st_uid, st.st_gid)
        aside = _aside_name(destination)
        try:
            # A second name for the old file, so the destination's name never goes missing (an
            # application opening it in between would create an empty database).
            os.link(destination, aside)
            linked = True
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.rename(destination, aside)  # a filesystem without hard links
            linked = False
        moved: list[str] = []
        try:
            for suffix in _COMPANIONS:
                if os.path.lexists(f"{destination}{suffix}"):
                    os.rename(f"{destination}{suffix}", f"{aside}{suffix}")
                    moved.append(suffix)
            os.replace(staged, destination)
        except OSError:
            for suffix in moved:
                os.rename(f"{aside}{suffix}", f"{destination}{suffix}")
            if linked:
                aside.unlink()
            else:
                os.rename(aside, destination)
            raise
        _fsync_directory(destination.parent)
        return aside

    def row_counts(self, connection: Connection) -> dict[str, int]:
        """Exact row count of every table, read-only (a drill's scratch copy)."""
        try:
            with contextlib.closing(self._open_source(Path(connection.database))) as db:
                counts: dict[str, int] = {}
                for table in _user_tables(db):
                    quoted = table.replace('"', '""')
                    row = db.execute(f'SELECT count(*) FROM "{quoted}"').fetchone()  # noqa: S608  (quoted name)
                    counts[table] = int(row[0])
                return counts
        except sqlite3.DatabaseError as exc:
            raise EngineError(f"cannot count rows in {connection.database}: {exc}") from None

    def check_assertion(self, connection: Connection, sql: str, timeout_seconds: float) -> str:
        """Read-only (``mode=ro`` and ``query_only``); a progress handler interrupts the
        statement after ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        try:
            with contextlib.closing(self._open_source(Path(connection.database))) as db:
                db.execute("PRAGMA query_only = ON")
                db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                return assertion_text(db.execute(sql).fetchone())
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline:
                raise EngineError(
                    f"the check ran longer than {timeout_seconds:g} s and was stopped"
                ) from None
            raise EngineError(f"the check failed: {exc}") from None
        except sqlite3.Error as exc:
            raise EngineError(f"the check failed: {exc}") from None

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        options.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sqlite-trial-", dir=options.scratch_dir) as tmp:
            path = Path(tmp) / "trial.db"
            if _write_stream(stream, path) == 0:
                raise EngineError("the backup holds an empty database file")
            problem = _integrity_problem(path)
            if problem:
                raise EngineError(f"integrity check failed: {problem}")
            with contextlib.closing(sqlite3.connect(path)) as db:
                count = len(_user_tables(db))
        return f"integrity_check ok, {count} table(s)"
