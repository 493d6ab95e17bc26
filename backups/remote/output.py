"""What people read: aligned tables, sizes in binary units, times relative to now, and the one
rewritten progress line on a terminal (plain lines elsewhere, so CI logs stay readable)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from backups.humanize import human_bytes, human_duration, relative_time

__all__ = ["Progress", "human_bytes", "human_duration", "parse_time", "print_json", "table", "when"]


def print_json(stream: TextIO, payload: Any) -> None:
    stream.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart; the columns in ``right`` (numbers)
    aligned right."""
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time from the API (UTC assumed when it names no zone); None if absent."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(text: object, never: str = "never") -> str:
    """``3 h ago`` / ``in 42 min`` for an API time; ``never`` when there is none."""
    moment = parse_time(text)
    if moment is None:
        return never if not text else str(text)
    return relative_time(moment, datetime.now(UTC))


def took(start: object, end: object) -> str:
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return "-"
    return human_duration((last - first).total_seconds())


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Progress:
    """Progress of work on the server, polled. On a terminal: one line rewritten in place, cut to
    the terminal's width (a wrapped line cannot be rewritten). Elsewhere: a plain line each time
    the state (status and phase) changes, and one a minute while it does not (a CI job silent
    for long may be killed as hung), never one per poll."""

    QUIET_SECONDS = 60.0

    def __init__(self, stream: TextIO, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.started = time.monotonic()
        self._shown = False
        self._last_state: tuple[str, ...] | None = None
        self._last_line_at = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def show(self, state: tuple[str, ...], text: str) -> None:
        """``text`` describes the work now; ``state`` is the part whose change earns a plain line."""
        if self.live:
            width = _columns(self.stream) - 1
            self.stream.write("\r\x1b[2K" + text[:width])
            self.stream.flush()
            self._shown = True
        elif state != self._last_state or time.monotonic() - self._last_line_at >= self.QUIET_SECONDS:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_line_at = time.monotonic()
        self._last_state = state

    def close(self) -> None:
        if self.live and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False


def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (stdout may be a pipe meanwhile)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 100
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size((100, 24)).columns
