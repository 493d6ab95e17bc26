"""Parallel PostgreSQL restores (the ``restore_jobs`` option): ``pg_restore --jobs`` from a spool.

``pg_restore --jobs`` reads the archive out of order, so it needs a file it can seek in, never a
pipe. The decoded backup (decrypted, decompressed, digest-checked as it is read) is first copied
to a spool file in the scratch directory (``BACKUPSITE_TMP``), then each pg_restore worker opens
that file through ``/dev/fd/N``.

Disk: the spool takes the archive's raw size on the scratch disk while the restore runs. Before a
byte is read the backup's recorded raw size plus :data:`SPOOL_RESERVE` must be free there, and
the free space is checked again while spooling; short, the restore is refused and nothing is
changed (the destination is touched only once the whole archive is spooled).

Leftovers: the spool never has a name (``O_TMPFILE``, or unlinked at once where the file system
lacks it), so the kernel frees it when its last descriptor closes: after the restore, after a
failure, and when the worker or pg_restore is killed. There is nothing to sweep.

Linux only: there, opening ``/dev/fd/N`` opens the file anew with an offset of its own (each
worker seeks on its own); on other systems it duplicates the descriptor and the workers would
share one offset, so the option is not used there.

Not one transaction: ``pg_restore --jobs`` cannot run in a single transaction, so the engine
uses it only where a failure can be undone (a database the restore creates, dropped again) or
where the operator already gave up all-or-nothing (``single_transaction = false``).

Progress: once spooled, no byte of the backup moves while pg_restore runs, possibly for minutes.
:class:`Phase` follows pg_restore's ``--verbose`` lines (the streamed restore's too) and says how
many tables' data are loaded; :func:`run_restore` waits in short ticks so the restoring thread
can hand that on (``RestoreOptions.on_phase``) while pg_restore runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from backups.engines.base import EngineError
from backups.engines.process import StderrCollector, describe_exit

MIB = 1024 * 1024
#: Left free on the scratch disk after the spool: logs, passfiles and other scratch work go on.
SPOOL_RESERVE = 256 * MIB
_CHUNK = MIB
_RECHECK_EVERY = 64 * MIB  # free space checked again after this many bytes spooled
_STOP_GRACE = 10.0  # pg_restore's leader cancels its workers' queries on SIGTERM
_TICK = 0.5  # seconds between two hand-ons of the phase while pg_restore runs

# pg_restore --verbose: a table's data begins (every mode), an item ends (--jobs only).
DATA_BEGINS = re.compile(r'processing data for table "(?P<table>.+)"$')
_FINISHED = re.compile(r"finished item \d+ (?P<kind>TABLE DATA|INDEX|CONSTRAINT|FK CONSTRAINT) ")
_BUILDING = re.compile(r"creating (INDEX|CONSTRAINT|FK CONSTRAINT) ")


@dataclass(frozen=True)
class Spool:
    """The spooled archive: a descriptor of this process, and its size in bytes."""

    fd: int
    size: int

    @property
    def path(self) -> str:
        """What pg_restore opens: a child that inherits ``fd`` reopens the file through it."""
        return f"/dev/fd/{self.fd}"


class Phase:
    """Where pg_restore is, from its ``--verbose`` lines: "pg_restore: data for 37 of 200 tables
    loaded". :meth:`follow` takes the lines in the stderr reader's thread; :meth:`report` hands the
    sentence to ``on_phase`` and is called only from the restoring thread (see ``RestoreOptions``).

    With ``--jobs`` a table counts once pg_restore says its item finished; streamed, pg_restore
    loads one table after another, so a table counts once the next one begins (or pg_restore ends).
    ``total``: the tables with data the backup holds, when the manifest says."""

    def __init__(self, on_phase: Callable[[str], None] | None, *, total: int | None, jobs: int) -> None:
        self._on_phase, self._total, self._jobs = on_phase, total, jobs
        self._lock = threading.Lock()
        self._begun = self._loaded = self._built = 0
        self._current = ""  # the table being loaded (streamed only: with --jobs, several are)
        self._ended = False

    def follow(self, line: str) -> None:
        with self._lock:
            if match := DATA_BEGINS.search(line):
                self._begun += 1
                if self._jobs == 1:
                    self._loaded, self._current = self._begun - 1, match.group("table")
            elif self._jobs > 1 and (match := _FINISHED.search(line)):
                if match.group("kind") == "TABLE DATA":
                    self._loaded += 1
                else:
                    self._built += 1
            elif self._jobs == 1 and _BUILDING.search(line):  # after the data, one at a time
                self._loaded, self._current = self._begun, ""
                self._built += 1

    def end(self) -> None:
        """pg_restore exited 0: every table it began is loaded."""
        with self._lock:
            self._loaded, self._current, self._ended = max(self._loaded, self._begun), "", True

    @property
    def text(self) -> str:
        with self._lock:
            if not self._begun and not self._ended:
                return ""
            name = "pg_restore" if self._jobs == 1 else f"pg_restore --jobs={self._jobs}"
            total = f" of {self._total}" if self._total is not None and self._total >= self._loaded else ""
            text = f"{name}: data for {self._loaded}{total} tables loaded"
            if self._current:
                text += f", loading {self._current}"
            if self._built:
                text += f"; {self._built} indexes and constraints built"
            return text

    def report(self, text: str | None = None) -> None:
        """Hand ``text`` (default: where pg_restore is) on; from the restoring thread only."""
        text = self.text if text is None else text
        if self._on_phase is not None and text:
            self._on_phase(text)


class Relaying:
    """``stream``, calling ``on_read`` before each read: a streamed restore's reads happen in the
    restoring thread, so they are where it hands its phase on (see :class:`Phase`)."""

    def __init__(self, stream: BinaryIO, on_read: Callable[[], None]) -> None:
        self._stream, self._on_read = stream, on_read

    def read(self, size: int = -1) -> bytes:
        self._on_read()
        return self._stream.read(size)


def human(size: int) -> str:
    return f"{size / (1024 * MIB):.1f} GiB" if size >= 1024 * MIB else f"{size / MIB:.1f} MiB"


def jobs_for(wanted: int, *, exists: bool, single_transaction: bool, database: str) -> tuple[int, str]:
    """The number of pg_restore jobs to run, and a note for the result when ``wanted`` is not
    used. An existing database restored with ``single_transaction`` (the default) keeps the
    all-or-nothing streaming restore: a failed parallel restore would leave it half replaced."""
    if wanted <= 1:
        return 1, ""
    if exists and single_transaction:
        return 1, (
            f"restore_jobs = {wanted} not used: database {database} exists and a parallel restore "
            "cannot run in one transaction, so it was restored in one (set single_transaction = "
            "false to restore an existing database in parallel, accepting a partial restore on failure)"
        )
    if not sys.platform.startswith("linux"):
        return 1, f"restore_jobs = {wanted} not used: parallel restores need Linux (/dev/fd)"
    return wanted, ""


def space_problem(scratch: Path, raw_size: int | None, jobs: int, reserve: int = SPOOL_RESERVE) -> str | None:
    """Why ``scratch`` cannot hold the spool of an archive of ``raw_size`` bytes (None when it
    can, or when the size was not recorded: then only the checks while spooling apply)."""
    if raw_size is None:
        return None
    scratch.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(scratch).free
    if raw_size + reserve <= free:
        return None
    return (
        f"restore_jobs = {jobs} spools the backup to {scratch} first and needs {human(raw_size + reserve)} "
        f"free there (the backup's raw size, {human(raw_size)}, plus {human(reserve)} kept free); "
        f"only {human(free)} is free: free some space, point BACKUPSITE_TMP at a larger disk, or set "
        "restore_jobs = 1 (streamed, no scratch space); nothing was changed"
    )


@contextlib.contextmanager
def spooled(stream: BinaryIO, scratch: Path, *, jobs: int, reserve: int = SPOOL_RESERVE) -> Iterator[Spool]:
    """Copy ``stream`` to an unnamed file in ``scratch`` and yield it; freed on exit whatever
    happens. Raises :class:`EngineError` (nothing changed yet) when the stream fails or the disk
    runs short of ``reserve`` free bytes while spooling."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(prefix="pg-restore-spool-", dir=scratch) as handle:
        size = checked = 0
        while chunk := _read(stream):
            try:
                handle.write(chunk)
            except OSError as exc:
                raise EngineError(_short(scratch, jobs, size, exc.strerror or str(exc))) from None
            size += len(chunk)
            if size - checked >= _RECHECK_EVERY:
                checked = size
                free = shutil.disk_usage(scratch).free
                if free < reserve:
                    raise EngineError(
                        _short(scratch, jobs, size, f"only {human(free)} left free, {human(reserve)} kept")
                    )
        try:
            handle.flush()
        except OSError as exc:
            raise EngineError(_short(scratch, jobs, size, exc.strerror or str(exc))) from None
        yield Spool(fd=handle.fileno(), size=size)


def _short(scratch: Path, jobs: int, size: int, reason: str) -> str:
    return (
        f"restore_jobs = {jobs}: spooling the backup to {scratch} stopped after {human(size)}: {reason}; "
        "free some space, point BACKUPSITE_TMP at a larger disk, or set restore_jobs = 1; nothing was changed"
    )


def _read(stream: BinaryIO) -> bytes:
    """A chunk of the backup; a failure of the stream (a copy that fails to decrypt or
    decompress half way, a storage that drops the connection) says what it stopped."""
    try:
        return stream.read(_CHUNK)
    except EngineError:
        raise
    except Exception as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise EngineError(
            f"the backup stopped reading half way while it was spooled for pg_restore --jobs: {reason}; "
            "nothing was changed"
        ) from exc


def run_restore(
    argv: Sequence[str],
    env: dict[str, str],
    spool: Spool,
    *,
    on_stderr: Callable[[str], None],
    explain: Callable[[str], str],
    on_tick: Callable[[], None] = lambda: None,
) -> None:
    """Run ``argv`` (a pg_restore command line without its archive) on ``spool``; raise
    :class:`EngineError` with pg_restore's own message when it fails. If the caller is
    interrupted, pg_restore and its workers are stopped before the exception goes on.
    ``on_tick`` is called from the caller's thread every :data:`_TICK` seconds while it runs."""
    try:
        process = subprocess.Popen(
            [*argv, spool.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # with --dbname pg_restore writes only to stderr
            stderr=subprocess.PIPE,
            env=env,
            pass_fds=(spool.fd,),
            start_new_session=True,  # its own process group: the workers are stopped with it
        )
    except FileNotFoundError:
        raise EngineError(f"{argv[0]} is not installed (not found on PATH)") from None
    except PermissionError:
        raise EngineError(f"{argv[0]} cannot be run: permission denied") from None
    assert process.stderr is not None
    # The worker that failed says why; the leader's last line only says a worker died.
    first_error: list[str] = []

    def follow(line: str) -> None:
        if not first_error and "error:" in line and "worker process died" not in line:
            first_error.append(line)
        on_stderr(line)

    collector = StderrCollector(process.stderr, follow)
    try:
        returncode = _wait(process, on_tick)
    except BaseException:
        _stop(process)
        raise
    finally:
        collector.join()
        process.stderr.close()
    if returncode != 0:
        stderr = collector.text()
        if first_error and first_error[0] not in stderr:
            stderr = f"{first_error[0]} | {stderr}"
        raise EngineError(describe_exit("pg_restore", returncode, explain(stderr)))


def _wait(process: subprocess.Popen[bytes], on_tick: Callable[[], None]) -> int:
    while True:
        try:
            return process.wait(timeout=_TICK)
        except subprocess.TimeoutExpired:
            on_tick()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM first (the leader cancels its workers' queries), then SIGKILL to the whole group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
