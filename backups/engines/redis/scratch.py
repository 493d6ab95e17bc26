"""A private, throwaway ``redis-server`` that loads one RDB snapshot: the Redis engine's way to
read a backup (restore, trial restore).

Why a server: an RDB snapshot is Redis's own serialisation; the only complete reader of it is
``redis-server`` itself, and the only way to hand it one is a file it loads at startup. The file
here is a named pipe (FIFO) in a private directory, fed from the backup stream: ``redis-server``
reads its ``dbfilename`` sequentially with stdio, so nothing is written to disk and memory stays
bounded on our side (the server holds the data set, as any Redis would). ``redis-check-rdb`` can
read a second FIFO fed from the same stream at the same time.

Why nobody else can read the data: the server listens on no TCP port (``port 0``), only on a
Unix socket inside a 0700 directory (``unixsocketperm 700`` too), so only our user reaches it;
no password is needed, which keeps secrets out of the picture entirely.

Why a replica: the server is started as a replica of 127.0.0.1 port 0, a master that can never
exist (nothing can listen on port 0; connecting there is refused). A replica loads every key of
the snapshot, including keys whose TTL has already passed, and never deletes a key on its own:
expired keys are only hidden from readers (``SCAN``, ``DUMP`` and ``PTTL`` do not see them). So
``DBSIZE`` equals the number of keys in the snapshot exactly, and the key tables never shrink
while we read them, which is what lets one ``SCAN`` pass return every key exactly once.
The server never writes: ``save ""``, ``appendonly no``, and it is stopped with
``SHUTDOWN NOSAVE``. ``sanitize-dump-payload yes`` checks every compact encoding deeply while
loading (the trial restore's proof, and no damaged value reaches a destination).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backups.engines.base import EngineError
from backups.engines.process import StderrCollector, base_env
from backups.engines.redis.rdb import CheckReport, check_rdb_error, read_header

SERVER = "redis-server"
CHECKER = "redis-check-rdb"
MIN_DATABASES = 1024  # a snapshot selecting db N needs a server with more than N databases
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the final NUL
START_TIMEOUT = 60.0  # until the reader opens its FIFO
READY_TIMEOUT = 300.0  # from the end of the stream until the server has finished loading
COMMAND_TIMEOUT = 300.0
_CHUNK = 1024 * 1024


def no_retry() -> Retry:
    """For redis-py: fail at once. A silently retried command can hide a lost connection, and a
    retried RESTORE whose first attempt went through reports a clash with itself."""
    return Retry(NoBackoff(), 0)


def conf_quote(value: str) -> str:
    """A redis.conf string: double quotes with the escapes Redis undoes."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(out) + '"'


@dataclass
class LoadedSnapshot:
    """The running scratch server, its snapshot fully loaded."""

    socket: Path
    rdb_version: int
    check: CheckReport | None  # with ``check=True``: what redis-check-rdb reported
    log: Path
    _clients: dict[int, redis.Redis] = field(default_factory=dict)

    def client(self, db: int = 0) -> redis.Redis:
        """A session on logical database ``db`` of the scratch server (closed with the server)."""
        if db in self._clients:
            return self._clients[db]
        client = redis.Redis(
            unix_socket_path=str(self.socket),
            db=db,
            socket_timeout=COMMAND_TIMEOUT,
            retry=no_retry(),
            single_connection_client=True,
        )
        self._clients[db] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(redis.RedisError):
                client.close()

    def keyspace(self) -> dict[int, int]:
        """Keys per logical database (expired ones included: see the module docstring)."""
        info = self.client().info("keyspace")
        return {int(name[2:]): int(values["keys"]) for name, values in info.items() if name.startswith("db")}


def server_log_problem(log: Path) -> str:
    """The warnings of a scratch server's log (lines marked ``#``), without timestamps."""
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").splitlines()
        started = next((i for i, line in enumerate(lines) if "Server initialized" in line), 0)
        warnings = [
            line.split(" # ", 1)[1]
            for line in lines[started + 1 :]
            if " # " in line and not line.split(" # ", 1)[1].startswith("WARNING")  # host tuning advice
        ]
        fatal = [line for line in lines if "FATAL" in line or "Bad directive" in line]
        chosen = (warnings or fatal or lines)[-3:]
        text = " | ".join(line.strip() for line in chosen if line.strip())
        if "Can't handle RDB format version" in text:
            text += (
                " (the backup comes from a newer Redis than the local redis-server: install a "
                "redis-server at least as new as the source's)"
            )
        return text
    return "no log"


@contextlib.contextmanager
def loaded_snapshot(
    stream: BinaryIO, scratch_dir: Path, *, databases: int = MIN_DATABASES, check: bool = False
) -> Iterator[LoadedSnapshot]:
    """Load the RDB snapshot read from ``stream`` into a private scratch server (and, with
    ``check``, through ``redis-check-rdb`` at the same time); yield it once loaded. The server is
    stopped and its directory removed whatever happens."""
    header, version = read_header(stream)  # garbage is refused before anything starts
    scratch_dir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="redis-", dir=scratch_dir))  # mode 0700
    socket = directory / "redis.sock"
    server = checker = None
    loaded: LoadedSnapshot | None = None
    log = directory / "server.log"
    try:
        if len(str(socket).encode()) > SOCKET_PATH_MAX:
            raise EngineError(
                f"the scratch directory path is too long for a Unix socket ({socket}); "
                "set BACKUPSITE_TMP to a shorter path"
            )
        fifos = {SERVER: directory / "snapshot.rdb"}
        if check:
            fifos[CHECKER] = directory / "check.rdb"
        for path in fifos.values():
            os.mkfifo(path, 0o600)
        server = _start_server(directory, socket, fifos[SERVER], databases, log)
        collector = None
        if check:
            checker = _spawn([CHECKER, str(fifos[CHECKER])], subprocess.PIPE, subprocess.STDOUT, directory)
            assert checker.stdout is not None
            collector = StderrCollector(checker.stdout)  # its report goes to stdout
        readers = {SERVER: server, **({CHECKER: checker} if checker else {})}
        try:
            stopped, size = _feed(stream, header, fifos, readers, log)
        finally:
            # Open pipes live on without their names. A redis-server that fails to load re-opens
            # its dbfilename to run its own checks on it: with the name gone it fails at once
            # instead of waiting for a writer forever.
            for path in fifos.values():
                path.unlink(missing_ok=True)
        report = None
        if checker is not None and collector is not None:
            report = _checked(checker, collector)
            if report.size != size:  # the readers stop at the end marker; a pipe buffer hides the rest
                raise EngineError(
                    f"data after the RDB end marker: the snapshot ends after {report.size} bytes, the stream "
                    f"holds {size}"
                )
        _wait_loaded(server, socket, log, stopped)
        loaded = LoadedSnapshot(socket=socket, rdb_version=version, check=report, log=log)
        yield loaded
    finally:
        if loaded is not None:
            loaded.close()
        if server is not None:
            _stop_server(server, socket, loaded is not None)
        if checker is not None:
            _stop(checker)
        shutil.rmtree(directory, ignore_errors=True)


def _spawn(argv: list[str], stdout: int | IO[bytes], stderr: int, cwd: Path) -> subprocess.Popen[bytes]:
    try:
        # A minimal environment: the worker's own (its resolved ${ENV} secrets) stays out.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            start_new_session=True,
            env=base_env({}),
        )
    except FileNotFoundError:
        raise EngineError(f"{argv[0]} is not installed (not found on PATH)") from None


def _start_server(
    directory: Path, socket: Path, fifo: Path, databases: int, log: Path
) -> subprocess.Popen[bytes]:
    settings = {
        "port": "0",  # no TCP at all: only the private Unix socket
        "unixsocket": conf_quote(str(socket)),
        "unixsocketperm": "700",
        "dir": conf_quote(str(directory)),
        "dbfilename": conf_quote(fifo.name),
        "save": '""',
        "appendonly": "no",
        "replicaof": "127.0.0.1 0",  # see the module docstring
        "replica-serve-stale-data": "yes",
        "databases": str(databases),
        "sanitize-dump-payload": "yes",
        "daemonize": "no",
        "logfile": '""',
        "maxmemory": "0",
        "enable-debug-command": "no",
        "enable-module-command": "no",
        "enable-protected-configs": "no",
    }
    config = directory / "redis.conf"
    descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.writelines(f"{name} {value}\n" for name, value in settings.items())
    with open(log, "wb") as output:
        return _spawn([SERVER, str(config)], output, subprocess.STDOUT, directory)


def _open_writer(path: Path, reader: subprocess.Popen[bytes], name: str) -> int:
    """Open a FIFO for writing once its reader has opened it (without hanging if it never does)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if reader.poll() is not None:
                return -1
            if time.monotonic() > deadline:
                raise EngineError(
                    f"{name} did not start reading the snapshot within {START_TIMEOUT:.0f} s"
                ) from None
            time.sleep(0.01)
            continue
        os.set_blocking(descriptor, True)
        with contextlib.suppress(OSError):  # as process.widen_pipe: let us run ahead of the reader
            fcntl.fcntl(descriptor, fcntl.F_SETPIPE_SZ, _CHUNK)
        return descriptor


def _feed(
    stream: BinaryIO,
    header: bytes,
    fifos: dict[str, Path],
    readers: dict[str, subprocess.Popen[bytes]],
    log: Path,
) -> tuple[set[str], int]:
    """Copy the stream into every FIFO; return the names of the readers that stopped early, and
    the size of the stream (up to where the last reader stopped)."""
    sinks: dict[str, int] = {}
    stopped: set[str] = set()
    size = 0
    try:
        for name, path in fifos.items():
            descriptor = _open_writer(path, readers[name], name)
            if descriptor < 0:
                stopped.add(name)
            else:
                sinks[name] = descriptor
        if SERVER in stopped:
            raise EngineError(f"redis-server did not start: {server_log_problem(log)}")
        chunk = header
        while chunk and sinks:
            size += len(chunk)
            for name, descriptor in list(sinks.items()):
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(descriptor, view) :]
                except BrokenPipeError:
                    stopped.add(name)
                    os.close(sinks.pop(name))
            chunk = stream.read(_CHUNK)
    finally:
        for descriptor in sinks.values():
            os.close(descriptor)
    return stopped, size


def _checked(checker: subprocess.Popen[bytes], collector: StderrCollector) -> CheckReport:
    try:
        returncode = checker.wait(timeout=READY_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise EngineError(f"redis-check-rdb did not finish within {READY_TIMEOUT:.0f} s") from None
    collector.join()
    lines = list(collector.tail)
    if returncode != 0:
        raise EngineError(f"redis-check-rdb found the snapshot damaged: {check_rdb_error(lines)}")
    return CheckReport.parse(lines)


def _wait_loaded(server: subprocess.Popen[bytes], socket: Path, log: Path, stopped: set[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=10, retry=no_retry())
    try:
        while True:
            if server.poll() is not None:
                raise EngineError(f"redis-server could not load the snapshot: {server_log_problem(log)}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if socket.exists() and not int(client.info("persistence").get("loading", 1)):
                    break
            if time.monotonic() > deadline:
                raise EngineError(
                    f"redis-server did not finish loading the snapshot within {READY_TIMEOUT:.0f} s"
                )
            time.sleep(0.02)
    finally:
        client.close()
    if SERVER in stopped:  # it loaded a whole snapshot and closed the pipe, but the stream went on
        raise EngineError(
            "data after the RDB end marker: redis-server stopped reading before the stream ended"
        )


def _stop_server(server: subprocess.Popen[bytes], socket: Path, loaded: bool) -> None:
    """SHUTDOWN NOSAVE once loaded (never a save over anything), then the usual signals."""
    if loaded and server.poll() is None:
        with (
            contextlib.suppress(redis.RedisError, OSError),
            redis.Redis(unix_socket_path=str(socket), socket_timeout=5, retry=no_retry()) as client,
        ):
            client.shutdown(nosave=True)
    _stop(server)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
