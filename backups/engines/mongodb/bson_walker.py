"""Just enough BSON (https://bsonspec.org) to check mongodump's output without a MongoDB
client library: walk a document, check every length, terminator and type all the way down, and
read the top-level scalars of the archive's own header documents."""

from __future__ import annotations

import struct

MIN_DOCUMENT = 5  # an empty document: its length (4 bytes) and the closing NUL
MAX_DEPTH = 200
_FIXED_SIZES = {
    0x01: 8,  # double
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0x7F: 0,  # max key
    0xFF: 0,  # min key
}
_STRINGS = (0x02, 0x0D, 0x0E)  # string, JavaScript code, symbol


class BSONError(ValueError):
    """A malformed BSON document (turned into an :class:`EngineError` saying where it was)."""


_INT32 = struct.Struct("<i")


def _int32(data: bytes, pos: int) -> int:
    return int(_INT32.unpack_from(data, pos)[0])


def parse_document(data: bytes, *, decode: bool = True) -> dict[str, object]:
    """Check that ``data`` is exactly one well-formed BSON document, all the way down, and return
    its top-level strings, booleans, integers and doubles (other values map to None)."""
    fields: dict[str, object] | None = {} if decode else None
    end = _walk(data, 0, len(data), fields, 0)
    if end != len(data):
        raise BSONError(f"{len(data) - end} stray byte(s) after the document")
    return fields or {}


def _walk(data: bytes, start: int, limit: int, fields: dict[str, object] | None, depth: int) -> int:
    """Validate the document at ``start`` (which must end by ``limit``); return where it ends."""
    if depth > MAX_DEPTH:
        raise BSONError(f"documents nested more than {MAX_DEPTH} deep")
    if limit - start < MIN_DOCUMENT:
        raise BSONError("truncated document")
    size = _int32(data, start)
    end = start + size
    if size < MIN_DOCUMENT or end > limit:
        raise BSONError(f"a document length of {size} bytes does not fit")
    if data[end - 1] != 0:
        raise BSONError("a document does not end with a NUL byte")
    pos = start + 4
    last = end - 1  # the document's closing NUL: every element ends by it
    while True:
        kind = data[pos]
        if kind == 0:
            if pos != last:
                raise BSONError("a document ends before its stated length")
            return end
        key_end = data.find(b"\x00", pos + 1, last)
        if key_end < 0:
            raise BSONError("a field name is not terminated")
        value_start = key_end + 1
        # The common types inline: this loop runs for every value of every document.
        fixed = _FIXED_SIZES.get(kind)
        if fixed is not None:
            next_pos = value_start + fixed
        elif kind == 0x02 and value_start + 4 <= last:
            length = _int32(data, value_start)
            next_pos = value_start + 4 + length
            if length < 1 or next_pos > last or data[next_pos - 1] != 0:
                raise BSONError("a string has a bad length or no closing NUL")
        else:
            next_pos = _skip_value(data, kind, value_start, last, depth)
        if next_pos > last:
            raise BSONError(f"a value of BSON type 0x{kind:02x} runs past the end of its document")
        if fields is not None:
            fields[data[pos + 1 : key_end].decode("utf-8", "replace")] = _decode(
                data, kind, value_start, next_pos
            )
        pos = next_pos


def _skip_value(data: bytes, kind: int, pos: int, limit: int, depth: int) -> int:
    """The end of the value of type ``kind`` at ``pos``, which must end by ``limit`` (the types
    :func:`_walk` does not handle inline)."""
    if kind == 0x08:
        end = pos + 1
        if end <= limit and data[pos] not in (0, 1):
            raise BSONError(f"a boolean holds {data[pos]}")
    elif kind in _STRINGS:
        end = _skip_string(data, pos, limit)
    elif kind in (0x03, 0x04):
        end = _walk(data, pos, limit, None, depth + 1)
    elif kind == 0x05:
        if pos + 5 > limit or (length := _int32(data, pos)) < 0:
            raise BSONError("a binary value has a bad length")
        end = pos + 5 + length
    elif kind == 0x0B:  # regular expression: pattern and flags, two C strings
        end = pos
        for _ in range(2):
            found = data.find(b"\x00", end, limit)
            if found < 0:
                raise BSONError("a regular expression is not terminated")
            end = found + 1
    elif kind == 0x0C:  # DBPointer: string and ObjectId
        end = _skip_string(data, pos, limit) + 12
    elif kind == 0x0F:  # code with scope: total length, string, document
        if pos + 4 > limit:
            raise BSONError("truncated code with scope")
        end = pos + _int32(data, pos)
        inner = _walk(data, _skip_string(data, pos + 4, limit), limit, None, depth + 1)
        if inner != end:
            raise BSONError("a code-with-scope length does not match its parts")
    else:
        raise BSONError(f"unknown BSON type 0x{kind:02x}")
    if end > limit:
        raise BSONError(f"a value of BSON type 0x{kind:02x} runs past the end of its document")
    return end


def _skip_string(data: bytes, pos: int, limit: int) -> int:
    if pos + 4 > limit:
        raise BSONError("truncated string")
    length = _int32(data, pos)
    end = pos + 4 + length
    if length < 1 or end > limit or data[end - 1] != 0:
        raise BSONError("a string has a bad length or no closing NUL")
    return end


def _decode(data: bytes, kind: int, start: int, end: int) -> object:
    if kind == 0x02:
        try:
            return data[start + 4 : end - 1].decode("utf-8")
        except UnicodeDecodeError:
            raise BSONError("a string is not valid UTF-8") from None
    if kind == 0x08:
        return data[start] == 1
    if kind in (0x10, 0x12):
        return int.from_bytes(data[start:end], "little", signed=True)
    if kind == 0x01:
        return float(struct.unpack("<d", data[start:end])[0])
    return None
