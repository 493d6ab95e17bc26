"""Running database tools as child processes, safely.

Every engine that shells out uses these helpers so that all of them keep the same promises:
argument lists only, credentials in the environment or in 0600 files that are removed
afterwards, every exit status checked, the tool's stderr tail in the error, and no child left
running (or as a zombie) whatever happens to the consumer of its output.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from .base import EngineError

STDERR_TAIL_LINES = 30
_TERMINATE_GRACE = 5.0
_CHUNK = 1024 * 1024


@contextlib.contextmanager
def secret_file(directory: Path, content: str, *, prefix: str, suffix: str = "") -> Iterator[Path]:
    """A 0600 file holding ``content`` (e.g. a pgpass or a MySQL option file), removed on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)  # mkstemp: mode 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        path.unlink(missing_ok=True)


class StderrCollector:
    """Reads a child's stderr in a thread: keeps the last lines for error messages and hands
    every line to ``on_line`` (e.g. to follow pg_restore's progress)."""

    def __init__(self, stream: IO[bytes], on_line: Callable[[str], None] | None = None) -> None:
        self._stream = stream
        self._on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._thread = threading.Thread(target=self._run, name="stderr-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for raw in self._stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                self.tail.append(line)
                if self._on_line is not None:
                    self._on_line(line)

    def join(self) -> None:
        self._thread.join(timeout=30)

    def text(self, lines: int = 6) -> str:
        return " | ".join(list(self.tail)[-lines:])


def describe_exit(tool: str, returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        what = f"{tool} was killed by {name}"
    else:
        what = f"{tool} failed with exit status {returncode}"
    return f"{what}: {stderr}" if stderr else what


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=_TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def widen_pipe(stream: IO[bytes], size: int = _CHUNK) -> None:
    """Let a tool run up to ``size`` bytes ahead of its reader (or its writer ahead of it). With
    Linux's default 64 KiB pipe the tool stalls while the pipeline compresses each 1 MiB chunk,
    so dumping and compressing take turns instead of overlapping (measurably slower than
    ``tool | gzip``)."""
    with contextlib.suppress(OSError, AttributeError, ValueError):  # not Linux, or over the limit
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, size)


def _spawn(argv: Sequence[str], env: dict[str, str], stdin: int | None) -> subprocess.Popen[bytes]:
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop the tool
        )
    except FileNotFoundError:
        raise EngineError(f"{argv[0]} is not installed (not found on PATH)") from None
    except PermissionError:
        raise EngineError(f"{argv[0]} cannot be run: permission denied") from None
    for pipe in (process.stdout, process.stdin):
        if pipe is not None:
            widen_pipe(pipe)
    return process


@contextlib.contextmanager
def dump_process(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    tool: str,
    on_stderr: Callable[[str], None] | None = None,
    explain: Callable[[str], str] | None = None,
) -> Iterator[BinaryIO]:
    """Run a dump tool and yield its stdout.

    On a clean exit of the block the tool must have exited 0, otherwise :class:`EngineError`
    carries its stderr tail (passed through ``explain`` for friendlier wording). If the block
    raises, the tool is stopped and the block's exception propagates.
    """
    process = _spawn(argv, env, subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    collector = StderrCollector(process.stderr, on_stderr)
    try:
        yield process.stdout  # type: ignore[misc]
        # The consumer may stop at what looks like the end; the tool must still finish cleanly.
        with contextlib.suppress(OSError, ValueError):
            while process.stdout.read(_CHUNK):
                pass
        returncode = process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        process.stdout.close()
        _stop(process)
        collector.join()
        process.stderr.close()
    if returncode != 0:
        stderr = collector.text()
        raise EngineError(describe_exit(tool, returncode, explain(stderr) if explain else stderr))


def feed_process(
    argv: Sequence[str],
    env: dict[str, str],
    stream: BinaryIO,
    *,
    tool: str,
    on_stderr: Callable[[str], None] | None = None,
    explain: Callable[[str], str] | None = None,
    chunk_size: int = _CHUNK,
) -> str:
    """Stream ``stream`` into a tool's stdin until EOF; return its stdout (expected small).

    Raises :class:`EngineError` with the tool's own message if it exits non-zero or stops
    reading early (e.g. ``mysql`` stopping at the first SQL error).
    """
    process = _spawn(argv, env, subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    collector = StderrCollector(process.stderr, on_stderr)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    broken = False
    try:
        while chunk := _read_backup(stream, chunk_size, tool):
            try:
                process.stdin.write(chunk)
            except BrokenPipeError:
                broken = True  # the tool stopped reading: its exit status and stderr say why
                break
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        returncode = process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
        _stop(process)
        reader.join(timeout=30)
        collector.join()
        process.stdout.close()
        process.stderr.close()
    stderr = collector.text()
    if returncode != 0:
        raise EngineError(describe_exit(tool, returncode, explain(stderr) if explain else stderr))
    if broken:
        raise EngineError(f"{tool} stopped reading its input before the end: {stderr or 'no message'}")
    return b"".join(output).decode("utf-8", "replace")


def _read_backup(stream: BinaryIO, size: int, tool: str) -> bytes:
    """A chunk of the backup being fed to ``tool``; a failure of the stream itself (a copy that
    fails to decrypt or decompress half way, a storage that drops the connection) becomes an
    EngineError, so that the engine adds what the stopped restore left behind."""
    try:
        return stream.read(size)
    except EngineError:
        raise
    except Exception as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise EngineError(f"the backup stopped reading half way while {tool} applied it: {reason}") from exc


def run_tool(argv: Sequence[str], env: dict[str, str], *, tool: str, timeout: float = 60) -> str:
    """Run a short tool invocation (``--version``, a query) and return its stdout."""
    try:
        result = subprocess.run(
            list(argv), env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise EngineError(f"{argv[0]} is not installed (not found on PATH)") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"{tool} did not answer within {timeout:.0f} s") from None
    if result.returncode != 0:
        stderr = " | ".join(result.stderr.decode("utf-8", "replace").strip().splitlines()[-6:])
        raise EngineError(describe_exit(tool, result.returncode, stderr))
    return result.stdout.decode("utf-8", "replace")


#: What a tool inherits from our environment; everything else (other secrets resolved from
#: ``${ENV}`` references, cloud keys, ``PG*``/``MYSQL_PWD`` defaults) stays out of its reach.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "KRB5CCNAME")


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """A minimal child environment (see ``INHERITED_ENV``) plus ``extra``."""
    inherited = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    return {**inherited, "LC_ALL": "C.UTF-8", **extra}
