"""Walking ClickHouse's Native format block by block, without a server.

``clickhouse-client ... FORMAT Native`` writes blocks: the number of columns and of rows
(LEB128 ``VarUInt``), then per column its name, its type (length-prefixed strings) and its
values in the type's bulk binary layout; the client writes no block info and no empty blocks.
The walker reads every block's header and steps over each column's values, which needs the
byte layout of each type. It knows the types a backup of ordinary tables holds (numbers,
strings, dates, decimals, enums, UUIDs, Nullable, Array, Tuple, LowCardinality); on any other
type (AggregateFunction, ...) it stops stepping and says so, having checked the headers up to
there. What it proves: the stream is made of well-formed blocks with one set of columns,
ending exactly at a block boundary, and how many rows it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

_CHUNK = 1024 * 1024
_MAX_COLUMNS = 100_000
_MAX_ROWS = 1 << 40
_MAX_NAME = 1 << 20
_FIXED_SIZES = {
    "UInt8": 1, "Int8": 1, "Enum8": 1, "Bool": 1,
    "UInt16": 2, "Int16": 2, "Enum16": 2, "Date": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "DateTime": 4, "IPv4": 4, "Date32": 4, "Decimal32": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
}  # fmt: skip
_INTERVAL = re.compile(r"Interval[A-Za-z]+")
# LowCardinality's per-granule flags (DataTypeLowCardinality.cpp).
_NEED_GLOBAL_DICTIONARY = 1 << 8
_HAS_ADDITIONAL_KEYS = 1 << 9
_LOW_CARDINALITY_VERSION = 1  # SharedDictionariesWithAdditionalKeys


class NativeError(Exception):
    """The bytes are not a well-formed Native stream."""


class Unsupported(Exception):
    """A type whose byte layout the walker does not know."""


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class DataType:
    name: str
    args: tuple[str, ...] = ()  # raw argument texts, e.g. ("18", "4") or ("'a' = 1", "'b' = 2")

    def inner(self, index: int = 0) -> DataType:
        return parse_type(self.args[index])

    def __str__(self) -> str:
        return f"{self.name}({', '.join(self.args)})" if self.args else self.name


def _split_arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments, respecting quotes and parentheses."""
    parts, depth, quote, start, index = [], 0, "", 0, 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise NativeError(f"unbalanced parentheses in type arguments {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
        index += 1
    if quote or depth:
        raise NativeError(f"unterminated type arguments {text!r}")
    parts.append(text[start:].strip())
    return parts


def parse_type(text: str) -> DataType:
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*", text, re.DOTALL)
    if not match:
        raise NativeError(f"not a data type: {text[:100]!r}")
    arguments = match.group(2)
    return DataType(match.group(1), tuple(_split_arguments(arguments)) if arguments is not None else ())


def _fixed_size(data_type: DataType) -> int | None:
    name = data_type.name
    if name == "FixedString":
        size = int(data_type.args[0]) if data_type.args and data_type.args[0].isdigit() else 0
        if not 0 < size <= _MAX_NAME:
            raise NativeError(f"bad type {data_type}")
        return size
    if name == "Decimal":
        precision = int(data_type.args[0]) if data_type.args and data_type.args[0].isdigit() else 0
        if not 0 < precision <= 76:
            raise NativeError(f"bad type {data_type}")
        return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    if _INTERVAL.fullmatch(name):
        return 8
    return _FIXED_SIZES.get(name)


class _Reader:
    """Buffered reads and skips over a source, counting the bytes consumed."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._buffer = b""
        self._position = 0
        self.consumed = 0

    def _fill(self) -> bool:
        chunk = self._source.read(_CHUNK)
        if not chunk:
            return False
        self._buffer = self._buffer[self._position :] + chunk
        self._position = 0
        return True

    def at_end(self) -> bool:
        return self._position >= len(self._buffer) and not self._fill()

    def read(self, size: int) -> bytes:
        while len(self._buffer) - self._position < size:
            if not self._fill():
                raise NativeError(f"the stream ends in the middle of a block (at byte {self.consumed})")
        data = self._buffer[self._position : self._position + size]
        self._position += size
        self.consumed += size
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            available = len(self._buffer) - self._position
            if available == 0 and not self._fill():
                raise NativeError(f"the stream ends in the middle of a block (at byte {self.consumed})")
            step = min(size, len(self._buffer) - self._position)
            self._position += step
            self.consumed += step
            size -= step

    def varuint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            if self._position >= len(self._buffer) and not self._fill():
                raise NativeError(f"the stream ends in the middle of a block (at byte {self.consumed})")
            byte = self._buffer[self._position]
            self._position += 1
            self.consumed += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise NativeError(f"a malformed variable-length number at byte {self.consumed}")

    def uint64(self) -> int:
        return int.from_bytes(self.read(8), "little")

    def string(self, limit: int = _MAX_NAME) -> bytes:
        length = self.varuint()
        if length > limit:
            raise NativeError(f"a name of {length} bytes at byte {self.consumed}: not a Native block")
        return self.read(length)


@dataclass
class NativeSummary:
    blocks: int = 0
    rows: int = 0
    columns: list[tuple[str, str]] = field(default_factory=list)
    #: Empty when every block was walked to its end; else why the walk stopped early.
    stopped: str = ""


def walk(source: Source) -> NativeSummary:
    """Walk every block of a Native stream; raise :class:`NativeError` if it is malformed."""
    reader = _Reader(source)
    summary = NativeSummary()
    while not reader.at_end():
        columns = reader.varuint()
        rows = reader.varuint()
        if not 0 < columns <= _MAX_COLUMNS or rows > _MAX_ROWS:
            raise NativeError(f"block {summary.blocks + 1} claims {columns} columns and {rows} rows")
        header: list[tuple[str, str]] = []
        for _ in range(columns):
            name = reader.string().decode("utf-8", "replace")
            type_text = reader.string().decode("utf-8", "replace")
            header.append((name, type_text))
            try:
                data_type = parse_type(type_text)
                _prefix(reader, data_type)
                _values(reader, data_type, rows)
            except Unsupported as exc:
                summary.blocks += 1
                summary.columns = summary.columns or header
                summary.stopped = f"not walked past block {summary.blocks}, column {name!r}: {exc}"
                return summary
        if summary.blocks and header != summary.columns:
            raise NativeError(f"block {summary.blocks + 1} has other columns than the first block")
        summary.columns = header
        summary.blocks += 1
        summary.rows += rows
    return summary


def _prefix(reader: _Reader, data_type: DataType) -> None:
    """The per-block serialization prefix a type writes before its values."""
    name = data_type.name
    if name == "LowCardinality":
        version = reader.uint64()
        if version != _LOW_CARDINALITY_VERSION:
            raise NativeError(f"unknown LowCardinality serialization version {version}")
    elif name in ("Nullable", "Array"):
        _prefix(reader, data_type.inner())
    elif name == "Tuple":
        for index in range(len(data_type.args)):
            _prefix(reader, data_type.inner(index))


def _values(reader: _Reader, data_type: DataType, rows: int) -> None:
    name = data_type.name
    size = _fixed_size(data_type)
    if size is not None:
        reader.skip(size * rows)
    elif name == "String":
        for _ in range(rows):
            reader.skip(reader.varuint())
    elif name == "Nullable":
        null_map = reader.read(rows)
        if null_map.translate(None, b"\x00\x01"):
            raise NativeError(
                f"a Nullable column's null map holds bytes other than 0 and 1 (byte {reader.consumed})"
            )
        _values(reader, data_type.inner(), rows)
    elif name == "Array":
        offsets = reader.read(8 * rows)
        total = int.from_bytes(offsets[-8:], "little") if rows else 0
        first = int.from_bytes(offsets[:8], "little") if rows else 0
        if total > _MAX_ROWS or first > total:
            raise NativeError(f"an Array column's offsets are not increasing (byte {reader.consumed})")
        _values(reader, data_type.inner(), total)
    elif name == "Tuple":
        for index in range(len(data_type.args)):
            _values(reader, data_type.inner(index), rows)
    elif name == "LowCardinality":
        _low_cardinality(reader, data_type, rows)
    else:
        raise Unsupported(f"the layout of type {data_type} is not known to the walker")


def _low_cardinality(reader: _Reader, data_type: DataType, rows: int) -> None:
    """Native writes one granule per block: flags, the block's own dictionary keys, indexes."""
    if rows == 0:
        return
    flags = reader.uint64()
    index_type = flags & 0xFF
    if index_type > 3 or flags & _NEED_GLOBAL_DICTIONARY:
        raise NativeError(f"unexpected LowCardinality flags {flags:#x} (byte {reader.consumed})")
    if flags & _HAS_ADDITIONAL_KEYS:
        keys = reader.uint64()
        if keys > _MAX_ROWS:
            raise NativeError(f"a LowCardinality dictionary of {keys} keys (byte {reader.consumed})")
        dictionary_type = data_type.inner()
        if dictionary_type.name == "Nullable":  # the dictionary holds the values, not the NULLs
            dictionary_type = dictionary_type.inner()
        _values(reader, dictionary_type, keys)
    indexes = reader.uint64()
    if indexes != rows:
        raise NativeError(f"a LowCardinality column has {indexes} indexes for {rows} rows")
    reader.skip(indexes << index_type)
