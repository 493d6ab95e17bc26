"""Streaming compression: our compressors against the system tools, and the decoder's checks."""

from __future__ import annotations

import gzip
import io
import os
import subprocess

import pytest

from backups.streaming.codecs import COMPRESSIONS, CodecError, DecompressingReader, compressor

SAMPLE = b"".join(f"line {i}: {'abc' * (i % 7)} persön 🚀\n".encode() for i in range(20_000)) + os.urandom(
    50_000
)


def compress(data: bytes, name: str, chunk: int = 7_919) -> bytes:
    """Compress through compressor(name), fed in odd-sized chunks like the pipeline does."""
    transform = compressor(name)
    out = bytearray()
    for start in range(0, len(data), chunk):
        out += transform.update(data[start : start + chunk])
    out += transform.finish()
    return bytes(out)


def decompress(data: bytes, name: str, chunk_size: int = 4_096, read_size: int = 1_000) -> bytes:
    reader = DecompressingReader(io.BytesIO(data), name, chunk_size=chunk_size)
    out = bytearray()
    while block := reader.read(read_size):
        out += block
    return bytes(out)


def system_tool(*args: str, data: bytes) -> bytes:
    result = subprocess.run(list(args), input=data, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_it_round_trips_data_through_each_compression(name: str) -> None:
    packed = compress(SAMPLE, name)
    assert decompress(packed, name) == SAMPLE


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_it_round_trips_with_tiny_source_chunks_and_reads(name: str) -> None:
    data = SAMPLE[:30_000]
    assert decompress(compress(data, name, chunk=13), name, chunk_size=5, read_size=3) == data


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_actually_compresses_compressible_data(name: str) -> None:
    data = b"backupsite " * 100_000
    assert len(compress(data, name)) < len(data) // 20


def test_it_passes_bytes_through_unchanged_with_none() -> None:
    assert compress(SAMPLE, "none") == SAMPLE


def test_it_counts_decompressed_bytes_in_drain() -> None:
    reader = DecompressingReader(io.BytesIO(compress(SAMPLE, "zstd")), "zstd", chunk_size=10_000)
    assert reader.drain() == len(SAMPLE)
    assert reader.raw_bytes == len(SAMPLE)


def test_it_produces_gzip_that_the_system_gzip_reads() -> None:
    assert system_tool("gzip", "-dc", data=compress(SAMPLE, "gzip")) == SAMPLE


def test_it_produces_zstd_that_the_system_zstd_reads() -> None:
    assert system_tool("zstd", "-dc", data=compress(SAMPLE, "zstd")) == SAMPLE


def test_it_produces_zstd_frames_with_a_checksum_the_system_zstd_verifies() -> None:
    packed = bytearray(compress(b"checksummed " * 10_000, "zstd"))
    packed[-1] ^= 0xFF  # the last four bytes are the frame's content checksum
    result = subprocess.run(
        ["zstd", "-dc"], input=bytes(packed), capture_output=True, timeout=30, check=False
    )
    assert result.returncode != 0
    with pytest.raises(CodecError):
        decompress(bytes(packed), "zstd")


def test_it_reads_gzip_written_by_the_system_gzip() -> None:
    assert decompress(system_tool("gzip", "-c", data=SAMPLE), "gzip") == SAMPLE


def test_it_reads_zstd_written_by_the_system_zstd() -> None:
    assert decompress(system_tool("zstd", "-c", "-q", data=SAMPLE), "zstd") == SAMPLE


def test_it_decodes_every_member_of_a_multi_member_gzip_stream() -> None:
    first, second = SAMPLE[:40_000], SAMPLE[40_000:]
    stream = system_tool("gzip", "-c", data=first) + system_tool("gzip", "-c", data=second)
    assert decompress(stream, "gzip") == SAMPLE
    # Member boundaries falling anywhere relative to the read chunks.
    for chunk_size in (1, 17, 4_096, len(stream)):
        assert decompress(stream, "gzip", chunk_size=chunk_size, read_size=50_000) == SAMPLE


def test_it_decodes_many_small_gzip_members() -> None:
    parts = [f"part {i}\n".encode() for i in range(50)]
    stream = b"".join(gzip.compress(part) for part in parts)
    assert decompress(stream, "gzip", chunk_size=10) == b"".join(parts)


def test_it_decodes_multi_frame_zstd_streams() -> None:
    first, second = SAMPLE[:40_000], SAMPLE[40_000:]
    stream = compress(first, "zstd") + system_tool("zstd", "-c", "-q", data=second)
    assert decompress(stream, "zstd", chunk_size=333) == SAMPLE


@pytest.mark.parametrize("name", ["gzip", "zstd"])
@pytest.mark.parametrize("keep", [0.5, 0.9, -1])
def test_it_reports_a_truncated_stream(name: str, keep: float) -> None:
    packed = compress(SAMPLE, name)
    cut = packed[:-1] if keep == -1 else packed[: int(len(packed) * keep)]
    with pytest.raises(CodecError, match="truncated"):
        decompress(cut, name)


def test_it_reports_a_truncated_second_gzip_member() -> None:
    stream = gzip.compress(b"first member") + gzip.compress(b"second member" * 100)[:-6]
    with pytest.raises(CodecError, match="truncated"):
        decompress(stream, "gzip")


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_rejects_garbage(name: str) -> None:
    garbage = b"this is not a compressed stream at all" * 100
    with pytest.raises(CodecError, match=name):
        decompress(garbage, name)


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_rejects_random_bytes(name: str) -> None:
    with pytest.raises(CodecError):
        decompress(b"\x00\x01" + os.urandom(10_000), name)


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_rejects_trailing_garbage_after_a_complete_stream(name: str) -> None:
    with pytest.raises(CodecError):
        decompress(compress(SAMPLE, name) + b"trailing junk that is not a frame", name)


def test_it_accepts_what_the_zstd_tool_accepts_after_a_zstd_frame() -> None:
    # Known limit: zstd decoding is done by the standard `zstd -dc` tool (bounded memory, frame
    # checksums, truncation detected), which also decodes a gzip member that follows zstd frames.
    # Only the first frame's format is checked here; appended bytes of any kind change the
    # stored file's SHA-256, which verify and restore compare before trusting a backup.
    stream = compress(SAMPLE, "zstd") + gzip.compress(b"appended")
    assert decompress(stream, "zstd") == SAMPLE + b"appended"


def test_it_rejects_a_zstd_frame_after_a_gzip_member() -> None:
    stream = compress(SAMPLE, "gzip") + compress(b"smuggled", "zstd")
    with pytest.raises(CodecError):
        decompress(stream, "gzip")


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_rejects_corrupted_bytes_in_the_middle(name: str) -> None:
    packed = bytearray(compress(SAMPLE, name))
    middle = len(packed) // 2
    packed[middle : middle + 64] = bytes(64)
    with pytest.raises(CodecError):
        decompress(bytes(packed), name)


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_rejects_an_empty_compressed_stream(name: str) -> None:
    with pytest.raises(CodecError, match="empty"):
        decompress(b"", name)


def test_it_allows_an_empty_uncompressed_stream() -> None:
    assert decompress(b"", "none") == b""


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_it_round_trips_an_empty_payload(name: str) -> None:
    packed = compress(b"", name)
    assert packed  # a valid, empty frame is not an empty stream
    assert decompress(packed, name) == b""


def test_it_rejects_an_unknown_compression() -> None:
    with pytest.raises(CodecError, match="brotli"):
        compressor("brotli")
    with pytest.raises(CodecError, match="brotli"):
        DecompressingReader(io.BytesIO(b""), "brotli")


def test_it_does_not_decode_gzip_as_zstd() -> None:
    with pytest.raises(CodecError):
        decompress(compress(SAMPLE, "gzip"), "zstd")


def test_it_decompresses_a_highly_compressible_stream_in_bounded_memory() -> None:
    # 512 MiB of zeros is ~500 KiB of gzip: one read of the compressed stream must not inflate
    # it all at once (a sparse database file looks like this).
    import tracemalloc

    packer = compressor("gzip")
    packed = b"".join(packer.update(bytes(8 * 1024 * 1024)) for _ in range(64)) + packer.finish()
    assert len(packed) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        total = DecompressingReader(io.BytesIO(packed), "gzip", 1024 * 1024).drain()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 512 * 1024 * 1024
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
