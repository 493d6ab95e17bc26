"""BSON (https://bsonspec.org) for the archive scanner, by pymongo's ``bson`` (its C extension):
check that one document is well-formed all the way down, and read the top-level scalars of the
archive's own header documents. The scanner hands over one document at a time (at most 16 MiB),
so memory stays bounded by one decoded document."""

from __future__ import annotations

import ast
import re
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import InvalidBSON

MIN_DOCUMENT = 5  # an empty document: its length (4 bytes) and the closing NUL

# The archive's own headers, which the scanner reads: their strings must be UTF-8.
_HEADERS: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)
# The collections' documents, checked as mongorestore takes them: a date outside Python's years
# 1-9999 and a string that is not valid UTF-8 (stored as the server got it) are no damage.
_DOCUMENTS: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS, unicode_decode_error_handler="surrogateescape"
)
_UNKNOWN_TYPE = re.compile(r"unknown BSON type (b'(?:[^'\\]|\\.)+'|b\"[^\"]+\") for fieldname '(.*)'\.")


class BSONError(ValueError):
    """A malformed BSON document (turned into an :class:`EngineError` saying where it was)."""


def parse_document(data: bytes, *, decode: bool = True) -> dict[str, object]:
    """Check that ``data`` is exactly one well-formed BSON document, all the way down, and return
    its top-level strings, booleans, integers and doubles (other values map to None)."""
    try:
        document = bson.decode(data, _HEADERS if decode else _DOCUMENTS)
    except InvalidBSON as exc:
        raise BSONError(_message(str(exc))) from None
    if not decode:
        return {}
    return {key: _scalar(value) for key, value in document.items()}


def _scalar(value: object) -> object:
    if isinstance(value, bool | float) or type(value) is str:  # not Code, a str subclass
        return value
    if isinstance(value, int):  # also Int64
        return int(value)
    return None


def _message(text: str) -> str:
    """pymongo's message, with an unknown type named as in the BSON specification."""
    unknown = _UNKNOWN_TYPE.search(text)
    if unknown:
        kind = ast.literal_eval(unknown[1])
        return f"unknown BSON type 0x{kind[0]:02x} (field {unknown[2]!r})"
    return f"invalid BSON: {text}"
