"""SQLite: a consistent snapshot through SQLite's online backup API.

The backup API writes to a database file, never to a pipe, so the snapshot goes to a 0600 temp
file in the scratch directory; the file is unlinked as soon as it is opened for streaming, so
nothing is left behind even if the process dies. Restore writes a temp file beside the
destination, checks it, and renames it over the destination: a failed restore never damages it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .base import Connection, Dump, DumpOptions, Engine, EngineError, RestoreOptions, RestoreResult

_CHUNK = 1024 * 1024


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
        return []

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
        destination = Path(connection.database)
        if not connection.database:
            raise EngineError("the destination target has no database path")
        if destination.is_dir():
            raise EngineError(
                f"restore destination {destination} is a directory; set the target's database to a file path"
            )

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        destination = Path(connection.database)
        self.check_restore_destination(connection)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{destination.name}.restore-", dir=destination.parent)
        os.close(fd)
        staged = Path(name)
        try:
            if _write_stream(stream, staged) == 0:
                raise EngineError("the backup holds an empty database file; nothing was restored")
            problem = _integrity_problem(staged)
            if problem:
                raise EngineError(f"restored database failed its integrity check: {problem}")
            with contextlib.closing(sqlite3.connect(staged)) as db:
                tables = _user_tables(db)
            self._replace(staged, destination)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return RestoreResult(tables=tables, message=f"restored {len(tables)} table(s) into {destination}")

    @staticmethod
    def _replace(staged: Path, destination: Path) -> None:
        if destination.exists():
            shutil.copymode(destination, staged)
            # Fold any WAL into the old file first, so no stale WAL is replayed onto the new one.
            try:
                with contextlib.closing(sqlite3.connect(destination, timeout=60)) as old:
                    old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError as exc:
                # A damaged destination (what a restore is often for) has nothing to fold in;
                # its stale WAL is removed below. Anything else (e.g. locked) stops the restore.
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                    raise EngineError(f"cannot replace {destination}: {exc}") from None
        os.replace(staged, destination)
        for suffix in ("-wal", "-shm"):
            Path(f"{destination}{suffix}").unlink(missing_ok=True)
        dir_fd = os.open(destination.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

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
