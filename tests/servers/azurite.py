"""Azurite's blob service (npm's ``azurite``) on a free loopback port, data in a temp directory.

Install it once with ``npm install --prefix .venv/node azurite`` (the Makefile does). The
account below is Azurite's documented development account, public by design.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".venv" / "node" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzuriteServer:
    host: str
    port: int
    account: str = ACCOUNT
    key: str = KEY

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account}"

    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.endpoint};"
        )


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def running_azurite() -> Iterator[AzuriteServer]:
    if not AZURITE.exists():
        raise RuntimeError(
            f"Azurite is not installed ({AZURITE} is missing); run: npm install --prefix .venv/node azurite"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="azurite-") as tmp:
        log = open(Path(tmp) / "azurite.log", "wb")  # noqa: SIM115  (closed below)
        process = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", tmp,
             "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
        try:
            wait_for(lambda: process.poll() is None and _listening(port), "Azurite", 60)
            yield AzuriteServer("127.0.0.1", port)
        finally:
            stop_process(process)
            log.close()
