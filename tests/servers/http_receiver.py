"""A real HTTP receiver on a free loopback port (a threaded ``http.server``) that records every
request: method, path, headers and the exact body bytes.

It answers 200 by default (``status``/``reply`` change that); ``fail_next(n, status)`` makes
the next ``n`` requests fail with ``status``; ``hang_next(n, seconds)`` makes them wait
``seconds`` before answering (past a client's timeout).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Plan:
    status: int = 200
    reply: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    failures: list[int] = field(default_factory=list)
    hangs: list[float] = field(default_factory=list)


class HTTPReceiver:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.plan = _Plan()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, reply, headers, hang = receiver._record(self, body)
                if hang and receiver._stop.wait(hang):
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet test output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.02,), name="http-receiver", daemon=True
        )

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _record(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, dict[str, str], float]:
        with self._lock:
            self.requests.append(Request(handler.command, handler.path, dict(handler.headers.items()), body))
            hang = self.plan.hangs.pop(0) if self.plan.hangs else 0.0
            if self.plan.failures:
                return self.plan.failures.pop(0), b"receiver failure", {}, hang
            return self.plan.status, self.plan.reply, dict(self.plan.headers), hang

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        with self._lock:
            self.plan.failures.extend([status] * count)

    def hang_next(self, count: int = 1, seconds: float = 5.0) -> None:
        with self._lock:
            self.plan.hangs.extend([seconds] * count)

    def answer(self, status: int, reply: bytes = b"", headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.plan.status, self.plan.reply, self.plan.headers = status, reply, headers or {}

    def start(self) -> HTTPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases hanging handlers
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def running_receiver() -> Iterator[HTTPReceiver]:
    receiver = HTTPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
