"""A JSON-lines audit file: one JSON object per message, appended and flushed to disk.

The file is created 0600 (it may name hosts, paths and errors); each line is one ``write`` on an
``O_APPEND`` descriptor, so lines from several processes never interleave, and is fsynced
before the delivery counts as sent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from backups.plugins import Option

from .base import Message, Notifier, NotifierError


class AuditNotifier(Notifier):
    kind = "audit"
    label = "Audit file (JSON lines)"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "path": Option(str, "the file to append to (created 0600)", required=True, path=True),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        path = options.get("path")
        if isinstance(path, str) and path and not os.path.isabs(path):
            return [("path", "must be an absolute path")]
        return []

    @property
    def path(self) -> Path:
        return Path(self.options["path"])

    def check(self) -> None:
        directory = self.path.parent
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent  # the nearest existing ancestor: send() creates the rest
        if not os.access(directory, os.W_OK | os.X_OK):
            raise NotifierError(f"audit notifier {self.name}: {directory} is not writable", retryable=False)
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise NotifierError(f"audit notifier {self.name}: {self.path} is not writable", retryable=False)

    def send(self, message: Message) -> None:
        line = json.dumps(message.as_dict(), ensure_ascii=False, sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise NotifierError(
                f"audit notifier {self.name}: cannot append to {self.path}: {exc.strerror}", retryable=False
            ) from None
