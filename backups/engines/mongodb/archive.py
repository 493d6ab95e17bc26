"""The mongodump archive format, read chunk by chunk in pure Python.

Written from mongo-tools' own description (``common/archive/spec.md``) and its reader
(``common/archive/parser.go``, ``prelude.go``, ``demultiplexer.go``)::

    archive = magic-number header *collection-metadata terminator *(namespace-segment | namespace-eof)
    magic-number      = 6d e2 99 81 (0x8199e26d, little-endian)
    namespace-segment = namespace-header *document terminator
    namespace-eof     = eof-header terminator          (a namespace header with EOF: true)
    terminator        = ff ff ff ff

Every header is a BSON document. mongodump declares each collection in the prelude, and writes an
EOF header for each once it has written all of its documents (an empty collection or a view gets
an empty segment, then its EOF header). So an archive is whole exactly when it ends on a block
boundary with every declared namespace closed: a dump cut short by a crash, a kill or a short
read lacks at least one EOF header. Documents are at most 16 MiB (mongo-tools' ``MaxBSONSize``,
the limit of its own parser), so only one document at a time is ever held in memory.

The per-namespace CRC-64 of the EOF headers is not recomputed here: in pure Python it would run
at about 10 MB/s, and mongorestore checks it itself on every restore.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO, NoReturn

from backups.engines.base import EngineError
from backups.engines.mongodb.bson_walker import MIN_DOCUMENT, BSONError, parse_document

MAGIC = bytes.fromhex("6de29981")
TERMINATOR = 0xFFFFFFFF
MAX_DOCUMENT = 16 * 1024 * 1024
TIMESERIES_BUCKETS = "system.buckets."  # where servers before 8.3 keep a time series' data
_CHUNK = 1024 * 1024
_UINT32 = struct.Struct("<I")


class NotAnArchive(EngineError):
    """The stream is not a mongodump archive at all (nothing was restored)."""


@dataclass
class Namespace:
    """A collection (or view, or time series) the archive's prelude declares."""

    database: str
    collection: str
    kind: str  # "" for a collection, "view", "timeseries"
    documents: int = 0
    size: int = 0
    closed: bool = False


# What the scanner expects next. A "slot" is where the next length-or-terminator belongs.
_MAGIC, _PRELUDE_HEADER, _PRELUDE_BODY, _BLOCK_HEADER, _BLOCK_BODY, _EOF_TERMINATOR = range(6)
_SLOT_NAMES = {
    _PRELUDE_HEADER: "the archive header",
    _PRELUDE_BODY: "the collection list",
    _BLOCK_HEADER: "a namespace header",
    _BLOCK_BODY: "a document",
    _EOF_TERMINATOR: "the terminator after a namespace's end",
}


@dataclass
class ArchiveScanner:
    """Follows a mongodump archive fed chunk by chunk (see the module docstring).

    With ``check_documents`` every document is walked as BSON (a trial restore); without, only
    its framing is checked (length, closing NUL) and its bytes are skipped, not copied, which
    keeps the scanner cheap enough to guard every dump and restore as the bytes pass.
    """

    check_documents: bool = False
    size: int = 0
    header: dict[str, object] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)  # "db.collection" -> namespace
    _slot: int = _MAGIC
    _pending: bytearray = field(default_factory=bytearray)  # the item being completed
    _need: int = 4  # bytes the pending item needs in all
    _length_known: bool = False  # the pending item is a document whose length was read
    _skip: int = 0  # bytes of an unchecked document still to pass
    _item_at: int = 0  # archive offset of the pending item
    _current: Namespace | None = None

    @property
    def prelude_done(self) -> bool:
        return self._slot not in (_MAGIC, _PRELUDE_HEADER, _PRELUDE_BODY)

    def feed(self, chunk: bytes) -> None:
        position, total = 0, len(chunk)
        while position < total:
            if self._skip:
                taken = min(self._skip, total - position)
                position += taken
                self._skip -= taken
                if not self._skip and chunk[position - 1] != 0:
                    self._fail("a document does not end with a NUL byte")
                continue
            if self._slot == _BLOCK_BODY and not self.check_documents and not self._pending:
                skimmed = self._skim(chunk, position)
                if skimmed != position or self._skip:
                    position = skimmed
                    continue
            if not self._pending:
                self._item_at = self.size + position
            taken = min(self._need - len(self._pending), total - position)
            self._pending += chunk[position : position + taken]
            position += taken
            if len(self._pending) == self._need:
                self._complete()
        self.size += total

    def _skim(self, chunk: bytes, position: int) -> int:
        """Pass over whole documents in ``chunk`` from ``position`` (framing only), as fast as
        Python allows; stop at a terminator or a length split by the chunk's end. A document
        that runs past the chunk is counted and the rest of it left to :attr:`_skip`."""
        assert self._current is not None  # a body slot always has its namespace
        total, count, size = len(chunk), 0, 0
        unpack = _UINT32.unpack_from
        while position + 4 <= total:
            (length,) = unpack(chunk, position)
            if length == TERMINATOR:
                break
            self._item_at = self.size + position
            if not MIN_DOCUMENT <= length <= MAX_DOCUMENT:
                self._fail(f"{length} is neither a document length nor a terminator")
            count, size, end = count + 1, size + length, position + length
            if end > total:
                self._skip, position = end - total, total
                break
            if chunk[end - 1] != 0:
                self._fail("a document does not end with a NUL byte")
            position = end
        self._current.documents += count
        self._current.size += size
        return position

    def _complete(self) -> None:
        item = bytes(self._pending)
        self._pending.clear()
        if self._slot == _MAGIC:
            if item != MAGIC:
                raise NotAnArchive(
                    "not a mongodump archive: it does not start with the archive magic number 0x8199e26d"
                )
            self._slot, self._need = _PRELUDE_HEADER, 4
        elif self._length_known:
            self._length_known, self._need = False, 4
            self._document(item)
        else:
            self._length(int.from_bytes(item, "little"), item)

    def _length(self, value: int, item: bytes) -> None:
        if value == TERMINATOR:
            if self._slot in (_BLOCK_BODY, _EOF_TERMINATOR, _PRELUDE_BODY):
                self._slot, self._current = _BLOCK_HEADER, None
                return
            self._fail(f"a terminator where {_SLOT_NAMES[self._slot]} belongs")
        if not MIN_DOCUMENT <= value <= MAX_DOCUMENT:
            self._fail(f"{value} is neither a document length nor a terminator")
        if self._slot == _EOF_TERMINATOR:
            self._fail("data after the end of a namespace")
        if self._slot == _BLOCK_BODY and not self.check_documents:
            self._count(value)
            self._skip = value - 4
            return
        self._pending += item
        self._need, self._length_known = value, True

    def _document(self, data: bytes) -> None:
        try:
            fields = parse_document(data, decode=self._slot != _BLOCK_BODY)
        except BSONError as exc:
            self._fail(str(exc))
        if self._slot == _PRELUDE_HEADER:
            self.header = fields
            self._slot = _PRELUDE_BODY
        elif self._slot == _PRELUDE_BODY:
            self._declare(fields)
        elif self._slot == _BLOCK_HEADER:
            self._open(fields)
        else:
            self._count(len(data))

    def _declare(self, fields: dict[str, object]) -> None:
        database, collection, kind = fields.get("db"), fields.get("collection"), fields.get("type") or ""
        if not isinstance(database, str) or not isinstance(collection, str) or not collection:
            self._fail("a collection entry of the prelude lacks its db or collection name")
        name = f"{database}.{collection}"
        if name in self.namespaces:
            self._fail(f"the prelude lists {name} twice")
        self.namespaces[name] = Namespace(database, collection, str(kind))

    def _open(self, fields: dict[str, object]) -> None:
        database, collection, eof = fields.get("db"), fields.get("collection"), fields.get("EOF")
        if not isinstance(database, str) or not isinstance(collection, str) or not isinstance(eof, bool):
            self._fail("a namespace header lacks its db, collection or EOF field")
        namespace = self._namespace(database, collection)
        if namespace.closed:
            self._fail(f"data for {database}.{collection} after its end")
        if eof:
            namespace.closed = True
            self._slot, self._current = _EOF_TERMINATOR, None
        else:
            self._slot, self._current = _BLOCK_BODY, namespace

    def _namespace(self, database: str, collection: str) -> Namespace:
        namespace = self.namespaces.get(f"{database}.{collection}")
        if namespace is None and collection.startswith(TIMESERIES_BUCKETS):
            series = self.namespaces.get(f"{database}.{collection.removeprefix(TIMESERIES_BUCKETS)}")
            if series is not None and series.kind == "timeseries":
                namespace = series
        if namespace is None:
            self._fail(f"data for {database}.{collection}, which the prelude does not declare")
        return namespace

    def _count(self, size: int) -> None:
        assert self._current is not None  # a body slot always has its namespace
        self._current.documents += 1
        self._current.size += size

    def _fail(self, message: str) -> NoReturn:
        raise EngineError(f"the archive is damaged at byte {self._item_at}: {message}")

    def check_complete(self) -> None:
        """Raise :class:`EngineError` unless the archive ended whole (see the module docstring)."""
        if self.size == 0:
            raise NotAnArchive("the archive is empty")
        if self._slot in (_MAGIC, _PRELUDE_HEADER, _PRELUDE_BODY):
            raise NotAnArchive("not a mongodump archive: it ends inside its prelude")
        if self._pending or self._skip or self._slot != _BLOCK_HEADER:
            raise EngineError(f"the archive is truncated: it ends inside {_SLOT_NAMES[self._slot]}")
        unfinished = [name for name, namespace in self.namespaces.items() if not namespace.closed]
        if unfinished:
            raise EngineError(
                "the archive is incomplete: mongodump never finished "
                f"{', '.join(unfinished[:10])}{' and more' if len(unfinished) > 10 else ''}"
            )

    # -- what the archive holds ----------------------------------------------------------------

    @property
    def databases(self) -> list[str]:
        return list(dict.fromkeys(namespace.database for namespace in self.namespaces.values()))

    @property
    def documents(self) -> int:
        return sum(namespace.documents for namespace in self.namespaces.values())

    def collections(self, kind: str | None = None) -> list[str]:
        """Collection names (of one ``kind``, or every kind but views), in the prelude's order."""
        return [
            namespace.collection
            for namespace in self.namespaces.values()
            if (namespace.kind == kind if kind is not None else namespace.kind != "view")
        ]

    def summary(self) -> str:
        views = self.collections("view")
        return (
            f"mongodump archive (mongodump {self.header.get('tool_version') or '?'}, MongoDB "
            f"{self.header.get('server_version') or '?'}): complete, {len(self.collections())} "
            f"collection(s){f' and {len(views)} view(s)' if views else ''}, {self.documents} document(s), "
            f"{self.size} bytes"
        )


def scan(stream: BinaryIO, *, check_documents: bool) -> ArchiveScanner:
    """Read ``stream`` to its end through a scanner and check that the archive is whole."""
    scanner = ArchiveScanner(check_documents=check_documents)
    while chunk := stream.read(_CHUNK):
        scanner.feed(chunk)
    scanner.check_complete()
    return scanner


class ScannedStream:
    """A readable stream that follows the archive passing through it.

    For a restore, :meth:`open` reads up to the end of the prelude first, so a stream that is not
    an archive, or holds another database layout than expected, is refused before any byte
    reaches the server; those first bytes are then handed out again by :meth:`read`.
    """

    def __init__(self, stream: BinaryIO, *, check_documents: bool = False) -> None:
        self._stream = stream
        self.scanner = ArchiveScanner(check_documents=check_documents)
        self._head = b""
        self.at_end = False  # the underlying stream said end-of-file

    def open(self) -> None:
        head = bytearray()
        while not self.scanner.prelude_done:
            chunk = self._stream.read(_CHUNK)
            if not chunk:
                self.scanner.check_complete()  # always raises here: empty, or only part of a prelude
            self.scanner.feed(chunk)
            head += chunk
        self._head = bytes(head)

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        chunk = self._stream.read(size)
        if chunk:
            self.scanner.feed(chunk)
        elif size:
            self.at_end = True
        return chunk
