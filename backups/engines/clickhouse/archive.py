"""The ClickHouse backup archive: a POSIX tar stream that ``tar -x`` unpacks by hand.

Members, in this order:

``archive.json``
    What the archive holds: format and version, the database, the server version and every
    table and view in restore order, each with its kind, engine, schema member and data
    directory. Written first, before any data is read.
``schema/NNN-<name>.sql``
    One ``SHOW CREATE TABLE`` statement each (ending in ``;``), tables first, then views in
    dependency order; NNN is the restore order.
``data/<name>/000001.native``, ``000002.native`` ...
    A table's rows in ClickHouse's Native format, cut into parts of at most ``part_size``
    bytes: a tar header must state a member's size before its content, and a table's dump has
    no size known in advance, so each part is buffered in memory (which bounds the dump's memory
    use). Concatenating a table's parts in order gives its Native stream. An empty table has
    no parts. Materialized views' data lives in their ``.inner.<view>`` table.
``complete.json``
    Written last, once every table has been read: the parts per table and the row counts with
    whether each is exact. Its presence proves the dump finished.

Names are percent-encoded (plus a leading dot) so any ClickHouse name makes a safe path.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from backups.engines.base import EngineError

FORMAT = "backupsite-clickhouse"
VERSION = 1
HEADER = "archive.json"
TRAILER = "complete.json"
_BUFFER = 1024 * 1024
_MAX_JSON = 64 * 1024 * 1024
_MAX_SCHEMA = 64 * 1024 * 1024
KINDS = ("table", "view", "materialized_view")


def path_name(name: str) -> str:
    """``name`` as one safe path component: percent-encoded, never starting with a dot."""
    encoded = urllib.parse.quote(name, safe="-_.+=,@~")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


@dataclass(frozen=True)
class Entry:
    """One table or view of the archive."""

    name: str
    kind: str  # one of KINDS
    engine: str
    schema: str  # member name of its CREATE statement
    data: str | None = None  # directory of its Native parts, None when it has no data
    data_table: str | None = None  # the table the parts restore into (a view's ".inner." table)

    @classmethod
    def from_json(cls, value: Any) -> Entry:
        if not isinstance(value, dict):
            raise EngineError("archive.json lists a table that is not an object")
        try:
            entry = cls(**value)
        except TypeError as exc:
            raise EngineError(f"archive.json lists a table with unexpected fields: {exc}") from None
        if entry.kind not in KINDS or not entry.schema.startswith("schema/"):
            raise EngineError(f"archive.json describes {entry.name!r} wrongly (kind {entry.kind!r})")
        if (entry.data is None) != (entry.data_table is None) or (
            entry.data is not None and not entry.data.startswith("data/")
        ):
            raise EngineError(f"archive.json describes the data of {entry.name!r} wrongly")
        return entry

    def part(self, number: int) -> str:
        return f"{self.data}/{number:06d}.native"


@dataclass(frozen=True)
class Header:
    database: str
    server_version: str
    entries: list[Entry]
    created: str

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "database": self.database,
            "server_version": self.server_version,
            "created": self.created,
            "tables": [asdict(entry) for entry in self.entries],
        }
        return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Header:
        document = _json(data, HEADER)
        if document.get("format") != FORMAT:
            raise EngineError(f"{HEADER} is not a Backupsite ClickHouse archive description")
        if document.get("version") != VERSION:
            raise EngineError(
                f"archive format version {document.get('version')!r} is not supported (this is {VERSION})"
            )
        entries = [Entry.from_json(value) for value in document.get("tables") or []]
        return cls(
            database=str(document.get("database", "")),
            server_version=str(document.get("server_version", "")),
            entries=entries,
            created=str(document.get("created", "")),
        )


def _json(data: bytes, member: str) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise EngineError(f"{member} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EngineError(f"{member} is not a JSON object")
    return document


def schema_member(index: int, width: int, name: str) -> str:
    return f"schema/{index:0{width}d}-{path_name(name)}.sql"


# -- writing ------------------------------------------------------------------------------------------


class _Slice:
    """A readable view of the first ``size`` bytes of a buffer (no copy of the part)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._position + size)
        chunk = bytes(self._view[self._position : end])
        self._position = end
        return chunk


class ArchiveWriter(threading.Thread):
    """Writes the archive into ``sink`` (an OS pipe the pipeline reads); records the first error.

    ``open_data(entry)`` yields the Native stream of an entry (a client process's stdout, checked
    on exit); ``finish(parts)`` returns the trailer's document once every table has been read.
    """

    def __init__(
        self,
        sink: BinaryIO,
        header: Header,
        schemas: dict[str, bytes],
        open_data: Callable[[Entry], AbstractContextManager[BinaryIO]],
        finish: Callable[[dict[str, int]], dict[str, Any]],
        part_size: int,
    ) -> None:
        super().__init__(name="clickhouse-archive-writer", daemon=True)
        self.sink, self.header, self.schemas = sink, header, schemas
        self.open_data, self.finish, self.part_size = open_data, finish, part_size
        self.error: BaseException | None = None
        self.parts: dict[str, int] = {}
        self.bytes = 0
        self.trailer: dict[str, Any] = {}

    def run(self) -> None:
        try:
            with tarfile.open(
                fileobj=self.sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BUFFER
            ) as tar:
                tar.copybufsize = _BUFFER  # type: ignore[attr-defined]  # (not in typeshed)
                self._add(tar, HEADER, self.header.to_json())
                for entry in self.header.entries:
                    self._add(tar, entry.schema, self.schemas[entry.name])
                buffer = bytearray(self.part_size)
                for entry in self.header.entries:
                    if entry.data is not None:
                        self._add_data(tar, entry, buffer)
                self.trailer = self.finish(dict(self.parts))
                document = json.dumps(self.trailer, indent=2, ensure_ascii=False)
                self._add(tar, TRAILER, document.encode("utf-8", "surrogateescape") + b"\n")
        except BaseException as exc:  # reported to the consumer when the dump context exits
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()

    def _add_data(self, tar: tarfile.TarFile, entry: Entry, buffer: bytearray) -> None:
        view = memoryview(buffer)
        parts = 0
        with self.open_data(entry) as stream:
            while True:
                filled = _fill(stream, view)
                if not filled:
                    break
                parts += 1
                self._add(tar, entry.part(parts), view[:filled])
                self.bytes += filled
                if filled < len(view):
                    break
        self.parts[entry.name] = parts

    @staticmethod
    def _add(tar: tarfile.TarFile, name: str, data: bytes | memoryview) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, _Slice(memoryview(data)))


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends; return the bytes read."""
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled


# -- reading ------------------------------------------------------------------------------------------


@dataclass
class Schema:
    entry: Entry
    sql: str


@dataclass
class Data:
    entry: Entry
    stream: TableParts


@dataclass
class Trailer:
    document: dict[str, Any]


class TableParts:
    """One table's parts read back as one stream, moving through the tar members."""

    def __init__(self, archive: ArchiveReader, entry: Entry, first: tarfile.TarInfo) -> None:
        self._archive, self.entry = archive, entry
        self.parts = 1
        self.bytes = 0
        self._handle = archive.extract(first)
        self.lookahead: tarfile.TarInfo | None = None
        self.done = False

    def read(self, size: int = -1) -> bytes:
        while not self.done:
            try:
                chunk = self._handle.read(size if size > 0 else _BUFFER)
            except tarfile.TarError as exc:
                raise EngineError(f"the archive is damaged in {self.entry.part(self.parts)}: {exc}") from None
            if chunk:
                self.bytes += len(chunk)
                return chunk
            member = self._archive.next_member()
            expected = self.entry.part(self.parts + 1)
            if member is not None and member.name == expected:
                self.parts += 1
                self._handle = self._archive.extract(member)
            elif member is not None and member.name.startswith(f"{self.entry.data}/"):
                raise EngineError(f"archive member {member.name!r} found where {expected} was expected")
            else:
                self.lookahead, self.done = member, True
        return b""

    def drain(self) -> None:
        while self.read(_BUFFER):
            pass


class ArchiveReader:
    """Reads and checks the archive's structure as it streams by (see the module docstring)."""

    def __init__(self, stream: BinaryIO) -> None:
        try:
            self._tar = tarfile.open(fileobj=stream, mode="r|", bufsize=_BUFFER)  # noqa: SIM115  (read by events())
        except tarfile.TarError as exc:
            raise EngineError(f"the backup is not a tar archive: {exc}") from None
        self.header = Header.from_json(self._read_member(self.next_member(), HEADER, _MAX_JSON))
        names = [entry.name for entry in self.header.entries]
        if len(set(names)) != len(names):
            raise EngineError("archive.json lists a table twice")

    def next_member(self) -> tarfile.TarInfo | None:
        try:
            return self._tar.next()
        except tarfile.TarError as exc:
            raise EngineError(f"the archive is damaged: {exc}") from None

    def extract(self, member: tarfile.TarInfo) -> io.BufferedReader:
        if not member.isreg():
            raise EngineError(f"archive member {member.name!r} is not a regular file")
        handle = self._tar.extractfile(member)
        assert handle is not None
        return handle  # type: ignore[return-value]

    def _read_member(self, member: tarfile.TarInfo | None, expected: str, limit: int) -> bytes:
        if member is None:
            raise EngineError(f"the archive ends where {expected} was expected")
        if member.name != expected:
            raise EngineError(f"archive member {member.name!r} found where {expected} was expected")
        if member.size > limit:
            raise EngineError(f"archive member {expected} is implausibly large ({member.size} bytes)")
        try:
            return self.extract(member).read()
        except tarfile.TarError as exc:
            raise EngineError(f"the archive is damaged: {exc}") from None

    def events(self) -> Iterator[Schema | Data | Trailer]:
        """Schema statements, then each table's data, then the trailer; a table's stream is
        drained when the consumer moves on, and every deviation from the layout raises."""
        try:
            yield from self._events()
        except tarfile.TarError as exc:
            raise EngineError(f"the archive is damaged: {exc}") from None

    def _events(self) -> Iterator[Schema | Data | Trailer]:
        for entry in self.header.entries:
            sql = self._read_member(self.next_member(), entry.schema, _MAX_SCHEMA)
            yield Schema(entry, sql.decode("utf-8", "surrogateescape"))
        pending = [entry for entry in self.header.entries if entry.data is not None]
        parts: dict[str, int] = {}
        member = self.next_member()
        while member is not None and member.name != TRAILER:
            while pending and not member.name.startswith(f"{pending[0].data}/"):
                pending.pop(0)  # tables without parts (empty) are skipped over
            if not pending or member.name != pending[0].part(1):
                raise EngineError(
                    f"unexpected archive member {member.name!r} (parts out of order or unknown table)"
                )
            stream = TableParts(self, pending.pop(0), member)
            yield Data(stream.entry, stream)
            stream.drain()
            parts[stream.entry.name] = stream.parts
            member = stream.lookahead
        trailer = _json(self._read_member(member, TRAILER, _MAX_JSON), TRAILER)
        recorded = trailer.get("parts")
        if not isinstance(recorded, dict):
            raise EngineError(f"{TRAILER} does not list the parts of each table")
        for entry in self.header.entries:
            if entry.data is not None and recorded.get(entry.name, 0) != parts.get(entry.name, 0):
                raise EngineError(
                    f"table {entry.name} has {parts.get(entry.name, 0)} part(s) in the archive, "
                    f"{TRAILER} records {recorded.get(entry.name, 0)}"
                )
        extra = self.next_member()
        if extra is not None:
            raise EngineError(f"unexpected archive member {extra.name!r} after {TRAILER}")
        yield Trailer(trailer)
