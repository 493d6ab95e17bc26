"""The mysqldump file format, as far as Backupsite relies on it: the header a dump starts with,
the ``-- Dump completed`` trailer mysqldump writes only on success, and statement counts; read
chunk by chunk, holding only a few bytes of the stream."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import BinaryIO

from backups.engines.base import EngineError

_CHUNK = 1024 * 1024
_HEAD_BYTES = 4096


class NotADump(EngineError):
    """The stream is not a mysqldump file; nothing was restored."""


def read_head(stream: BinaryIO, size: int = _HEAD_BYTES) -> bytes:
    """At least ``size`` bytes from the start of ``stream`` (fewer only at its end)."""
    head = b""
    while len(head) < size:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        head += chunk
    return head


class DumpScanner:
    """Follows a mysqldump stream chunk by chunk: header, trailer, size and statement counts,
    holding only a few bytes of it."""

    STATEMENTS = {b"\nCREATE TABLE ": "CREATE TABLE", b"\nINSERT INTO ": "INSERT"}
    HEADERS = (b"-- MariaDB dump", b"-- MySQL dump")

    def __init__(self, check_text: bool) -> None:
        self.size = 0
        self.header = ""
        self._tail = b""
        self._check_text = check_text
        self._decoder: codecs.IncrementalDecoder | None = None
        self.statements = dict.fromkeys(self.STATEMENTS.values(), 0)

    def begin(self, head: bytes) -> None:
        """Check the first bytes (at least the first few KiB, see :func:`read_head`), then feed them."""
        if not head:
            raise NotADump("the backup is empty: there is no dump to restore")
        for line in head.split(b"\n", 3)[:3]:
            if line.startswith(self.HEADERS):
                self.header = line[3:].decode("utf-8", "replace").strip()
                break
            if not line.startswith(b"/*"):  # MariaDB may open with "/*M!999999\- enable the sandbox mode */"
                break
        if not self.header:
            raise NotADump(
                "not a mysqldump/mariadb-dump file (no '-- MySQL dump' or '-- MariaDB dump' header)"
            )
        names = re.search(rb"SET NAMES (\w+)", head[:_HEAD_BYTES])
        if self._check_text and names and names.group(1).lower() in (b"utf8mb4", b"utf8", b"utf8mb3"):
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.feed(head)

    def feed(self, chunk: bytes) -> None:
        for pattern, name in self.STATEMENTS.items():
            # A statement split across chunks shows up in neither chunk but in the seam between
            # them; the seam is too short to hold a whole one on either side.
            seam = self._tail[-(len(pattern) - 1) :] + chunk[: len(pattern) - 1]
            self.statements[name] += chunk.count(pattern) + seam.count(pattern)
        if self._check_text:
            if b"\x00" in chunk:
                raise EngineError(f"the dump holds a raw NUL byte near byte {self.size + chunk.index(0)}")
            if self._decoder is not None:
                try:
                    self._decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise EngineError(
                        f"the dump is not valid UTF-8 near byte {self.size + exc.start}: {exc.reason}"
                    ) from None
        self.size += len(chunk)
        self._tail = (self._tail + chunk[-256:])[-256:]

    def check_complete(self) -> None:
        last = self._tail.rstrip().rsplit(b"\n", 1)[-1]
        if not last.startswith(b"-- Dump completed"):
            raise EngineError(
                "the dump is incomplete: it lacks the '-- Dump completed' line mysqldump writes on success"
            )
        if self._decoder is not None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise EngineError("the dump ends inside a UTF-8 character") from None

    def summary(self) -> str:
        return (
            f"{self.header}: complete, {self.statements['CREATE TABLE']} CREATE TABLE and "
            f"{self.statements['INSERT']} INSERT statement(s), {self.size} bytes"
        )


# The comment mysqldump writes before each part of a dump (one table's DROP, CREATE, rows and
# triggers; a view's placeholder or final statement; the events; the routines).
_SECTION = re.compile(
    rb"^-- (Table structure for table|Temporary (?:table|view) structure for view"
    rb"|Final view structure for view|Dumping events for database|Dumping routines for database)"
    rb"(?: `((?:[^`]|``)*)`)?",
    re.MULTILINE,
)
_SECTION_KINDS = {
    b"Table structure for table": "table",
    b"Final view structure for view": "view",
    b"Dumping events for database": "events",
    b"Dumping routines for database": "routines",
}
_MARKER_LINE_MAX = 512  # a longer line (rows) is never a section comment


@dataclass(frozen=True)
class Section:
    line: int  # 1-based, as the client counts in "ERROR ... at line N"
    kind: str  # "table", "view" (also a view's placeholder), "events" or "routines"
    name: str


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class SectionMap:
    """Where each part of a mysqldump file begins, by line, so a failed restore can say which
    tables it had already replaced and which it never reached. Fed chunk by chunk; holds only
    the last incomplete line while it is short."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._lines = 0
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        end = data.rfind(b"\n") + 1
        line, position = self._lines, 0
        for match in _SECTION.finditer(data, 0, end):
            line += data.count(b"\n", position, match.start())
            position = match.start()
            kind = _SECTION_KINDS.get(match.group(1), "view")
            name = (match.group(2) or b"").replace(b"``", b"`").decode("utf-8", "replace")
            self.sections.append(Section(line + 1, kind, name))
        self._lines += data.count(b"\n", 0, end)
        rest = data[end:]
        # A long unfinished line is row data; "#" keeps its tail from looking like a line start.
        self._partial = rest if len(rest) <= _MARKER_LINE_MAX else b"#"

    def progress_at(self, line: int) -> str:
        """What a restore that failed at ``line`` had done to the destination, in words; "" when
        the file has no section comments (not made by mysqldump, or nothing in it)."""
        tables = [s for s in self.sections if s.kind == "table"]
        if not tables:
            return ""
        reached = [s for s in self.sections if s.line <= line]
        if not reached:
            return "it stopped before the first table: no table of the backup was touched"
        current = reached[-1]
        if current.kind != "table":
            part = f"view {current.name}" if current.kind == "view" else f"the {current.kind}"
            return f"all {len(tables)} table(s) had been restored; it stopped at {part}"
        done = [s.name for s in tables if s.line < current.line]
        untouched = [s.name for s in tables if s.line > current.line]
        parts = [f"table(s) restored before the error: {_names(done)}"] if done else []
        parts.append(
            f"the error came in table {current.name}'s part (DROP, CREATE, rows, triggers): it may be "
            "missing, empty or partly restored"
        )
        if untouched:
            parts.append(f"table(s) not reached, left as they were: {_names(untouched)}")
        return "; ".join(parts)


class GuardedDump:
    """The stream fed to the client: refuses anything that does not start like a mysqldump file
    before a byte reaches the server, remembers whether the trailer arrived and where each
    table's part begins (:class:`SectionMap`)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._scanner = DumpScanner(check_text=False)
        self._head: bytes | None = None
        self.sections = SectionMap()

    def open(self) -> None:
        """Read and check the head of the dump (raises :class:`NotADump`)."""
        self._head = read_head(self._stream)
        self._scanner.begin(self._head)

    def read(self, size: int = -1) -> bytes:
        if self._head is None:
            self.open()
        if self._head:
            head, self._head = self._head, b""
            self.sections.feed(head)
            return head
        chunk = self._stream.read(size)
        if chunk:
            self._scanner.feed(chunk)
            self.sections.feed(chunk)
        return chunk

    def check_complete(self) -> None:
        self._scanner.check_complete()
