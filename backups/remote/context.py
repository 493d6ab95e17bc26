"""What every command gets: the API, the output streams, --json, and how to wait."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, TextIO

from backups.remote.client import Api
from backups.remote.errors import EXIT_UNREACHABLE, CtlError
from backups.remote.output import Progress, print_json
from backups.remote.waiting import Waiting


@dataclass
class Context:
    api: Api
    as_json: bool
    out: TextIO
    err: TextIO
    stdin: TextIO
    interval: float = 2.0
    wait_timeout: float = 0.0

    def waiting(self) -> Waiting:
        # Progress goes to stderr: stdout stays the result alone (and valid JSON with --json).
        return Waiting(self.api, Progress(self.err), interval=self.interval, timeout=self.wait_timeout)

    def json(self, payload: Any) -> None:
        print_json(self.out, payload)

    def say(self, line: str) -> None:
        self.out.write(line + "\n")

    def note(self, line: str) -> None:
        """A remark for the person, beside the result: on stderr."""
        self.err.write(line + "\n")


def segment(name: str) -> str:
    """A target name as one path segment (names may hold characters a path may not)."""
    return urllib.parse.quote(name, safe="")


def need(item: Any, key: str) -> Any:
    """``item[key]`` of an answer, or an error saying the server answered something else."""
    if not isinstance(item, dict) or key not in item:
        raise CtlError(
            f"the server's answer has no {key!r}: the server's API version may differ from this backupctl's",
            EXIT_UNREACHABLE,
        )
    return item[key]
