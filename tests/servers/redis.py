"""A throwaway Redis server (Debian's ``redis-server``) on a free loopback port.

Without arguments: the production Celery broker, for the tests that run real workers and beats
(no persistence, no password, no config file). The Redis engine's tests add a password (in a
0600 config file, never in argv), TLS and extra settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import free_port, stop_process, wait_for

REDIS_SERVER = "redis-server"


def config_value(value: str) -> str:
    """``value`` as a double-quoted redis.conf string (Redis undoes these escapes)."""
    escaped = "".join(
        f"\\{char}" if char in '"\\' else char if char.isprintable() else f"\\x{ord(char):02x}"
        for char in value
    )
    return f'"{escaped}"'


@dataclass
class RedisServer:
    base: Path
    port: int
    host: str = "127.0.0.1"
    password: str = ""
    #: A directory with ca.pem, server.pem and server.key when the server speaks only TLS.
    tls_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    #: The command line, kept for restart().
    argv: list[str] = field(default_factory=list)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs: Any) -> Any:
        """A redis-py client logged in as the default user."""
        import redis

        params: dict[str, Any] = {"password": self.password or None, "socket_timeout": 10}
        if self.tls_dir is not None:
            params.update(ssl=True, ssl_ca_certs=str(self.tls_dir / "ca.pem"))
        return redis.Redis(host=self.host, port=self.port, db=db, **{**params, **kwargs})

    def ping(self) -> bool:
        if self.password or self.tls_dir is not None:
            try:
                with contextlib.closing(self.client(socket_timeout=1, socket_connect_timeout=1)) as client:
                    return bool(client.ping())
            except Exception:
                return False
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start (or start again) the server with its command line; wait until it answers."""
        with open(self.base / "server.log", "ab") as log:
            process = subprocess.Popen(self.argv, cwd=self.base, stdout=log, stderr=subprocess.STDOUT)
        self.process = process
        try:
            wait_for(lambda: process.poll() is None and self.ping(), "the Redis server", 30)
        except RuntimeError:
            raise RuntimeError(f"the Redis server did not start:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: with ``appendonly`` the AOF is flushed first)."""
        if self.process is not None:
            stop_process(self.process)

    def restart(self) -> None:
        """Stop, then start again on the same port with the same files: what survives is what
        the server persisted."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / "server.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_redis(
    password: str = "",
    *,
    tls_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    appendonly: bool = False,
) -> Iterator[RedisServer]:
    """A Redis server for the test session; ``password`` goes into a 0600 config file (the
    server's ``requirepass``), ``tls_dir`` makes it speak only TLS, ``extra_args`` are more
    ``--name value`` settings, ``appendonly`` turns the append-only file on (as a production
    broker should run: queued and unacknowledged tasks then survive a restart)."""
    if shutil.which(REDIS_SERVER) is None:
        raise RuntimeError(
            "redis-server is not installed; run: apt-get install redis-server (make setup does)"
        )
    base = Path(tempfile.mkdtemp(prefix="backupsite-redis-"))
    server = RedisServer(base=base, port=free_port(), password=password, tls_dir=tls_dir)
    argv = [REDIS_SERVER]
    if password:
        config = base / "redis.conf"
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"requirepass {config_value(password)}\n")
        argv.append(str(config))  # the config file must come first
    listen = ["--port", str(server.port)]
    if tls_dir is not None:
        listen = [
            "--port", "0", "--tls-port", str(server.port), "--tls-auth-clients", "no",
            "--tls-cert-file", str(tls_dir / "server.pem"), "--tls-key-file", str(tls_dir / "server.key"),
            "--tls-ca-cert-file", str(tls_dir / "ca.pem"),
        ]  # fmt: skip
    argv += [
        "--bind", server.host, *listen, "--dir", str(base),
        "--save", "", "--appendonly", "yes" if appendonly else "no", "--daemonize", "no", *extra_args,
    ]  # fmt: skip
    server.argv = argv
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- a data set with everything Redis holds, for the engine's tests --------------------------------

SAMPLE_DATABASES = (0, 1, 5, 15)
SAMPLE_LIBRARY = """#!lua name=backupsite_sample
redis.register_function('bs_hello', function(keys, args) return 'hello ' .. (args[1] or '') end)
"""


def fill_sample(server: RedisServer) -> None:
    """Strings (text, binary, integers, a large one), hashes, lists, sets and sorted sets in both
    their compact and their large encodings, a stream with a consumer group and pending entries,
    a HyperLogLog, geo data, binary key names, keys with TTLs, four logical databases and a
    function library."""
    import random

    rng = random.Random(20240229)
    with contextlib.closing(server.client(0)) as client:
        pipe = client.pipeline(transaction=False)
        pipe.set("greeting", "héllo wörld 🚀")
        pipe.set("bin:all-bytes", bytes(range(256)) * 4)
        pipe.set(b"\x00\xff binary key \r\n", b"\x00\x01\x02\xfe")
        pipe.set("empty", "")
        pipe.set("counter", 42)
        pipe.set("big", rng.randbytes(300_000))
        pipe.hset("user:1", mapping={"name": "Zoë", "age": 41, "avatar": rng.randbytes(64)})
        pipe.hset("user:big", mapping={f"field:{i}": f"value {i} ✓" for i in range(600)})
        pipe.rpush("queue", "first", b"\x00second", "third")
        pipe.rpush("log", *[f"line {i}" for i in range(2000)])
        pipe.sadd("tags", "red", "grün", "青")
        pipe.sadd("ids", *range(1, 101))
        pipe.sadd("bigset", *[f"member-{i}" for i in range(1000)])
        pipe.zadd("scores", {"alice": 1.5, "bob": -2.25, "floor": float("-inf"), "ceiling": float("inf")})
        pipe.zadd("leaderboard", {f"player-{i}": rng.random() * 1000 for i in range(500)})
        pipe.pfadd("visitors", *[f"visitor-{i}" for i in range(300)])
        pipe.geoadd("places", (13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"))
        pipe.set("session:1", "alive", ex=3600)
        pipe.set("session:2", rng.randbytes(32), px=7_200_000)
        pipe.hset("cart:9", mapping={"sku": "A-1", "qty": 2})
        pipe.expire("cart:9", 5400)
        pipe.execute()
        for i in range(1, 41):
            client.xadd("events", {"n": i, "payload": rng.randbytes(8)}, id=f"1700000000000-{i}")
        client.xadd("events", {"n": "auto"})
        client.xgroup_create("events", "workers", id="0")
        client.xreadgroup("workers", "c1", {"events": ">"}, count=10)
        client.xreadgroup("workers", "c2", {"events": ">"}, count=5)
        client.xack("events", "workers", "1700000000000-1", "1700000000000-2")
        client.xdel("events", "1700000000000-20")
        client.function_load(SAMPLE_LIBRARY, replace=True)
    with contextlib.closing(server.client(1)) as client:
        client.hset("config", mapping={"mode": "production", "threads": 8})
        client.rpush("jobs", *[f"job-{i}" for i in range(50)])
        client.set("greeting", "db one has its own greeting")
    with contextlib.closing(server.client(5)) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(300):
            pipe.set(f"k:{i}", rng.randbytes(rng.randint(0, 40)))
        pipe.execute()
    with contextlib.closing(server.client(15)) as client:
        client.set("last-db", "with a TTL", ex=86_400)


def _value(client: Any, key: bytes, kind: str) -> Any:
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        info = client.xinfo_stream(key)
        groups = client.xinfo_groups(key)
        return {
            "entries": client.xrange(key),
            "last-generated-id": info["last-generated-id"],
            "groups": [
                {
                    **{k: v for k, v in group.items() if k != "lag"},
                    "pending": client.xpending_range(key, group["name"], "-", "+", 1000),
                    "consumers": sorted(c["name"] for c in client.xinfo_consumers(key, group["name"])),
                }
                for group in groups
            ],
        }
    raise AssertionError(f"unexpected type {kind} of key {key!r}")


def contents(server: RedisServer, databases: Sequence[int] = tuple(range(16))) -> dict[int, dict[bytes, Any]]:
    """Every key of every database: (type, value, TTL in ms or -1). Pending stream entries are
    compared without their idle times and delivery counts' timing."""
    result: dict[int, dict[bytes, Any]] = {}
    for db in databases:
        with contextlib.closing(server.client(db)) as client:
            keys = sorted(client.scan_iter(count=500))
            if not keys:
                continue
            entries = {}
            for key in keys:
                kind = client.type(key).decode()
                value = _value(client, key, kind)
                if kind == "stream":
                    for group in value["groups"]:
                        for entry in group["pending"]:
                            entry.pop("time_since_delivered", None)
                entries[key] = (kind, value, client.pttl(key))
            result[db] = entries
    return result


def functions(server: RedisServer) -> list[Any]:
    with contextlib.closing(server.client()) as client:
        return sorted(str(entry) for entry in client.function_list(withcode=True))


def assert_same_data(source: RedisServer, destination: RedisServer, ttl_slack_ms: int = 120_000) -> None:
    """Equal keys, types and values in every database; TTLs equal within ``ttl_slack_ms``."""
    expected, actual = contents(source), contents(destination)
    assert set(expected) == set(actual)
    for db, keys in expected.items():
        assert set(keys) == set(actual[db]), f"db{db}: different key sets"
        for key, (kind, value, ttl) in keys.items():
            got_kind, got_value, got_ttl = actual[db][key]
            assert (got_kind, got_value) == (kind, value), f"db{db} key {key!r} differs"
            if ttl < 0:
                assert got_ttl == ttl, f"db{db} key {key!r}: TTL {got_ttl}, expected none"
            else:
                assert got_ttl > 0 and abs(got_ttl - ttl) < ttl_slack_ms, (
                    f"db{db} key {key!r}: TTL {got_ttl} vs {ttl}"
                )
    assert functions(destination) == functions(source)


def reset(server: RedisServer) -> None:
    """Empty every database and drop every function library."""
    with contextlib.closing(server.client()) as client:
        client.flushall()
        client.function_flush()
