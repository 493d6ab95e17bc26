"""A throwaway Redis server (Debian's ``redis-server``) on a free loopback port: the production
Celery broker, for the tests that run real workers and beats. No persistence, no config file."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import free_port, stop_process, wait_for

REDIS_SERVER = "redis-server"


@dataclass
class RedisServer:
    base: Path
    port: int
    host: str = "127.0.0.1"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / "server.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    if shutil.which(REDIS_SERVER) is None:
        raise RuntimeError(
            "redis-server is not installed; run: apt-get install redis-server (make setup does)"
        )
    base = Path(tempfile.mkdtemp(prefix="backupsite-redis-"))
    server = RedisServer(base=base, port=free_port())
    argv = [
        REDIS_SERVER, "--bind", server.host, "--port", str(server.port), "--dir", str(base),
        "--save", "", "--appendonly", "no", "--daemonize", "no",
    ]  # fmt: skip
    with open(base / "server.log", "wb") as log:
        process = subprocess.Popen(argv, cwd=base, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: process.poll() is None and server.ping(), "the Redis server", 30)
        except RuntimeError:
            raise RuntimeError(f"the Redis server did not start:\n{server.log_tail()}") from None
        yield server
    finally:
        stop_process(process)
        shutil.rmtree(base, ignore_errors=True)
