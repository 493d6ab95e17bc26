"""The mysqldump file format, as far as Backupsite relies on it: the header a dump starts with,
the ``-- Dump completed`` trailer mysqldump writes only on success, and statement counts; read
chunk by chunk, holding only a few bytes of the stream."""

from __future__ import annotations

import codecs
import re
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


class GuardedDump:
    """The stream fed to the client: refuses anything that does not start like a mysqldump file
    before a byte reaches the server, and remembers whether the trailer arrived."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._scanner = DumpScanner(check_text=False)
        self._head: bytes | None = None

    def open(self) -> None:
        """Read and check the head of the dump (raises :class:`NotADump`)."""
        self._head = read_head(self._stream)
        self._scanner.begin(self._head)

    def read(self, size: int = -1) -> bytes:
        if self._head is None:
            self.open()
        if self._head:
            head, self._head = self._head, b""
            return head
        chunk = self._stream.read(size)
        if chunk:
            self._scanner.feed(chunk)
        return chunk

    def check_complete(self) -> None:
        self._scanner.check_complete()
