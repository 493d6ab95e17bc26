"""What the Redis engine knows about the RDB format: its header, its end, and what
``redis-check-rdb`` reports.

An RDB snapshot starts with ``REDIS`` and four ASCII digits (the format version, 0010 for Redis
7.0) and ends with the EOF opcode 0xFF followed by an 8-byte CRC64 (zeros when the server runs
with ``rdbchecksum no``). Every format since version 5 (Redis 2.6) has that checksum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO

from backups.engines.base import EngineError

MAGIC = b"REDIS"
HEADER_SIZE = 9  # "REDIS" + 4 digits
EOF_OPCODE = 0xFF
TRAILER_SIZE = 9  # EOF opcode + CRC64
#: What ``redis-cli --rdb -`` appends after the snapshot when the server streams it "diskless"
#: (``repl-diskless-sync yes``, the default since Redis 7.0): the 40 random hex characters that
#: delimit the transfer. Written to a file, redis-cli truncates them away; a pipe cannot be
#: truncated, so they reach its stdout.
EOF_MARK_SIZE = 40
_HEX = frozenset(b"0123456789abcdef")
_CHUNK = 1024 * 1024


def header_version(header: bytes) -> int | None:
    """The RDB format version of a snapshot that starts with ``header``, or None if it is not one."""
    if len(header) >= HEADER_SIZE and header.startswith(MAGIC) and header[5:HEADER_SIZE].isdigit():
        return int(header[5:HEADER_SIZE])
    return None


def read_header(stream: BinaryIO) -> tuple[bytes, int]:
    """The first bytes of ``stream`` and its RDB version; :class:`EngineError` for anything else."""
    header = b""
    while len(header) < HEADER_SIZE:
        chunk = stream.read(HEADER_SIZE - len(header))
        if not chunk:
            break
        header += chunk
    version = header_version(header)
    if version is None:
        what = "it is empty" if not header else "it does not start with the REDIS signature"
        raise EngineError(f"this is not a Redis RDB snapshot: {what}")
    if version < 5:
        raise EngineError(
            f"RDB format version {version} (before Redis 2.6) has no checksum and is not supported"
        )
    return header, version


class GuardedSnapshot:
    """Passes ``redis-cli --rdb -`` output through, holding back its last bytes until the end.

    At the end the held-back tail tells which of the two transfer modes ran, without any
    ambiguity: a snapshot read whole ends with 0xFF and 8 checksum bytes; a diskless transfer
    ends with 0xFF, 8 checksum bytes and the 40-hex-character mark, which is dropped. (The mark's
    last 9 bytes are hex characters, so they never start with 0xFF; and a whole snapshot cannot
    end with 40 hex characters, because its 9th byte from the end is 0xFF.) Anything else is a
    truncated or foreign stream: :meth:`check` says so after the tool's exit status was checked
    (an empty stream is usually a login failure that redis-cli explains better).
    """

    _HOLD = TRAILER_SIZE + EOF_MARK_SIZE

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._held = b""  # the last bytes read, not passed on yet
        self._ready = b""  # bytes to pass on
        self._eof = False
        self.head = b""  # the first bytes passed on (for the header check)
        self.passed = 0  # bytes handed to the reader
        self.mark_dropped = False
        self.problem = ""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        while not self._ready and not self._eof:
            chunk = self._raw.read(max(size, _CHUNK // 16))
            if not chunk:
                self._ready = self._finish()
                break
            data = self._held + chunk
            if len(data) > self._HOLD:
                self._held, self._ready = data[-self._HOLD :], data[: -self._HOLD]
            else:
                self._held = data
        out, self._ready = self._ready[:size], self._ready[size:]
        if len(self.head) < HEADER_SIZE:
            self.head += out[: HEADER_SIZE - len(self.head)]
        self.passed += len(out)
        return out

    def readable(self) -> bool:
        return True

    def _finish(self) -> bytes:
        """The tail to pass on, once the tool's output has ended (its mark dropped)."""
        self._eof = True
        tail, self._held = self._held, b""
        everything = len(tail) + self.passed + len(self._ready)
        if everything >= TRAILER_SIZE + EOF_MARK_SIZE + HEADER_SIZE and self._is_marked(tail):
            tail = tail[:-EOF_MARK_SIZE]
            self.mark_dropped = True
        elif len(tail) < TRAILER_SIZE or tail[-TRAILER_SIZE] != EOF_OPCODE:
            self.problem = (
                "the server sent no data"
                if not everything
                else f"the snapshot is incomplete: it does not end with the RDB end marker ({everything} bytes)"
            )
        return tail

    @staticmethod
    def _is_marked(tail: bytes) -> bool:
        mark = tail[-EOF_MARK_SIZE:]
        return tail[-EOF_MARK_SIZE - TRAILER_SIZE] == EOF_OPCODE and all(byte in _HEX for byte in mark)

    def check(self, announced_size: int | None) -> int:
        """The snapshot's RDB version; :class:`EngineError` unless the stream was a whole snapshot
        (of ``announced_size`` bytes, when redis-cli said how many)."""
        if not self._eof:
            raise EngineError("the snapshot was not read to its end")
        if self.problem:
            raise EngineError(self.problem)
        version = header_version(self.head)
        if version is None:
            raise EngineError("redis-cli's output is not a Redis RDB snapshot (no REDIS signature)")
        if announced_size is not None and announced_size != self.passed:
            raise EngineError(
                f"redis-cli announced a snapshot of {announced_size} bytes but delivered {self.passed}"
            )
        return version


# -- redis-cli and redis-check-rdb output ---------------------------------------------------------

_ANNOUNCED = (
    re.compile(r"Transfer finished with success after (\d+) bytes"),  # diskless: the mark was stripped
    re.compile(r"SYNC sent to master, writing (\d+) bytes to"),  # disk-based: the size came first
)


def announced_size(lines: list[str]) -> int | None:
    """The snapshot size redis-cli's messages state, if they state one."""
    size = None
    for line in lines:
        for pattern in _ANNOUNCED:
            if match := pattern.search(line):
                size = int(match.group(1))
    return size


@dataclass(frozen=True)
class CheckReport:
    """The counts ``redis-check-rdb`` prints after reading a whole snapshot."""

    keys: int
    expires: int
    already_expired: int
    size: int  # where the snapshot ended (its EOF opcode and checksum included)

    @classmethod
    def parse(cls, lines: list[str]) -> CheckReport:
        found: dict[str, int] = {}
        for line in lines:
            if match := re.fullmatch(r"\[info\] (\d+) (keys read|expires|already expired)", line.strip()):
                found[match.group(2)] = int(match.group(1))
            elif match := re.match(r"\[offset (\d+)\] \\o/ RDB looks OK", line.strip()):
                found["size"] = int(match.group(1))
        if len(found) != 4:
            raise EngineError("redis-check-rdb did not report its counts: " + " | ".join(lines[-6:]))
        return cls(found["keys read"], found["expires"], found["already expired"], found["size"])


def check_rdb_error(lines: list[str]) -> str:
    """The part of redis-check-rdb's output that explains a failure."""
    if any("RDB ERROR DETECTED" in line for line in lines):
        start = next(i for i, line in enumerate(lines) if "RDB ERROR DETECTED" in line) + 1
        detail = [line for line in lines[start:] if not line.startswith("[info]")]
        return " | ".join(detail[:4])
    return " | ".join(lines[-4:])
