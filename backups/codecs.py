"""Streaming compression: gzip (zlib, RFC 1952) and zstd (zstandard frames with checksums).

Both produce files the standard tools read (``gunzip``, ``zstd -d``). Decompression detects a
truncated stream and trailing garbage, which a plain ``read()`` loop would miss.
"""

from __future__ import annotations

import io
import zlib
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


class _Decoder:
    """One-frame decoder state for a multi-frame (multi-member) stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._obj = self._new()
        self.started = False

    def _new(self) -> zlib._Decompress | zstandard.ZstdDecompressionObj:
        if self.name == "gzip":
            return zlib.decompressobj(31)
        return zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            if self._obj.eof:
                self._obj = self._new()
            self.started = True
            try:
                out += self._obj.decompress(data)
            except (zlib.error, zstandard.ZstdError) as exc:
                raise CodecError(f"the {self.name} stream is damaged: {exc}") from None
            data = self._obj.unused_data if self._obj.eof else b""
        return bytes(out)

    def close(self) -> None:
        if not self.started:
            raise CodecError(f"the {self.name} stream is empty")
        if not self._obj.eof:
            raise CodecError(f"the {self.name} stream is truncated (it ends before its last frame does)")


class DecompressingReader(io.RawIOBase):
    """A readable stream of the decompressed bytes of ``source``."""

    def __init__(self, source: BinaryIO, compression: str, chunk_size: int = 1024 * 1024) -> None:
        if compression not in COMPRESSIONS:
            raise CodecError(f"unknown compression {compression!r}")
        self._source = source
        self._decoder = None if compression == "none" else _Decoder(compression)
        self._chunk_size = chunk_size
        self._buffer = b""
        self._done = False
        self.raw_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer and not self._done:
            chunk = self._source.read(self._chunk_size)
            if not chunk:
                self._done = True
                if self._decoder is not None:
                    self._decoder.close()
                break
            self._buffer = chunk if self._decoder is None else self._decoder.feed(chunk)
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
