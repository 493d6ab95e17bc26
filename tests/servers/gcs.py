"""A GCS emulator (PyPI's gcp-storage-emulator, in memory, its own process) on a free loopback
port, plus a small OAuth token endpoint so service-account credentials work as they do at Google.

The token endpoint checks the RS256 signature of the JWT grant against the public key of the
one service account it knows, like Google's: a key file with another private key is refused
(``invalid_grant``). The emulator itself checks no credentials at all, nor ``ifGenerationMatch``
preconditions, nor signatures of signed URLs (it serves ``/BUCKET/OBJECT`` to anyone).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import free_port, stop_process, wait_for

SERVICE_ACCOUNT = "backupsite-test@backupsite-test.iam.gserviceaccount.com"
PROJECT = "backupsite-test"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenServer:
    """POST /token with a JWT bearer grant: an access token if the JWT is signed by ``key``."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        public = key.public_key()
        issued: list[str] = []  # service accounts granted a token
        refused: list[str] = []  # grants with a bad signature

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                assertion = form.get("assertion", [""])[0]
                try:
                    header, claims, signature = assertion.split(".")
                    public.verify(
                        _b64decode(signature),
                        f"{header}.{claims}".encode(),
                        padding.PKCS1v15(),
                        hashes.SHA256(),
                    )
                    status = 200
                    issued.append(json.loads(_b64decode(claims))["iss"])
                    body = {"access_token": "test-access-token", "expires_in": 3600, "token_type": "Bearer"}
                except (ValueError, InvalidSignature):
                    refused.append(assertion[:16])
                    status = 400
                    body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.issued, self.refused = issued, refused
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="gcs-token").start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class GCSServer:
    host: str
    port: int
    directory: Path
    token: TokenServer
    key: rsa.RSAPrivateKey

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def credentials_file(
        self, name: str = "service-account.json", key: rsa.RSAPrivateKey | None = None
    ) -> Path:
        """A service-account key file for the test account (or one signed by another ``key``)."""
        path = self.directory / name
        info = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": key_pem(key or self.key),
            "client_email": SERVICE_ACCOUNT,
            "client_id": "1",
            "token_uri": self.token.url,
        }
        path.write_text(json.dumps(info))
        path.chmod(0o600)
        return path

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project={PROJECT}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)
    return False


@contextlib.contextmanager
def running_gcs() -> Iterator[GCSServer]:
    port = free_port()
    key = new_key()
    token = TokenServer(key)
    with tempfile.TemporaryDirectory(prefix="gcs-emulator-") as tmp:
        log = open(Path(tmp) / "emulator.log", "wb")  # noqa: SIM115  (closed below)
        process = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
             "--port", str(port), "--in-memory", "--quiet"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
        try:
            wait_for(
                lambda: process.poll() is None and _answers(f"http://127.0.0.1:{port}/"),
                "the GCS emulator",
                30,
            )
            yield GCSServer("127.0.0.1", port, Path(tmp), token, key)
        finally:
            stop_process(process)
            log.close()
            token.close()
