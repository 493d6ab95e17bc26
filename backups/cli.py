"""Presentation helpers shared by the management commands: exit codes, JSON, progress line."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from django.core.management.base import CommandError, OutputWrapper

from backups.humanize import human_bytes

EXIT_FAILED = 1
EXIT_USAGE = 2
MAX_ID = 2**63 - 1  # the largest primary key (BigAutoField)


@contextlib.contextmanager
def stop_cleanly_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception, so a run in progress is recorded as FAILED and its
    partial files are removed, instead of the process vanishing mid-write."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``. Anything else is a usage
    error naming the option and the bounds (exit 2), never a database overflow."""

    def parse(text: str) -> int:
        try:
            value = int(text)  # also refuses a number of thousands of digits
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            shown = text if len(text) <= 30 else text[:27] + "..."
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {shown!r}")
        return value

    return parse


def usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_USAGE)


def failed(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_FAILED)


def who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def dump_json(stream: Any, payload: Any) -> None:
    stream.write(json.dumps(payload, indent=2, default=str))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """A single, rewritten terminal line: bytes, rate, elapsed and an estimate if one is known.

    Disabled (prints nothing) when the output is not a terminal or JSON was asked for, so
    machine output stays clean.
    """

    def __init__(
        self, stream: TextIO | Any, label: str, expected: int | None = None, enabled: bool = True
    ) -> None:
        isatty = getattr(stream, "isatty", lambda: False)
        self.stream, self.label, self.expected = stream, label, expected
        self.enabled = enabled and bool(isatty())
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: int, stored: int | None = None) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        parts = [f"{self.label}: {human_bytes(done)}"]
        if stored:
            parts.append(f"{human_bytes(stored)} stored")
        parts += [f"{human_bytes(rate)}/s", f"{_clock(elapsed)} elapsed"]
        if self.expected and rate > 0 and done < self.expected:
            parts.append(f"~{_clock((self.expected - done) / rate)} left ({done / self.expected:.0%})")
        self._write("\r\x1b[2K" + ", ".join(parts))
        self.shown = True

    def done(self) -> None:
        if self.enabled and self.shown:
            self._write("\r\x1b[2K")

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, ending="")
        else:
            self.stream.write(text)
        self.stream.flush()
