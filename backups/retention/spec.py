"""The command-line forms of retention input: a ``--policy`` spec and a file of timestamps.
Pure Python, no Django; errors name what to fix."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from backups.retention.policy import COUNT_RULES

WHOLE_NUMBERS = (*COUNT_RULES, "retention_days", "max_backups", "min_keep")
LISTS = ("tiers", "rules")


class SpecError(ValueError):
    """Bad ``--policy`` or timestamps input; the message names the key or line."""


def parse_spec(spec: str) -> dict[str, Any]:
    """``keep_last=3,keep_daily=7,tiers=15min:24h;1h:72h,rules=3.1;2.15`` -> a policy mapping
    (validated afterwards by :meth:`Policy.from_mapping`)."""
    mapping: dict[str, Any] = {}
    for part in (piece.strip() for piece in spec.split(",")):
        if not part:
            continue
        key, equals, value = (text.strip() for text in part.partition("="))
        if not equals or not key or not value:
            raise SpecError(f"{part!r}: write key=value, e.g. keep_daily=7")
        if key in mapping:
            raise SpecError(f"{key}: given twice")
        if key in WHOLE_NUMBERS:
            try:
                mapping[key] = int(value)
            except ValueError:
                raise SpecError(f"{key}: must be a whole number, e.g. {key}=7 (got {value!r})") from None
        elif key in LISTS:
            mapping[key] = [item.strip() for item in value.split(";") if item.strip()]
        elif key == "max_delete_fraction":
            try:
                mapping[key] = float(value)
            except ValueError:
                raise SpecError(f"{key}: must be a number, e.g. {key}=0.5 (got {value!r})") from None
        else:
            mapping[key] = value  # keep_within, or an unknown key Policy.from_mapping names
    return mapping


def parse_moment(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 timestamp; without an offset it is a wall-clock time in ``tz``."""
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def parse_timestamps(lines: Iterable[str], tz: ZoneInfo, source: str) -> list[tuple[int, str, datetime]]:
    """(line number, the text as given, the moment) for each non-blank, non-# line."""
    moments = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            moments.append((number, text, parse_moment(text, tz)))
        except ValueError:
            raise SpecError(
                f"{source} line {number}: {text[:60]!r} is not an ISO 8601 timestamp (e.g. 2026-11-21T03:00:00Z)"
            ) from None
    if not moments:
        raise SpecError(f"{source}: no timestamps; write one ISO 8601 timestamp per line")
    return moments
