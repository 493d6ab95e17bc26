"""FTP storage: FTPS (explicit ``AUTH TLS``, certificate verified) unless ``allow_plaintext``.

Built on the standard library's ftplib, streaming both ways: a writer keeps one ``STOR`` data
connection open and sends every chunk as it comes, a reader hands out the ``RETR`` socket. A
transfer occupies its control connection, so every writer and reader logs in on its own; the
storage keeps one more, lazily, for listings and metadata. Writers upload to a hidden
``.NAME.partial-TOKEN`` in the same directory and rename it when the server confirmed the bytes.

Unlike django-storages' FTPStorage, nothing is buffered whole in memory and no message carries
the configuration: errors name the storage and the object's URL, never the password.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from operator import methodcaller
from pathlib import PurePosixPath
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

from backups.plugins import Option

from .base import (
    READ_CHUNK,
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

T = TypeVar("T")
IO_TIMEOUT = 120  # default seconds of silence mid-transfer before giving up (timeout_seconds)
REPLY_TIMEOUT = 5  # waiting for the reply to a transfer we cut ourselves (at most timeout_seconds)
FTP_ERRORS = ftplib.all_errors  # ftplib.Error, OSError (ssl.SSLError included), EOFError
_DISCARD_ERRORS: tuple[type[BaseException], ...] = (*FTP_ERRORS, StorageError)


class _FTPS(ftplib.FTP_TLS):
    """FTP_TLS that resumes the control connection's TLS session on data connections: vsftpd,
    ProFTPD and FileZilla Server refuse data connections that do not (ftplib does not)."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321  (TLS-wrapped below)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def _reply_code(exc: BaseException) -> str:
    return str(exc).strip()[:3] if isinstance(exc, ftplib.Error) else ""


_REPLIES = {
    "421": "the server closed the connection",
    "452": "the server is out of space (disk full or quota exceeded)",
    "552": "the server is out of space (disk full or quota exceeded)",
    "530": "not logged in",
    "550": "no such file or permission denied",
}


def _describe(exc: BaseException) -> str:
    """A plain sentence for what went wrong on the wire."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate could not be verified ({exc.verify_message}); set ca_file to the CA that signed it"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is an FTP server listening there?)"
    if isinstance(exc, ssl.SSLEOFError):
        return "the connection to the server was lost"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS connection failed ({exc.reason or exc})"
    if isinstance(exc, EOFError | ConnectionError):
        return "the connection to the server was lost"
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ftplib.Error):
        reply = str(exc).strip()
        return f"{_REPLIES[reply[:3]]}: {reply}" if reply[:3] in _REPLIES else f"the server said {reply}"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


class FTPStorage(BackupStorage):
    """A directory on an FTP server, over explicit TLS unless plaintext is explicitly allowed."""

    kind = "ftp"
    OPTIONS = {
        "host": Option(str, "the FTP server's host name or address", required=True),
        "port": Option(int, "the FTP control port (default 21)"),
        "user": Option(str, "the user to log in as", required=True),
        "password": Option(str, "the user's password", secret=True),
        "root": Option(str, "the remote directory that holds the backups (default: the login directory)"),
        "tls": Option(bool, "use explicit FTPS, AUTH TLS with protected data (default true)"),
        "allow_plaintext": Option(bool, "must be true to allow tls = false (password and data unencrypted)"),
        "ca_file": Option(str, "a PEM file of CAs to trust instead of the system's", path=True),
        "verify_tls": Option(bool, "verify the server certificate and host name (default true)"),
        "passive": Option(bool, "use passive mode data connections (default true)"),
        "connect_timeout": Option(int, "seconds to wait for the server to answer (default 10)"),
        "timeout_seconds": Option(
            int, "seconds a logged-in server may take to answer or to take more bytes (default 120)"
        ),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if options.get("tls") is False and options.get("allow_plaintext") is not True:
            why = "tls = false sends the password and backups unencrypted; set allow_plaintext = true too to allow it"
            problems.append(("tls", why))
        if "port" in options and not 0 < options["port"] < 65536:
            problems.append(("port", "must be between 1 and 65535"))
        if "connect_timeout" in options and options["connect_timeout"] <= 0:
            problems.append(("connect_timeout", "must be a positive number of seconds"))
        if options.get("timeout_seconds", IO_TIMEOUT) < 1:
            problems.append(("timeout_seconds", "must be at least 1"))
        return problems

    def __init__(self, name: str, options: dict[str, Any], prefix: str = "") -> None:
        super().__init__(name, options, prefix)  # validates; connecting waits for the first use
        self.host: str = options["host"]
        self.port: int = self.opt("port", 21)
        self.user: str = options["user"]
        self.tls: bool = self.opt("tls", True)
        self.io_timeout: int = self.opt("timeout_seconds", IO_TIMEOUT)
        self.reply_timeout = min(REPLY_TIMEOUT, self.io_timeout)
        root = str(self.opt("root", "")).rstrip("/")
        self.root = root or ("/" if str(self.opt("root", "")).startswith("/") else "")
        self._ftp: ftplib.FTP | None = None

    # -- messages --------------------------------------------------------------------------------

    def _scrub(self, message: str) -> str:
        # A server may echo a command back in an error; never let the password through. (One to
        # three characters would blank out ordinary words and protect nothing anyway.)
        password = self.options.get("password") or ""
        return message.replace(password, "***") if len(password) >= 4 else message

    def error(self, action: str, path: str, exc: BaseException | str) -> StorageError:
        why = exc if isinstance(exc, str) else _describe(exc)
        if isinstance(exc, TimeoutError):
            why = f"the server timed out: nothing sent or received for {self.io_timeout} s (timeout_seconds)"
        return StorageError(self._scrub(f"{self.name}: {action} {self.url(path)}: {why}"))

    # -- paths -------------------------------------------------------------------------------------

    def remote(self, path: str) -> str:
        """The server path of an object: root, prefix, path (relative roots start at the login dir)."""
        key = self.key(path)
        if "\r" in key or "\n" in key:  # would end the FTP command line
            raise StorageError(f"{self.name}: invalid object path {path!r}")
        return str(PurePosixPath(self.root) / key) if self.root else key

    def base(self) -> str:
        """The server directory that holds this storage's objects."""
        if not self.prefix:
            return self.root
        return str(PurePosixPath(self.root) / self.prefix) if self.root else self.prefix

    def url(self, remote: str) -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{quote(self.user, safe='')}@{self.host}:{self.port}/{remote.lstrip('/')}"

    def location(self, path: str) -> str:
        return self.url(self.remote(path))

    # -- connections -------------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        ca_file = self.opt("ca_file")
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise StorageError(f"{self.name}: cannot load ca_file {ca_file}: {_describe(exc)}") from None
        if self.opt("verify_tls", True) is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def login(self) -> ftplib.FTP:
        """A new control connection, logged in, binary mode, data protected when TLS is on."""
        timeout = self.opt("connect_timeout", 10)
        # Plain FTP only when check_options saw allow_plaintext = true.
        ftp = _FTPS(context=self._context(), timeout=timeout) if self.tls else ftplib.FTP(timeout=timeout)  # noqa: S321
        step = "connect"
        try:
            ftp.connect(self.host, self.port)
            if isinstance(ftp, _FTPS):
                step = "auth"
                ftp.auth()
            step = "login"
            ftp.login(self.user, self.opt("password", ""))
            step = "setup"
            if isinstance(ftp, _FTPS):
                ftp.prot_p()
            ftp.voidcmd("TYPE I")  # binary, and SIZE is refused in ASCII mode by many servers
            ftp.set_pasv(self.opt("passive", True))
            _timeout(ftp, self.io_timeout)
        except FTP_ERRORS as exc:
            ftp.close()
            why = _describe(exc)
            if step == "auth" and isinstance(exc, ftplib.Error):
                why = f"the server does not offer explicit TLS (AUTH TLS: {exc}); plain FTP needs tls = false and allow_plaintext = true"
            elif step == "login" and _reply_code(exc) == "530":
                why = f"login as {self.user!r} failed: wrong user or password"
            raise StorageError(
                self._scrub(f"{self.name}: cannot connect to {self.url(self.root)}: {why}")
            ) from None
        return ftp

    def _run(self, action: str, remote: str, operation: Callable[[ftplib.FTP], T]) -> T:
        """Run ``operation`` on the shared control connection, reconnecting once if an idle one
        was dropped by the server meanwhile (a long upload leaves it idle for hours)."""
        while True:
            fresh = self._ftp is None
            if self._ftp is None:
                self._ftp = self.login()
            try:
                return operation(self._ftp)
            except (OSError, EOFError, ftplib.error_temp, ftplib.error_reply) as exc:
                self._drop()
                if fresh or not (isinstance(exc, OSError | EOFError) or _reply_code(exc) == "421"):
                    raise self.error(action, remote, exc) from None
            except ftplib.Error as exc:
                raise self.error(action, remote, exc) from None

    def _drop(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            ftp.close()

    def close(self) -> None:
        if self._ftp is not None:
            with contextlib.suppress(*FTP_ERRORS):
                self._ftp.quit()
        self._drop()

    # -- the contract --------------------------------------------------------------------------------

    def open_writer(self, path: str) -> ObjectWriter:
        return _FTPWriter(self, self.remote(path))

    def open_reader(self, path: str) -> BinaryIO:
        remote = self.remote(path)
        ftp = self.login()
        try:
            data = ftp.transfercmd(f"RETR {remote}")
            data.settimeout(self.io_timeout)
        except FTP_ERRORS as exc:
            ftp.close()
            if _reply_code(exc) == "550":
                raise self.error("cannot read", remote, "it does not exist (or is not readable)") from None
            raise self.error("cannot read", remote, exc) from None
        return io.BufferedReader(_FTPReader(self, remote, ftp, data), buffer_size=READ_CHUNK)

    def exists(self, path: str) -> bool:
        remote = self.remote(path)
        return self._run("cannot check", remote, lambda ftp: _size(ftp, remote)) is not None

    def size(self, path: str) -> int:
        remote = self.remote(path)
        size = self._run("cannot stat", remote, lambda ftp: _size(ftp, remote))
        if size is None:
            raise self.error("cannot stat", remote, "it does not exist")
        return size

    def delete(self, path: str) -> None:
        remote = self.remote(path)

        def delete(ftp: ftplib.FTP) -> None:
            try:
                ftp.delete(remote)
            except ftplib.error_perm:
                if _size(ftp, remote) is not None:  # 550 for a missing file is fine; not otherwise
                    raise

        self._run("cannot delete", remote, delete)

    def check_writable(self) -> None:
        base = self.base()
        probe = _join(base, probe_name())

        def probe_it(ftp: ftplib.FTP) -> None:
            _mkdirs(ftp, base)
            ftp.storbinary(f"STOR {probe}", io.BytesIO(b"ok"))
            ftp.delete(probe)

        self._run("cannot write a test file to", base or ".", probe_it)

    def sweep_partials(self, path: str) -> int:
        remote = PurePosixPath(self.remote(path))
        parent = str(remote.parent) if str(remote.parent) != "." else ""
        listing = self._listing(parent, recursive=False)
        leftovers = [entry for entry, _ in listing if is_partial_of(PurePosixPath(entry).name, remote.name)]
        for leftover in leftovers:
            self._run("cannot delete", leftover, methodcaller("delete", leftover))
        return len(leftovers)

    def sweep_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        # The server's clock stamps "modify": skew matters only for cutoffs of a few minutes.
        cutoff = datetime.now(UTC) - older_than
        removed = 0
        for remote, facts in self._listing(self.base()):
            modified = _modified(facts)
            if is_partial(PurePosixPath(remote).name) and modified is not None and modified < cutoff:
                self._run("cannot delete", remote, methodcaller("delete", remote))
                removed += 1
        return removed

    def list_objects(self) -> Iterator[StoredObject]:
        base = self.base()
        for remote, facts in sorted(self._listing(base), key=lambda entry: entry[0]):
            name = PurePosixPath(remote).name
            if is_partial(name) or is_probe(name):
                continue
            relative = remote[len(base) :].lstrip("/") if base else remote
            yield StoredObject(path=relative, size=int(facts.get("size", 0)), modified=_modified(facts))

    def _listing(self, directory: str, recursive: bool = True) -> list[tuple[str, dict[str, str]]]:
        """(server path, MLSD facts) of every file under ``directory``; a missing one is empty."""

        def walk(ftp: ftplib.FTP, current: str) -> Iterator[tuple[str, dict[str, str]]]:
            try:  # read each listing whole: the control connection is busy until it ends
                entries = list(ftp.mlsd(current, facts=["type", "size", "modify"]))
            except ftplib.error_perm as exc:
                if _reply_code(exc) in ("500", "502"):  # unknown command (501 is pyftpdlib's "no such dir")
                    raise StorageError(self._scrub(
                        f"{self.name}: the server at {self.url(current)} does not support MLSD (RFC 3659), needed to list backups"
                    )) from None  # fmt: skip
                if current == directory:
                    return  # not created yet: nothing stored
                raise
            for name, facts in entries:
                kind = facts.get("type", "").lower()
                if kind == "file":
                    yield _join(current, name), facts
                elif kind == "dir" and recursive and name not in (".", ".."):
                    yield from walk(ftp, _join(current, name))

        return self._run("cannot list", directory or ".", lambda ftp: list(walk(ftp, directory)))


class _FTPWriter(ObjectWriter):
    """Streams into ``STOR <temp>`` on its own control connection, then renames the temporary."""

    def __init__(self, storage: FTPStorage, final: str) -> None:
        self.storage, self.final = storage, final
        name = PurePosixPath(final)
        self.temp = str(name.with_name(partial_name(name.name, uuid.uuid4().hex[:12])))
        self.size = 0
        self.done = False
        self.ftp: ftplib.FTP | None = storage.login()
        self.data: socket.socket | None = None
        try:
            _mkdirs(self.ftp, str(name.parent) if str(name.parent) != "." else "")
            self.data = self.ftp.transfercmd(f"STOR {self.temp}")
            self.data.settimeout(storage.io_timeout)
        except FTP_ERRORS as exc:
            self._discard()
            raise storage.error("cannot start uploading", final, exc) from None

    def write(self, data: bytes) -> None:
        if self.data is None:
            raise StorageError(f"{self.storage.name}: the upload of {self.storage.url(self.final)} has ended")
        try:
            self.data.sendall(data)
        except FTP_ERRORS as exc:
            # The server's reason (552 disk full, 426...) is on the control connection, if any.
            raise self.storage.error("upload failed for", self.final, self._reason(exc)) from None
        self.size += len(data)

    def _reason(self, exc: BaseException) -> BaseException:
        self._close_data()
        if self.ftp is not None:
            try:
                _timeout(self.ftp, self.storage.reply_timeout)
                self.ftp.voidresp()
            except ftplib.Error as reply:
                return reply
            except (OSError, EOFError):
                pass
        return exc

    def commit(self) -> StoredObject:
        if self.done or self.data is None or self.ftp is None:
            if not self.done:
                self._discard()  # after a failed write: a failed commit leaves nothing behind
            raise StorageError(f"{self.storage.name}: the upload of {self.storage.url(self.final)} has ended")
        ftp = self.ftp
        try:
            data, self.data = self.data, None
            if isinstance(data, ssl.SSLSocket):
                data = data.unwrap()  # close_notify: a clean end of the upload, as FTPS servers expect
            data.close()
            ftp.voidresp()  # 226: the server has every byte
            stored = _size(ftp, self.temp)
            if stored != self.size:
                raise self.storage.error(
                    "cannot commit", self.final, f"the server holds {stored} of {self.size} bytes"
                )
            # RNFR/RNTO overwrites on most servers, so look first. Not race-free: a writer that
            # creates the name between this check and the rename loses its object.
            if _size(ftp, self.final) is not None:
                raise self.storage.error("cannot commit", self.final, "it already exists; not overwriting it")
            ftp.rename(self.temp, self.final)
        except StorageError:
            self._discard()
            raise
        except FTP_ERRORS as exc:
            self._discard()
            raise self.storage.error("cannot commit", self.final, exc) from None
        self.done = True
        self._quit()
        return StoredObject(path=self.final, size=self.size)

    def abort(self) -> None:
        if self.done:
            return
        # No ABOR: it needs urgent (OOB) data, which TLS sockets cannot send. Closing the data
        # connection ends the transfer; the server then replies 226 or 426 on the control one.
        if self.data is not None:
            self._reason(OSError())
        self._discard()

    def _discard(self) -> None:
        """Remove the temporary (on a fresh connection if ours is broken); leave it to the sweep
        if even that fails. Never raises: it runs while another error is being reported."""
        self.done = True
        self._close_data()
        for _ in range(2):  # ours, then a fresh connection
            try:
                self.ftp = self.ftp or self.storage.login()
                with contextlib.suppress(ftplib.error_perm):  # 550: never created, or gone
                    self.ftp.delete(self.temp)
                break
            except _DISCARD_ERRORS:
                self._quit()
        self._quit()

    def _close_data(self) -> None:
        data, self.data = self.data, None
        if data is not None:
            with contextlib.suppress(OSError):
                data.close()

    def _quit(self) -> None:
        ftp, self.ftp = self.ftp, None
        if ftp is not None:
            with contextlib.suppress(*FTP_ERRORS):
                _timeout(ftp, self.storage.reply_timeout)
                ftp.quit()
            ftp.close()


class _FTPReader(ObjectReader):
    """The ``RETR`` data connection as a raw stream; EOF counts only with the server's 226."""

    def __init__(self, storage: FTPStorage, remote: str, ftp: ftplib.FTP, data: socket.socket) -> None:
        self.storage, self.remote, self.ftp = storage, remote, ftp
        self.data: socket.socket | None = data

    def readinto(self, buffer: Any) -> int:
        if self.data is None:
            return 0
        try:
            count = self.data.recv_into(buffer)
        except FTP_ERRORS as exc:
            self._end(wait=False)
            raise self.storage.error("download failed for", self.remote, exc) from None
        if count == 0:  # TLS tolerates an unannounced EOF, so only the 226 proves it all arrived
            data, self.data = self.data, None
            try:
                if isinstance(data, ssl.SSLSocket):
                    with contextlib.suppress(OSError):
                        data = data.unwrap()
                data.close()
                self.ftp.voidresp()
            except FTP_ERRORS as exc:
                raise self.storage.error("download did not complete for", self.remote, exc) from None
            finally:
                self._end(wait=False)
        return count

    def _end(self, wait: bool) -> None:
        data, self.data = self.data, None
        if data is not None:
            with contextlib.suppress(OSError):
                data.close()
        with contextlib.suppress(*FTP_ERRORS):
            _timeout(self.ftp, self.storage.reply_timeout)
            if wait:
                self.ftp.getresp()  # the 426 for the transfer cut short
            self.ftp.quit()
        self.ftp.close()

    def close(self) -> None:
        if not self.closed and self.ftp.sock is not None:
            self._end(wait=self.data is not None)
        super().close()


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if directory else name


def _timeout(ftp: ftplib.FTP, seconds: float) -> None:
    if ftp.sock is not None:
        ftp.sock.settimeout(seconds)


def _size(ftp: ftplib.FTP, remote: str) -> int | None:
    """The size of a file, or None if there is none (SIZE answers 550). Binary mode first: a
    listing leaves the connection in ASCII mode, where servers refuse SIZE with a 550 too
    (pyftpdlib, vsftpd), which would read as "no such file"."""
    ftp.voidcmd("TYPE I")
    try:
        size = ftp.size(remote)
    except ftplib.error_perm as exc:
        if _reply_code(exc) == "550":
            return None
        raise
    return size


def _mkdirs(ftp: ftplib.FTP, directory: str) -> None:
    """mkdir -p: MKD each level, ignoring refusals (it exists); the STOR reports a real failure."""
    path = PurePosixPath(directory)
    for level in [*reversed(path.parents), path]:
        if str(level) not in ("", ".", "/"):
            with contextlib.suppress(ftplib.error_perm):
                ftp.mkd(str(level))


def _modified(facts: dict[str, str]) -> datetime | None:
    with contextlib.suppress(ValueError, KeyError):
        return datetime.strptime(facts["modify"][:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return None
