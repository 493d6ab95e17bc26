"""A TCP proxy on a free loopback port that can cut its connections: a network failure on demand.

``cut()`` resets every open connection now; ``cut_after(n)`` resets them once ``n`` more bytes
have gone upstream (client to server) in total, mid-transfer, and keeps cutting until
``allow()``; ``limit_connections(n)`` resets any one connection that carries more than ``n``
bytes upstream (a link that breaks under load: small requests still pass, big uploads never
do); ``refuse()`` makes new connections fail as well, until ``allow()``; ``down()`` stops
listening (connections refused, as by a stopped server) until ``allow()``; ``stall()`` keeps every
connection (and new ones) open but forwards no byte either way, a hung link, until ``allow()``;
``throttle(rate)`` carries at most ``rate`` bytes a second per connection (either way or one way
only), a slow link, until ``allow()``. The server behind it is real and unaware.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator


class CuttableProxy:
    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server((listen_host, listen_port))
        self.port = int(self._listener.getsockname()[1])
        self.host = listen_host
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._budget: int | None = None
        self._per_connection: int | None = None
        self._refusing = False
        self._down = False
        self._flowing = threading.Event()  # cleared by stall()
        self._flowing.set()
        self._rates: dict[bool, float] = {}  # bytes per second by direction (True: upstream)
        self.upstream_bytes = 0
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    # -- control ---------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection (RST, like a dropped link)."""
        with self._lock:
            victims, self._sockets = self._sockets, []
            self.cuts += 1
        for sock in victims:
            _reset(sock)

    def cut_after(self, upstream_bytes: int) -> None:
        with self._lock:
            self._budget = upstream_bytes

    def limit_connections(self, upstream_bytes: int) -> None:
        self._per_connection = upstream_bytes

    def refuse(self) -> None:
        """New connections are reset at once; open ones are cut."""
        self._refusing = True
        self.cut()

    def down(self) -> None:
        """Stop listening, like a stopped server: new connections are refused (ECONNREFUSED) and
        open ones are cut, until ``allow()`` listens on the same port again."""
        self._down = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread; close() alone does not
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def small_buffers(self, size: int) -> None:
        """Give connections accepted from now on a receive buffer of about ``size`` bytes, so a
        stalled link blocks the client's sends at once rather than after megabytes of loopback
        buffering (a slow real link has no megabytes in flight either)."""
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def stall(self) -> None:
        """Forward nothing, either way, on open and new connections, until ``allow()``: a link
        that hangs (each pump holds the chunk it read; the senders' buffers fill and block)."""
        self._flowing.clear()

    def throttle(self, bytes_per_second: float, *, upstream: bool = True, downstream: bool = True) -> None:
        """Carry at most ``bytes_per_second`` per connection in each chosen direction, until
        ``allow()``: a slow link (each chunk read is held for its share of the time, then sent)."""
        chosen = {True: upstream, False: downstream}
        self._rates = {way: bytes_per_second for way, on in chosen.items() if on}

    def allow(self) -> None:
        self._refusing = False
        self._rates = {}
        self._flowing.set()
        with self._lock:
            self._budget = None
            self._per_connection = None
        if self._down:
            self._down = False
            self._listener = socket.create_server((self.host, self.port))
            threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # else the blocked accept() keeps the port
        with contextlib.suppress(OSError):
            self._listener.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            connection = _Connection(client, server)
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._carry, args=(connection, source, sink, upstream), daemon=True
                ).start()

    def _carry(
        self, connection: _Connection, source: socket.socket, sink: socket.socket, upstream: bool
    ) -> None:
        """One direction of ``connection``; the second direction to end closes both sockets and
        forgets them. Kept until ``cut()``, a finished connection held two descriptors for good:
        a long run through the proxy (the soak's thousands of S3 requests an hour) ran out."""
        try:
            self._pump(source, sink, upstream)
        finally:
            with self._lock:
                connection.directions -= 1
                finished = connection.directions == 0
                if finished:
                    self._sockets = [sock for sock in self._sockets if sock not in connection.sockets]
            if finished:
                for sock in connection.sockets:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        carried = 0
        try:
            while data := source.recv(65536):
                carried += len(data)
                if upstream and self._per_connection is not None and carried > self._per_connection:
                    with self._lock:
                        self.cuts += 1
                    _reset(sink)
                    _reset(source)
                    return
                if upstream:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        if self._budget is not None:
                            self._budget -= len(data)
                            exhausted = self._budget <= 0
                        else:
                            exhausted = False
                    if exhausted:
                        self.cut()
                        return
                self._hold()
                self._pace(upstream, len(data))
                sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(sink)
            _reset(source)

    def _hold(self) -> None:
        """Wait while stalled (the proxy's close ends the wait: its sockets are reset by then)."""
        while not self._flowing.wait(0.1) and not self._closed:
            pass

    def _pace(self, upstream: bool, size: int) -> None:
        """Hold ``size`` bytes for their time at the throttled rate (``allow()`` or close ends it)."""
        rate = self._rates.get(upstream)
        if not rate:
            return
        deadline = time.monotonic() + size / rate
        while (left := deadline - time.monotonic()) > 0 and self._rates.get(upstream) and not self._closed:
            time.sleep(min(left, 0.05))


class _Connection:
    """One client's socket and its upstream socket, and how many directions still carry bytes."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.sockets = (client, server)
        self.directions = 2


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # shutdown() wakes a pump thread blocked in recv() on this socket; close() alone does not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def cuttable_proxy(host: str, port: int) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
