"""SFTP storage: a directory on an SSH server, through paramiko.

The server's host key is checked against a known_hosts file or a pinned SHA256 fingerprint right
after the key exchange and before any authentication, so an unknown or changed key gets neither
credentials nor bytes (unlike django-storages' SFTPStorage, which auto-adds unknown keys).
Writers create a hidden ``.NAME.partial-TOKEN`` file (0600 from the start) next to the final
name, pipeline their writes, and rename it when complete. SFTP v3 ``rename`` never replaces an
existing file (OpenSSH implements it as link + unlink); ``posix-rename`` would, so it is not used.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import hashlib
import io
import logging
import posixpath
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import paramiko
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE

from backups.plugins import Option

from .base import (
    STALE_AFTER,
    BackupStorage,
    ObjectReader,
    ObjectWriter,
    StorageError,
    StoredObject,
    is_partial,
    is_partial_of,
    is_probe,
    partial_name,
    probe_name,
)

log = logging.getLogger(__name__)

REQUEST = paramiko.SFTPFile.MAX_REQUEST_SIZE  # 32 KiB: the largest read/write all servers accept
READ_AHEAD = 4 * 1024 * 1024  # read requests in flight per reader: fast, and bounded memory
WINDOW = 8 * 1024 * 1024  # SSH channel window: room for READ_AHEAD of answers plus headroom
IO_TIMEOUT = 120  # default seconds without progress after which a connected server is given up on
KEEPALIVE = 30  # seconds: keeps NAT/firewall state alive while a slow dump produces nothing
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")
_KEY_TYPES = {  # the "(TYPE)" that ssh-keygen -lf prints, to ask the server for that key
    "ED25519": ["ssh-ed25519"],
    "RSA": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
    "ECDSA": ["ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"],
}


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as ``ssh-keygen -lf`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _reason(exc: BaseException, timeout: int = IO_TIMEOUT) -> str:
    """A plain sentence for an SFTP or connection error (paramiko's texts never hold secrets)."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return "no such file or directory"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code in (errno.ENOSPC, errno.EDQUOT) or "space" in str(exc).lower():
        return "no space left on the server"
    if isinstance(exc, TimeoutError):
        return f"the server timed out: no answer within {timeout} s (timeout_seconds)"
    if isinstance(exc, EOFError | paramiko.SSHException | ConnectionError) or "closed" in str(exc):
        return "the connection to the server was lost"
    if str(exc) == "Failure":  # SFTP v3 has no code for a full disk, a quota, ...; OpenSSH says this
        return "the server reported a failure (a full disk or quota, or a similar problem)"
    return str(exc) or type(exc).__name__


class _StallGuard:
    """The TCP socket under paramiko's transport, failing a send that has made no progress for
    ``timeout`` seconds. paramiko retries a send its socket timeout interrupted for as long as
    the transport is open (``Packetizer.write_all``), and the channel's timeout covers only the
    wait for SSH window: a link that stalls once the socket's buffer is full would hang forever."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock, self.timeout = sock, timeout
        self.blocked_since: float | None = None
        self.stalled = False

    def send(self, data: bytes) -> int:
        try:
            sent = self.sock.send(data)
        except TimeoutError:  # paramiko's short poll timeout: nothing went out this time
            now = time.monotonic()
            if self.blocked_since is None:
                self.blocked_since = now
            if now - self.blocked_since < self.timeout:
                raise
            self.stalled = True
            raise BrokenPipeError(errno.EPIPE, "the server took no bytes") from None  # not retried
        self.blocked_since = None
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _SFTPWriter(ObjectWriter):
    def __init__(self, storage: SFTPStorage, final: str) -> None:
        self.storage, self.final = storage, final
        directory, base = posixpath.split(final)
        self.temp = posixpath.join(directory, partial_name(base, uuid.uuid4().hex[:12]))
        self.written = 0
        self.done = False
        storage.makedirs(directory)
        self.handle = storage.create(self.temp)

    def write(self, data: bytes) -> None:
        if self.done:
            raise StorageError(f"{self.storage.name}: writer for {self.final} is already closed")
        try:
            self.handle.write(data)
        except Exception as exc:
            raise self.storage.error("write failed for", self.final, exc) from None
        self.written += len(data)

    def commit(self) -> StoredObject:
        if self.done:
            raise StorageError(f"{self.storage.name}: writer for {self.final} is already closed")
        sftp, where = self.handle.sftp, f"{self.storage.name}: {self.storage.where(self.final)}"
        exists = StorageError(f"{where} already exists; not overwriting it")
        try:
            _drain_acks(self.handle)
            self.handle.close()
            size = sftp.stat(self.temp).st_size
            if size != self.written:
                raise StorageError(f"{where} holds {size} of the {self.written} bytes written")
            if self.storage.exists_remote(self.final):  # the common case; the rename is the guard
                raise exists
            try:
                sftp.rename(self.temp, self.final)  # SFTP v3 rename: fails if the target exists
            except OSError:
                if self.storage.exists_remote(self.final):
                    raise exists from None
                raise
        except StorageError:
            self.abort()
            raise
        except Exception as exc:
            error = self.storage.error("cannot commit", self.final, exc)
            self.abort()
            raise error from None
        self.done = True
        return StoredObject(path=self.final, size=size)

    def abort(self) -> None:
        """Close and remove the temporary, reconnecting once if the connection was lost; if the
        server is unreachable the temporary stays for :meth:`SFTPStorage.sweep_stale`."""
        if self.done:
            return
        self.done = True
        raw: Any = self.handle
        # Unsent bytes and unread acks are moot; left there, close() would raise on them (a full
        # disk) before it closes the server's handle, which keeps the unlinked file's space.
        raw._wbuffer, raw._reqs = io.BytesIO(), collections.deque()
        with contextlib.suppress(Exception):
            self.handle.close()
        raw._closed = True  # a close that failed on a dead link must not be retried by __del__
        with contextlib.suppress(Exception):
            self.storage.client().remove(self.temp)


def _drain_acks(handle: paramiko.SFTPFile) -> None:
    # paramiko checks the acks of pipelined writes only while more than 100 are pending and drops
    # the rest at close(): read them here so a failed write (a full disk) is not lost.
    raw: Any = handle
    raw.flush()
    while raw._reqs:
        raw.sftp._read_response(raw._reqs.popleft())


class _Reader(ObjectReader):
    """Reads ahead READ_AHEAD bytes at a time with pipelined requests (``readv``); paramiko's
    ``prefetch()`` would buffer the whole rest of the file in memory."""

    def __init__(self, storage: SFTPStorage, handle: paramiko.SFTPFile, size: int, path: str) -> None:
        self.storage, self.handle, self.size, self.path = storage, handle, size, path
        self.requested = 0
        self.pending: Iterator[bytes] = iter(())
        self.left = memoryview(b"")

    def readinto(self, buffer: Any) -> int:
        try:
            while not self.left:
                chunk = next(self.pending, None)
                if chunk is not None:
                    self.left = memoryview(chunk)
                    continue
                if self.requested >= self.size:
                    return 0
                end = min(self.requested + READ_AHEAD, self.size)
                batch = [(at, min(REQUEST, end - at)) for at in range(self.requested, end, REQUEST)]
                self.requested = end
                self.pending = iter(self.handle.readv(batch))
        except Exception as exc:
            raise self.storage.error("read failed for", self.path, exc) from None
        count = min(len(buffer), len(self.left))
        buffer[:count] = self.left[:count]
        self.left = self.left[count:]
        return count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()
        super().close()


class SFTPStorage(BackupStorage):
    """A directory on an SSH server (SFTP), one connection per storage object, made when used."""

    kind = "sftp"
    OPTIONS = {
        "host": Option(str, "the SSH server's host name or address", required=True),
        "port": Option(int, "the SSH port (default 22)"),
        "user": Option(str, "the user to log in as", required=True),
        "password": Option(str, "the user's password (or use private_key)", secret=True),
        "private_key": Option(str, "a private key file (OpenSSH or PEM format)", path=True),
        "private_key_passphrase": Option(str, "the passphrase of an encrypted private_key", secret=True),
        "known_hosts": Option(str, "a known_hosts file that holds the server's host key", path=True),
        "host_key_fingerprint": Option(
            str, "the server's pinned host key, SHA256:... as ssh-keygen -lf prints it"
        ),
        "root": Option(str, "the remote directory that holds the backups (default: the login directory)"),
        "connect_timeout": Option(int, "seconds to wait for the server when connecting (default 10)"),
        "timeout_seconds": Option(
            int, "seconds a connected server may take to answer or to take more bytes (default 120)"
        ),
    }

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)
        self.host: str = options["host"]
        self.port: int = self.opt("port", 22)
        self.user: str = options["user"]
        self.root: str = posixpath.normpath(self.opt("root", "."))
        self.timeout: int = self.opt("connect_timeout", 10)
        self.io_timeout: int = self.opt("timeout_seconds", IO_TIMEOUT)
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()  # directories known to exist on this connection
        self._guard: _StallGuard | None = None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        pinned, known = options.get("host_key_fingerprint"), options.get("known_hosts")
        if pinned and known:
            problems.append(
                ("host_key_fingerprint", "set either known_hosts or host_key_fingerprint, not both")
            )
        elif not pinned and not known:
            problems.append(("known_hosts", "required: set known_hosts (a file) or host_key_fingerprint (SHA256:...); unknown host keys are refused"))  # fmt: skip
        elif pinned and not _FINGERPRINT.search(pinned):
            problems.append(("host_key_fingerprint", "must be SHA256:... (43 base64 characters) as ssh-keygen -lf prints it"))  # fmt: skip
        if not options.get("password") and not options.get("private_key"):
            problems.append(("password", "required: set password or private_key"))
        if options.get("private_key_passphrase") and not options.get("private_key"):
            problems.append(("private_key_passphrase", "needs private_key"))
        if not 0 < options.get("port", 22) < 65536:
            problems.append(("port", "must be between 1 and 65535"))
        if options.get("connect_timeout", 10) <= 0:
            problems.append(("connect_timeout", "must be more than 0 seconds"))
        if options.get("timeout_seconds", IO_TIMEOUT) < 1:
            problems.append(("timeout_seconds", "must be at least 1"))
        return problems

    # -- the connection ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def client(self) -> paramiko.SFTPClient:
        """The open SFTP session, (re)connecting if there is none or the last one broke."""
        transport, sftp = self._transport, self._sftp
        channel = sftp.get_channel() if sftp else None
        if transport and sftp and channel and transport.is_active() and not channel.closed:
            return sftp
        self.close()
        where = f"{self.name}: cannot connect to {self.endpoint}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror:
            raise StorageError(f"{self.name}: cannot resolve host name {self.host!r}") from None
        except ConnectionRefusedError:
            raise StorageError(f"{where}: connection refused (is the SSH server running?)") from None
        except TimeoutError:
            raise StorageError(f"{where}: no answer within {self.timeout} s") from None
        except OSError as exc:
            raise StorageError(f"{where}: {exc.strerror or exc}") from None
        guard = _StallGuard(sock, self.io_timeout)
        transport = paramiko.Transport(cast(socket.socket, guard))  # a socket-like object
        try:
            transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = self.timeout
            self._prefer_key_types(transport)
            done = threading.Event()  # start_client(timeout=) returns quietly when it expires
            transport.start_client(done)
            if not done.wait(self.timeout) or not transport.is_active():
                reason = transport.get_exception() or f"no answer within {self.timeout} s"
                raise StorageError(f"{where}: SSH handshake failed ({reason})")
            self._verify_host_key(transport.get_remote_server_key())  # before any credential
            self._authenticate(transport)
            transport.set_keepalive(KEEPALIVE)
            sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW)
            if sftp is None:
                raise StorageError(f"{where}: the server refused the SFTP subsystem")
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.io_timeout)
        except BaseException as exc:
            transport.close()
            if isinstance(exc, Exception) and not isinstance(exc, StorageError):
                raise StorageError(f"{where}: {_reason(exc, self.io_timeout)}") from None
            raise
        self._transport, self._sftp, self._guard = transport, sftp, guard
        log.debug("%s: connected to %s as %s", self.name, self.endpoint, self.user)
        return sftp

    def _prefer_key_types(self, transport: paramiko.Transport) -> None:
        """Ask for the type of key we know, so a server with several keys shows that one."""
        wanted: list[str] = []
        if pinned := self.opt("host_key_fingerprint"):
            wanted = next((types for word, types in _KEY_TYPES.items() if f"({word})" in pinned), [])
        elif (known := self._known_keys()) is not None:
            wanted = [t for k in known for t in (_KEY_TYPES["RSA"] if k == "ssh-rsa" else [k])]
        options = transport.get_security_options()
        offered = list(options.key_types)
        first = [t for t in dict.fromkeys(wanted) if t in offered]
        options.key_types = first + [t for t in offered if t not in first]

    def _known_keys(self) -> Any:
        """The known_hosts keys for this host:port by type (hashed names work), or None."""
        path = self.opt("known_hosts")
        try:
            keys = paramiko.HostKeys(path)
        except OSError as exc:
            raise StorageError(
                f"{self.name}: cannot read known_hosts {path}: {exc.strerror or exc}"
            ) from None
        return keys.lookup(self.host if self.port == 22 else f"[{self.host}]:{self.port}")

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        got = f"{fingerprint(key)} {key.get_name()}"
        if pinned := self.opt("host_key_fingerprint"):
            match = _FINGERPRINT.search(pinned)
            if match is None or match.group().rstrip("=") != fingerprint(key):
                raise StorageError(
                    f"{self.name}: host key for {self.endpoint} is not the pinned one (got {got}, pinned {pinned}); refusing to connect"
                )
            return
        path, known = self.opt("known_hosts"), self._known_keys()
        if known is None:
            raise StorageError(
                f"{self.name}: host key for {self.endpoint} is unknown: known_hosts {path} has no entry for it (got {got}); check the key and add it, e.g. with ssh-keyscan -p {self.port} {self.host}"
            )
        if not any(k.asbytes() == key.asbytes() for k in known.values()):
            raise StorageError(
                f"{self.name}: host key for {self.endpoint} does not match known_hosts {path} (got {got}): the key changed or this is not the server you think; refusing to connect"
            )

    def _authenticate(self, transport: paramiko.Transport) -> None:
        failed = f"{self.name}: authentication as {self.user!r} at {self.endpoint} failed"
        password, key_path = self.opt("password"), self.opt("private_key")
        try:
            if key_path:
                try:
                    passphrase = self.opt("private_key_passphrase")
                    pkey = paramiko.PKey.from_path(key_path, passphrase.encode() if passphrase else None)
                except (paramiko.PasswordRequiredException, TypeError):  # TypeError: OpenSSH format
                    need = "is not encrypted; remove" if passphrase else "is encrypted; set"
                    raise StorageError(f"{self.name}: private_key {key_path} {need} private_key_passphrase") from None  # fmt: skip
                except OSError as exc:
                    raise StorageError(f"{self.name}: cannot read private_key {key_path}: {exc.strerror or exc}") from None  # fmt: skip
                except (paramiko.SSHException, ValueError):
                    raise StorageError(f"{self.name}: cannot load private_key {key_path}: wrong private_key_passphrase, or not a supported key") from None  # fmt: skip
                try:
                    transport.auth_publickey(self.user, pkey)
                except paramiko.AuthenticationException:
                    if not password:
                        raise
            if password and not transport.is_authenticated():
                transport.auth_password(self.user, password)
        except paramiko.BadAuthenticationType as exc:
            raise StorageError(f"{failed}: the server only accepts {', '.join(exc.allowed_types)}") from None
        except paramiko.AuthenticationException:
            what = "password or key" if password and key_path else "password" if password else "key"
            raise StorageError(f"{failed}: wrong {what}, or the user may not log in") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise StorageError(f"{failed}: {_reason(exc)}") from None
        if not transport.is_authenticated():
            raise StorageError(f"{failed}: the server asks for more authentication steps than this supports")

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
        self._transport = self._sftp = self._guard = None
        self._dirs.clear()

    # -- remote helpers ------------------------------------------------------------------------

    def remote(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.root, self.key(path)))

    def where(self, remote: str) -> str:
        shown = remote if remote.startswith("/") else "/~/" + remote
        return f"sftp://{quote(self.user, safe='')}@{self.endpoint}{shown}"

    def error(self, action: str, remote: str, exc: BaseException) -> StorageError:
        reason = _reason(exc, self.io_timeout)
        if self._guard is not None and self._guard.stalled:
            reason = f"the server stalled: it took no bytes for {self.io_timeout} s (timeout_seconds)"
        if isinstance(exc, TimeoutError | EOFError | ConnectionError | paramiko.SSHException):
            self.close()  # the session may be out of step or dead: the next call reconnects
        return StorageError(f"{self.name}: {action} {self.where(remote)}: {reason}")

    @contextlib.contextmanager
    def failing(self, action: str, remote: str) -> Iterator[None]:
        """Turns any error but a StorageError into one that names the storage and the path."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            raise self.error(action, remote, exc) from None

    def stat(self, remote: str) -> paramiko.SFTPAttributes | None:
        """The file's attributes; None when it does not exist."""
        with self.failing("cannot stat", remote), contextlib.suppress(FileNotFoundError):
            return self.client().stat(remote)
        return None

    def exists_remote(self, remote: str) -> bool:
        attrs = self.stat(remote)
        return attrs is not None and stat.S_ISREG(attrs.st_mode or 0)

    def makedirs(self, directory: str) -> None:
        """mkdir -p, remembering what exists so a writer costs no extra round trips."""
        if directory in ("", ".", "/") or directory in self._dirs:
            return
        attrs = self.stat(directory)
        if attrs is None:
            self.makedirs(posixpath.dirname(directory))
            try:
                self.client().mkdir(directory)
            except Exception as exc:  # another writer may have made it meanwhile
                attrs = self.stat(directory)
                if attrs is None:
                    raise self.error("cannot create directory", directory, exc) from None
        if attrs is not None and not stat.S_ISDIR(attrs.st_mode or 0):
            raise StorageError(f"{self.name}: {self.where(directory)} exists but is not a directory")
        self._dirs.add(directory)

    def create(self, remote: str) -> paramiko.SFTPFile:
        """A new file (O_EXCL), 0600 from the start, with pipelined writes."""
        sftp: Any = self.client()
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = 0o600  # paramiko's open() cannot pass a mode; a chmod after it is too late
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        with self.failing("cannot create", remote):
            kind, msg = sftp._request(CMD_OPEN, remote, flags, attrs)
            if kind != CMD_HANDLE:
                raise paramiko.SFTPError("Expected handle")
        handle = paramiko.SFTPFile(sftp, msg.get_binary(), "wb", REQUEST)
        handle.set_pipelined(True)
        return handle

    def walk(self, directory: str) -> Iterator[tuple[str, paramiko.SFTPAttributes]]:
        """(path, attributes) of every regular file under ``directory``; none if it is missing."""
        entries: list[paramiko.SFTPAttributes] = []
        with self.failing("cannot list", directory), contextlib.suppress(FileNotFoundError):
            entries = self.client().listdir_attr(directory)
        for entry in sorted(entries, key=lambda e: e.filename):
            full = posixpath.join(directory, entry.filename)
            if stat.S_ISDIR(entry.st_mode or 0):
                yield from self.walk(full)
            elif stat.S_ISREG(entry.st_mode or 0):
                yield full, entry

    @property
    def base(self) -> str:
        return posixpath.normpath(posixpath.join(self.root, self.prefix))

    def remove(self, remote: str) -> None:
        with self.failing("cannot delete", remote), contextlib.suppress(FileNotFoundError):
            self.client().remove(remote)

    # -- the contract --------------------------------------------------------------------------

    def open_writer(self, path: str) -> ObjectWriter:
        return _SFTPWriter(self, self.remote(path))

    def open_reader(self, path: str) -> BinaryIO:
        remote = self.remote(path)
        if (attrs := self.stat(remote)) is None:
            raise StorageError(f"{self.name}: {self.where(remote)} does not exist")
        with self.failing("cannot read", remote):
            handle = self.client().open(remote, "rb")
        size = attrs.st_size or 0
        return io.BufferedReader(_Reader(self, handle, size, remote), buffer_size=REQUEST)

    def exists(self, path: str) -> bool:
        return self.exists_remote(self.remote(path))

    def size(self, path: str) -> int:
        remote = self.remote(path)
        attrs = self.stat(remote)
        if attrs is None:
            raise StorageError(f"{self.name}: {self.where(remote)} does not exist")
        return attrs.st_size or 0

    def delete(self, path: str) -> None:
        self.remove(self.remote(path))

    def check_writable(self) -> None:
        self.makedirs(self.root)
        probe = posixpath.join(self.root, probe_name())
        try:
            with self.failing("cannot write a test file in the directory", self.root):
                self.client().putfo(io.BytesIO(b"ok"), probe, confirm=True)
        finally:
            with contextlib.suppress(Exception):
                self.remove(probe)

    def sweep_partials(self, path: str) -> int:
        directory, name = posixpath.split(self.remote(path))
        names: list[str] = []
        with self.failing("cannot list", directory), contextlib.suppress(FileNotFoundError):
            names = self.client().listdir(directory)
        leftovers = [n for n in names if is_partial_of(n, name)]
        for leftover in leftovers:
            self.remove(posixpath.join(directory, leftover))
        return len(leftovers)

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        cutoff = time.time() - older_than.total_seconds()  # the server's clock: keep the margin wide
        removed = 0
        for full, attrs in list(self.walk(self.base)):
            name = posixpath.basename(full)
            if (is_partial(name) or is_probe(name)) and (attrs.st_mtime or 0) < cutoff:
                self.remove(full)
                removed += 1
        return removed

    def list_objects(self) -> Iterator[StoredObject]:
        base = self.base
        for full, attrs in self.walk(base):
            name = posixpath.basename(full)
            if is_partial(name) or is_probe(name):
                continue
            yield StoredObject(
                path=posixpath.relpath(full, base),
                size=attrs.st_size or 0,
                modified=datetime.fromtimestamp(attrs.st_mtime or 0, tz=UTC),
            )

    def location(self, path: str) -> str:
        return self.where(self.remote(path))
