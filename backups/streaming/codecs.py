"""Streaming compression: gzip (zlib, RFC 1952) and zstd (zstandard frames with checksums).

Both produce files the standard tools read (``gunzip``, ``zstd -d``). Decompression detects a
truncated stream and trailing garbage, which a plain ``read()`` loop would miss.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import threading
import zlib
from collections.abc import Generator
from typing import BinaryIO, Protocol

import zstandard

COMPRESSIONS = ("gzip", "zstd", "none")
EXTENSIONS = {"gzip": ".gz", "zstd": ".zst", "none": ""}
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


class CodecError(Exception):
    """The compressed stream is damaged, truncated or not of the expected kind."""


class Transform(Protocol):
    def update(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _Identity:
    def update(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Gzip:
    def __init__(self, level: int) -> None:
        self._obj = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip header and trailer

    def update(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


class _Zstd:
    def __init__(self, level: int) -> None:
        self._obj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()

    def update(self, data: bytes) -> bytes:
        return bytes(self._obj.compress(data))

    def finish(self) -> bytes:
        return bytes(self._obj.flush())


def compressor(name: str) -> Transform:
    if name == "gzip":
        return _Gzip(GZIP_LEVEL)
    if name == "zstd":
        return _Zstd(ZSTD_LEVEL)
    if name == "none":
        return _Identity()
    raise CodecError(f"unknown compression {name!r}; use one of {', '.join(COMPRESSIONS)}")


def _gunzip(source: BinaryIO, chunk_size: int) -> Generator[bytes, None, None]:
    """Decompress gzip members one after another; no call yields more than ``chunk_size``."""
    decoder = zlib.decompressobj(31)
    pending, started = b"", False
    while True:
        if not pending:
            pending = source.read(chunk_size)
            if not pending:
                break
            started = True
        if decoder.eof:  # another member follows the one just finished
            decoder = zlib.decompressobj(31)
        try:
            out = decoder.decompress(pending, chunk_size)
        except zlib.error as exc:
            raise CodecError(f"the gzip stream is damaged: {exc}") from None
        pending = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
        if out:
            yield out
    if not started:
        raise CodecError("the gzip stream is empty")
    if not decoder.eof:
        raise CodecError("the gzip stream is truncated (it ends before its last member does)")


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _is_zstd_frame(data: bytes) -> bool:
    """A zstd frame, or a skippable frame (magic 0x184D2A50-0x184D2A5F, little-endian)."""
    return data[:4] == _ZSTD_MAGIC or (
        len(data) >= 4 and data[1:4] == b"\x2a\x4d\x18" and data[0] & 0xF0 == 0x50
    )


def _unzstd(source: BinaryIO, chunk_size: int) -> Generator[bytes, None, None]:
    """Decompress zstd with the standard ``zstd`` tool.

    python-zstandard's streaming readers accept a truncated frame without complaint and its
    decompressobj has no output bound (one MiB of zeros' frames expands to GiBs), so the tool
    does it: bounded memory, frame checksums checked, truncation reported.
    """
    process = subprocess.Popen(
        ["zstd", "-d", "-c", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    fed: list[int] = [0]
    failure: list[BaseException] = []

    def feed() -> None:
        assert process.stdin is not None
        try:
            while data := source.read(chunk_size):
                if fed[0] == 0 and not _is_zstd_frame(data):
                    # The tool would also decode gzip/xz by sniffing; this must be zstd only.
                    raise CodecError("not a zstd stream (the data does not start with a zstd frame)")
                fed[0] += len(data)
                process.stdin.write(data)
        except BrokenPipeError:
            pass  # zstd stopped reading: its exit status tells why
        except BaseException as exc:
            failure.append(exc)
        finally:
            with contextlib.suppress(OSError):
                process.stdin.close()

    feeder = threading.Thread(target=feed, name="zstd-feeder", daemon=True)
    feeder.start()
    finished = False
    try:
        while out := process.stdout.read(chunk_size):
            yield out
        finished = True
    finally:
        if not finished:
            process.kill()
        feeder.join()
        process.stdout.close()
        errors = process.stderr.read().decode(errors="replace").strip()
        process.stderr.close()
        code = process.wait()
    if failure:
        raise failure[0]
    if fed[0] == 0:
        raise CodecError("the zstd stream is empty")
    if code != 0:
        detail = errors.splitlines()[-1] if errors else f"zstd exited with status {code}"
        raise CodecError(f"the zstd stream is damaged or truncated: {detail}")


def _plain(source: BinaryIO, chunk_size: int) -> Generator[bytes, None, None]:
    while data := source.read(chunk_size):
        yield data


class DecompressingReader(io.RawIOBase):
    """A readable stream of the decompressed bytes of ``source``, in bounded memory.

    Reaching the end raises :class:`CodecError` if the compressed stream was truncated,
    damaged or followed by garbage. Close it before reading ``source`` yourself again.
    """

    def __init__(self, source: BinaryIO, compression: str, chunk_size: int = 1024 * 1024) -> None:
        decoders = {"gzip": _gunzip, "zstd": _unzstd, "none": _plain}
        if compression not in decoders:
            raise CodecError(f"unknown compression {compression!r}")
        self._chunks = decoders[compression](source, chunk_size)
        self._chunk_size = chunk_size
        self._buffer = memoryview(b"")
        self.raw_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buffer:
            self._buffer = memoryview(next(self._chunks, b""))
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        self.raw_bytes += size
        return size

    def drain(self) -> int:
        """Read to the end (checking the stream) and return the total decompressed size."""
        while self.read(self._chunk_size):
            pass
        return self.raw_bytes

    def close(self) -> None:
        self._chunks.close()  # stops a decoder process and its feeder thread
        super().close()
