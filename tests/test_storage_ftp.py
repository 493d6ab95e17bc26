"""The ftp storage against a real pyftpdlib server in its own process (FTPS unless stated).

Network failures go through :class:`CuttableProxy` on the control connection only: ftplib
ignores the address in the PASV reply and connects data to the control peer's host, with the
server's passive port, so data connections bypass the proxy. Cutting the control connection
makes pyftpdlib close the transfer's data connection too, which is what the client then sees.
"""

from __future__ import annotations

import contextlib
import ftplib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backups.storages import StorageError, build_storage
from backups.storages.ftp import FTPStorage
from tests.conftest import REPO
from tests.servers import free_port, silent_listener
from tests.servers.ftp import FTPServer
from tests.servers.proxy import CuttableProxy, cuttable_proxy

MiB = 1024 * 1024


def files_in(server: FTPServer, root: str, *parts: str) -> list[str]:
    """What is really on the server's disk in a directory (temporaries included)."""
    directory = server.home.joinpath(root.lstrip("/"), *parts)
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def cut(proxy: CuttableProxy, refuse: bool = False) -> None:
    """``proxy.cut()``, made to work on idle connections: it closes sockets that its pump threads
    are blocked reading, and on Linux that neither wakes them nor sends anything (the socket lives
    on until the recv returns). Shutting them down first does both."""
    with proxy._lock:
        victims = list(proxy._sockets)
    for sock in victims:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
    if refuse:
        proxy.refuse()
    else:
        proxy.cut()


# -- TLS by default ------------------------------------------------------------------------------


def test_it_uses_tls_by_default_and_the_server_refuses_plain_clients(
    ftp_server: FTPServer, ftp_root: str
) -> None:
    plain = ftplib.FTP()
    plain.connect(ftp_server.host, ftp_server.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="SSL/TLS required"):
        plain.login(ftp_server.user, ftp_server.password)
    plain.close()

    options = ftp_server.options(root=ftp_root)
    assert "tls" not in options  # the default
    store = build_storage("remote", "ftp", options)
    store.put_bytes("db/a.sql.gz", b"over tls")
    assert store.read_bytes("db/a.sql.gz") == b"over tls"
    assert store.location("db/a.sql.gz").startswith(f"ftps://backup@127.0.0.1:{ftp_server.port}/")
    assert isinstance(store, FTPStorage)
    conn = store.login()
    assert conn.sock is not None and type(conn.sock).__name__ == "SSLSocket"
    assert conn._prot_p  # type: ignore[attr-defined]  # data connections protected too
    conn.close()
    store.close()


def test_it_verifies_the_server_certificate(ftp_server: FTPServer, ftp_root: str) -> None:
    options = ftp_server.options(root=ftp_root)
    del options["ca_file"]  # the system's CAs do not know the test CA
    store = FTPStorage("remote", options)
    with pytest.raises(StorageError) as caught:
        store.exists("x")
    message = str(caught.value)
    assert "TLS certificate could not be verified" in message and "ca_file" in message
    assert message.startswith("remote: cannot connect to ftps://backup@127.0.0.1:")

    # Host names are checked as well, unless verification is explicitly turned off.
    assert FTPStorage("remote", ftp_server.options())._context().check_hostname
    unverified = FTPStorage("remote", {**options, "verify_tls": False})
    assert not unverified.exists("x")
    unverified.close()


def test_it_names_a_missing_ca_file(ftp_server: FTPServer, tmp_path: Path) -> None:
    store = FTPStorage("remote", ftp_server.options(ca_file=str(tmp_path / "nope.pem")))
    with pytest.raises(StorageError, match=r"remote: cannot load ca_file .*nope\.pem"):
        store.exists("x")


# -- plaintext only when allowed ------------------------------------------------------------------


def test_it_needs_allow_plaintext_for_plaintext(ftp_plain_server: FTPServer, ftp_root: str) -> None:
    options = ftp_plain_server.options(root=ftp_root)
    with pytest.raises(StorageError) as caught:
        FTPStorage("plain", {**options, "allow_plaintext": False})
    assert "tls:" in str(caught.value) and "allow_plaintext = true" in str(caught.value)
    with pytest.raises(StorageError, match="allow_plaintext"):
        FTPStorage("plain", {key: value for key, value in options.items() if key != "allow_plaintext"})

    store = FTPStorage("plain", options, prefix="p")
    store.put_bytes("a/b.bin", b"clear text")
    assert store.read_bytes("a/b.bin") == b"clear text"
    assert [(o.path, o.size) for o in store.list_objects()] == [("a/b.bin", 10)]
    assert store.location("a/b.bin").startswith("ftp://")
    store.close()


def test_it_refuses_a_server_without_tls_for_a_tls_storage(ftp_plain_server: FTPServer) -> None:
    options = {k: v for k, v in ftp_plain_server.options().items() if k not in ("tls", "allow_plaintext")}
    with pytest.raises(StorageError, match="does not offer explicit TLS"):
        FTPStorage("remote", options).exists("x")


# -- failures -----------------------------------------------------------------------------------


def test_it_gives_a_clear_message_when_the_server_is_down(ftp_server: FTPServer) -> None:
    port = free_port()
    store = FTPStorage("remote", ftp_server.options(port=port))  # building does not connect
    with pytest.raises(StorageError) as caught:
        store.check_writable()
    assert str(caught.value).startswith(f"remote: cannot connect to ftps://backup@127.0.0.1:{port}/")
    assert "connection refused" in str(caught.value)


def test_it_times_out_on_a_hung_server(ftp_server: FTPServer) -> None:
    with silent_listener() as port:
        store = FTPStorage("remote", ftp_server.options(port=port, connect_timeout=1))
        started = time.monotonic()
        with pytest.raises(StorageError, match="timed out waiting for the server"):
            store.exists("x")
        assert time.monotonic() - started < 5


def test_it_gives_wrong_credentials_a_clear_message_without_the_password(
    ftp_server: FTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Wr0ng-but-secret-passw0rd"
    store = FTPStorage("remote", ftp_server.options(password=password))
    failures = []
    for action in (store.check_writable, lambda: store.open_writer("a.bin"), lambda: store.open_reader("a")):
        with pytest.raises(StorageError) as caught:
            action()
        failures.append(caught.value)
    for exc in failures:
        assert "login as 'backup' failed: wrong user or password" in str(exc)
        assert password not in str(exc) and password not in repr(exc.args)
        assert exc.__cause__ is None and exc.__suppress_context__  # no chained ftplib error
    # ... nor when the server is down, nor in a location.
    down = FTPStorage("remote", ftp_server.options(port=free_port(), password=password))
    with pytest.raises(StorageError) as caught:
        down.exists("x")
    assert password not in str(caught.value)
    assert password not in down.location("a/b.bin")
    assert password not in caplog.text


def test_it_scrubs_a_password_echoed_by_the_server(ftp_server: FTPServer) -> None:
    store = FTPStorage("remote", ftp_server.options())
    message = str(store.error("cannot read", "x", ftplib.error_perm(f"500 'PASS {ftp_server.password}'")))
    assert ftp_server.password not in message and "***" in message


def test_it_names_the_option_when_validating_options() -> None:
    base: dict[str, Any] = {"host": "ftp.example.org", "user": "u", "password": "secret-pw"}
    cases: dict[str, dict[str, Any]] = {
        "host": {"user": "u"},
        "port": {**base, "port": "21"},
        "connect_timeout": {**base, "connect_timeout": 0},
        "verify_tls": {**base, "verify_tls": "no"},
        "bogus": {**base, "bogus": 1},
        "tls": {**base, "tls": False},
    }
    for option, options in cases.items():
        with pytest.raises(StorageError) as caught:
            FTPStorage("offsite", options)
        assert str(caught.value).startswith("offsite: ") and f"{option}: " in str(caught.value)
        assert "secret-pw" not in str(caught.value)
    assert FTPStorage.OPTIONS["password"].secret and FTPStorage.OPTIONS["ca_file"].path
    assert all(spec.help for spec in FTPStorage.OPTIONS.values())


def test_it_fails_a_connection_cut_mid_upload_and_removes_the_temporary_on_abort(
    ftp_server: FTPServer, ftp_root: str
) -> None:
    with cuttable_proxy(ftp_server.host, ftp_server.port) as proxy:
        store = FTPStorage("remote", ftp_server.options(root=ftp_root, port=proxy.port))
        writer = store.open_writer("app/cut.bin")
        writer.write(b"x" * MiB)
        assert len(files_in(ftp_server, ftp_root, "app")) == 1  # the temporary, being written
        cut(proxy)
        with pytest.raises(StorageError, match=r"remote: (upload failed for|cannot commit) ftps://"):
            for _ in range(256):  # the socket buffers take a few MiB before the reset shows
                writer.write(b"y" * MiB)
            writer.commit()
        writer.abort()  # reconnects (the proxy accepts new connections) and deletes the temporary
        assert files_in(ftp_server, ftp_root, "app") == []
        assert not store.exists("app/cut.bin")
        assert list(store.list_objects()) == []
        store.close()


def test_it_leaves_a_temporary_that_abort_cannot_reach_for_the_sweep(
    ftp_server: FTPServer, ftp_root: str
) -> None:
    with cuttable_proxy(ftp_server.host, ftp_server.port) as proxy:
        store = FTPStorage("remote", ftp_server.options(root=ftp_root, port=proxy.port))
        writer = store.open_writer("app/cut.bin")
        writer.write(b"x" * MiB)
        cut(proxy, refuse=True)  # the link stays down: abort cannot delete anything
        with pytest.raises(StorageError):
            for _ in range(256):
                writer.write(b"y" * MiB)
            writer.commit()
        writer.abort()
        [temporary] = files_in(ftp_server, ftp_root, "app")
        assert temporary.startswith(".cut.bin.partial-")
        proxy.allow()
        assert list(store.list_objects()) == []
        assert store.sweep_stale() == 0  # young: its writer might still be alive
        time.sleep(1.1)  # MLSD times have whole seconds
        assert store.sweep_stale(timedelta(0)) == 1
        assert files_in(ftp_server, ftp_root, "app") == []
        store.close()


def test_it_makes_a_download_cut_short_an_error_not_a_short_file(
    ftp_server: FTPServer, ftp_root: str
) -> None:
    FTPStorage("remote", ftp_server.options(root=ftp_root)).put_bytes("big.bin", os.urandom(8 * MiB))
    with cuttable_proxy(ftp_server.host, ftp_server.port) as proxy:
        store = FTPStorage("remote", ftp_server.options(root=ftp_root, port=proxy.port))
        reader = store.open_reader("big.bin")
        assert len(reader.read(MiB)) == MiB
        cut(proxy)
        with pytest.raises(StorageError, match=r"remote: download (failed for|did not complete for) ftps://"):
            while reader.read(MiB):
                pass
        reader.close()


WORKER = """
import json, os, sys, time
from backups.storages.ftp import FTPStorage
store = FTPStorage("remote", json.loads(os.environ["FTP_STORAGE_OPTIONS"]), prefix="killed")
writer = store.open_writer("app/victim.bin")
for _ in range(8):
    writer.write(os.urandom(1024 * 1024))
print("written", flush=True)
time.sleep(600)
"""


def test_it_leaves_only_a_temporary_of_a_worker_killed_mid_upload_for_the_sweep_to_remove(
    ftp_server: FTPServer, ftp_root: str
) -> None:
    options = ftp_server.options(root=ftp_root)
    env = {**os.environ, "FTP_STORAGE_OPTIONS": json.dumps(options)}  # the password stays out of argv
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "written"
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait(30)
    assert worker.returncode == -signal.SIGKILL

    store = FTPStorage("remote", options, prefix="killed")
    [temporary] = files_in(ftp_server, ftp_root, "killed", "app")
    assert temporary.startswith(".victim.bin.partial-")
    assert not store.exists("app/victim.bin")
    assert list(store.list_objects()) == []
    assert store.sweep_stale() == 0  # younger than a day
    assert files_in(ftp_server, ftp_root, "killed", "app") == [temporary]
    time.sleep(1.1)  # MLSD times have whole seconds
    assert store.sweep_stale(timedelta(0)) == 1
    assert files_in(ftp_server, ftp_root, "killed", "app") == []
    store.close()


def test_it_sweeps_only_the_named_objects_temporaries(ftp_server: FTPServer, ftp_root: str) -> None:
    store = FTPStorage("remote", ftp_server.options(root=ftp_root))
    for name in ("one.bin", "one.bin", "two.bin"):
        writer = store.open_writer(f"d/{name}")
        writer.write(b"partial")
        writer._close_data()  # type: ignore[attr-defined]  # a dead writer: no commit, no abort
        writer._quit()  # type: ignore[attr-defined]
    assert store.sweep_partials("d/one.bin") == 2
    assert [n.split(".partial-")[0] for n in files_in(ftp_server, ftp_root, "d")] == [".two.bin"]
    assert store.sweep_partials("nowhere/x.bin") == 0
    store.close()


def test_it_reconnects_after_the_server_dropped_an_idle_connection(
    ftp_server: FTPServer, ftp_root: str
) -> None:
    with cuttable_proxy(ftp_server.host, ftp_server.port) as proxy:
        store = FTPStorage("remote", ftp_server.options(root=ftp_root, port=proxy.port))
        store.put_bytes("a.bin", b"1")
        cut(proxy)  # the shared control connection dies while idle
        assert store.exists("a.bin")
        store.close()


def test_it_still_finds_a_file_after_listing_the_directory(ftp_server: FTPServer, ftp_root: str) -> None:
    """A listing switches the connection to ASCII mode, where the server refuses SIZE with 550:
    that must never read as "the file is gone" (it did, after a sweep's listing)."""
    store = FTPStorage("remote", ftp_server.options(root=ftp_root))
    store.put_bytes("db/a.sql.gz", b"twelve bytes")
    assert [item.path for item in store.list_objects()] == ["db/a.sql.gz"]
    assert store.exists("db/a.sql.gz") and store.size("db/a.sql.gz") == 12
    store.close()
