"""A restore's progress: bytes read from storage, on its RestoreLog row and the caller's callback.

A restore reads each stored copy twice: once to check its SHA-256 before the destination is
touched, once to restore it (for a chain, every link, each twice). Each read is one *pass*;
the row's ``progress`` is the bytes of the finished passes plus the current one, and its
``total_bytes`` twice the stored size of the backups restored.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from django.conf import settings

from .models import RestoreLog

ProgressCallback = Callable[[int], None]


class RestoreProgress:
    """Counts the bytes of one restore's passes; writes them to the row at most once every
    ``BACKUPSITE_PROGRESS_INTERVAL`` seconds, and hands each pass's count on to ``caller``
    unchanged (the command's progress line counts each pass from zero)."""

    def __init__(self, log_id: int, caller: ProgressCallback | None = None) -> None:
        self.log_id, self.caller = log_id, caller
        self.finished = 0  # bytes of the passes done
        self.current = 0  # bytes of the pass under way
        self.written_at = time.monotonic()
        # Only the thread that runs the restore writes the row: a thread of an engine that
        # happens to read the stream would open (and leak) a database connection of its own.
        self.thread = threading.get_ident()

    @property
    def done(self) -> int:
        return self.finished + self.current

    @contextlib.contextmanager
    def reading(self, size: int | None) -> Iterator[ProgressCallback]:
        """One pass over a stored copy of ``size`` bytes: yields the callback for its reader. A
        pass that fails counts for nothing (the next copy is read from the start)."""
        self.current = 0
        try:
            yield self._report
        except BaseException:
            self.current = 0
            raise
        self.finished += size if size is not None else self.current
        self.current = 0
        self._write()

    def _report(self, done: int) -> None:
        self.current = done
        if self.caller is not None:
            self.caller(done)
        self._write()

    def _write(self) -> None:
        """At most once an interval; the row gets its final count when the restore ends."""
        now = time.monotonic()
        if (
            now - self.written_at < settings.BACKUPSITE_PROGRESS_INTERVAL
            or threading.get_ident() != self.thread
        ):
            return
        self.written_at = now
        RestoreLog.objects.filter(pk=self.log_id).update(progress=self.done)
