"""A real FTP server (pyftpdlib) on a free loopback port, run as a separate process.

By default it speaks explicit FTPS only: ``TLS_FTPHandler`` with ``tls_control_required`` and
``tls_data_required``, so a client that skips ``AUTH TLS`` or ``PROT P`` is refused. Its
certificate is signed by a throwaway CA made here (``ca_file``), for 127.0.0.1 and localhost.
``running_ftp(tls=False)`` runs plain FTP instead (for the ``allow_plaintext`` tests).

The server runs as ``python -m tests.servers.ftp``; its password comes in the environment, never
on the command line (``ps`` shows argv).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parent.parent.parent
PASSWORD_ENV = "TEST_FTP_SERVER_PASSWORD"
USER = "backup"
PASSWORD = "ftp-S3cret:with spaces&symbols"  # a throwaway test server


@dataclass
class FTPServer:
    base: Path
    port: int
    tls: bool
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def ca_file(self) -> Path:
        return self.base / "ca.pem"

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / "server.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def options(self, root: str = "", **extra: Any) -> dict[str, Any]:
        """Storage options for this server (TLS verified against the test CA when TLS is on)."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "root": root,
        }
        if self.tls:
            options["ca_file"] = str(self.ca_file)
        else:
            options.update(tls=False, allow_plaintext=True)
        options.update(extra)
        return options


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA (``ca.pem``) and a server certificate it signed (``server.pem``, key included)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Backupsite test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, server_file = directory / "ca.pem", directory / "server.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_file.chmod(0o600)
    return ca_file, server_file


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(3) == b"220"
    except OSError:
        return False


@contextlib.contextmanager
def running_ftp(tls: bool = True) -> Iterator[FTPServer]:
    """An FTP(S) server process for as long as the context lasts; killed and cleaned up after."""
    base = Path(tempfile.mkdtemp(prefix="backupsite-ftp-"))
    (base / "home").mkdir()
    port = free_port()
    passive = sorted({free_port() for _ in range(12)})  # a list: they need not be contiguous
    argv = [sys.executable, "-m", "tests.servers.ftp", "--port", str(port), "--home", str(base / "home")]
    argv += ["--passive", ",".join(map(str, passive)), "--parent", str(os.getpid())]
    if tls:
        _, server_pem = make_certificates(base)
        argv += ["--certfile", str(server_pem)]
    env = {**os.environ, PASSWORD_ENV: PASSWORD}
    with open(base / "server.log", "wb") as log:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = FTPServer(base=base, port=port, tls=tls, process=process)
    try:
        try:
            wait_for(lambda: process.poll() is None and _accepts(server.host, port), "the FTP server", 30)
        except RuntimeError:
            raise RuntimeError(f"the FTP server did not start:\n{server.log_tail()}") from None
        yield server
    finally:
        stop_process(process)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    """The server process: ``python -m tests.servers.ftp --port N --home DIR [--certfile PEM]``."""
    from pyftpdlib.authorizers import DummyAuthorizer  # type: ignore[import-untyped]
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler  # type: ignore[import-untyped]
    from pyftpdlib.servers import FTPServer as Server  # type: ignore[import-untyped]

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--passive", required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()

    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, os.environ[PASSWORD_ENV], args.home, perm="elradfmwMT")
    handler: type[FTPHandler]
    if args.certfile:
        handler = TLS_FTPHandler
        TLS_FTPHandler.certfile = args.certfile
        TLS_FTPHandler.tls_control_required = True  # no login before AUTH TLS
        TLS_FTPHandler.tls_data_required = True  # no transfer before PROT P
    else:
        handler = FTPHandler
    handler.authorizer = authorizer
    handler.passive_ports = [int(port) for port in args.passive.split(",")]
    handler.permit_foreign_addresses = False
    handler.auth_failed_timeout = 0.2  # the default 3 s pause after a wrong password slows the tests
    server = Server(("127.0.0.1", args.port), handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # serve_forever(handle_exit) closes all

    def exit_if_orphaned() -> None:
        # A test run killed hard cannot stop us: go away with it, and take the temp dir along.
        if os.getppid() != args.parent:
            shutil.rmtree(Path(args.home).parent, ignore_errors=True)
            sys.exit(0)

    server.ioloop.call_every(1, exit_if_orphaned)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
