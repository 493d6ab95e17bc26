"""A restore's progress: bytes read from storage, on its RestoreLog row and the caller's callback.

A restore reads each stored copy twice: once to check its SHA-256 before the destination is
touched, once to restore it (for a chain, every link, each twice). Each read is one *pass*;
the row's ``progress`` is the bytes of the finished passes plus the current one, and its
``total_bytes`` twice the stored size of the backups restored.

Some engines keep working long after the last byte was read (``pg_restore --jobs`` from its
spool: data, then indexes); they say where they are through ``RestoreOptions.on_phase``, which
is :meth:`RestoreProgress.phase`: the row's ``phase``, written with the bytes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from django.conf import settings

from .models import PHASE_LENGTH, RestoreLog

ProgressCallback = Callable[[int], None]
PhaseCallback = Callable[[str], None]


class RestoreProgress:
    """Counts the bytes of one restore's passes and keeps the engine's phase; writes both to the
    row at most once every ``BACKUPSITE_PROGRESS_INTERVAL`` seconds (and only when they changed),
    and hands each pass's count on to ``caller`` unchanged (the command's progress line counts
    each pass from zero) and each new phase to ``show_phase``."""

    def __init__(
        self, log_id: int, caller: ProgressCallback | None = None, show_phase: PhaseCallback | None = None
    ) -> None:
        self.log_id, self.caller, self.show_phase = log_id, caller, show_phase
        self.finished = 0  # bytes of the passes done
        self.current = 0  # bytes of the pass under way
        self.phase_text = ""  # where the engine says it is ("" until it says)
        self.written_at = time.monotonic()
        self.written = (0, "")  # what the row holds
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

    def phase(self, text: str) -> None:
        """The engine's ``RestoreOptions.on_phase``: where the restore is now (engines call it
        from the restoring thread, as often as they like)."""
        text = text[:PHASE_LENGTH]
        if text != self.phase_text:
            self.phase_text = text
            if self.show_phase is not None:
                self.show_phase(text)
        self._write()

    def _write(self) -> None:
        """At most once an interval; the row gets its final count when the restore ends."""
        now = time.monotonic()
        if (
            now - self.written_at < settings.BACKUPSITE_PROGRESS_INTERVAL
            or threading.get_ident() != self.thread
            or (self.done, self.phase_text) == self.written
        ):
            return
        self.written_at = now
        self.written = (self.done, self.phase_text)
        RestoreLog.objects.filter(pk=self.log_id).update(progress=self.done, phase=self.phase_text)
