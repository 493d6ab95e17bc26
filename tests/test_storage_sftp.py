"""The sftp storage against a real OpenSSH sshd: host key checks, authentication, failures mid-upload.

No mocks: the server is ``tests/servers/sshd.py``; a cut link is ``CuttableProxy``; a dead worker
is a subprocess killed with SIGKILL. As root the test process can look at the server's files
directly (``server.data``), which proves what is (not) on the disk, not just what SFTP says.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backups.storages import StorageError, build_storage
from backups.storages.base import is_partial
from backups.storages.sftp import SFTPStorage
from tests.conftest import REPO
from tests.servers import free_port, silent_listener, wait_for
from tests.servers.proxy import cuttable_proxy
from tests.servers.sshd import KEY_PASSPHRASE, SSHServer

MiB = 1024 * 1024


def files_under(root: Path) -> list[str]:
    """Every file on the server's disk under ``root``, relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def make(server: SSHServer, root: Path, **overrides: Any) -> SFTPStorage:
    return SFTPStorage("offsite", server.options(str(root), **overrides))


def new_log(server: SSHServer, offset: int) -> str:
    """The sshd log written since ``offset``, once the last connection in it has ended."""
    ended = ("Connection reset by", "Connection closed by", "Disconnected from", "Close session")
    wait_for(
        lambda: any(word in server.log_text()[offset:] for word in ended), "sshd to log the disconnect", 10
    )
    time.sleep(0.2)  # the rest of that connection's lines
    return server.log_text()[offset:]


def refuses_before_auth(server: SSHServer, storage: SFTPStorage, match: str, root: Path) -> str:
    """Use ``storage``; it must fail with ``match`` after the key exchange and before auth."""
    offset = len(server.log_text())
    with pytest.raises(StorageError, match=match) as info:
        storage.put_bytes("app/secret.bin", b"must never reach the server")
    log = new_log(server, offset)
    assert "KEX done" in log  # the server's key was seen ...
    assert "userauth-request" not in log  # ... and no credential was offered
    assert "Accepted" not in log and "Failed" not in log
    assert not root.exists()  # no mkdir, no file
    return str(info.value)


# -- host keys ---------------------------------------------------------------------------------


def test_it_gives_no_credentials_to_a_host_missing_from_known_hosts(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    root = sshd_server.fresh_dir("unknown")
    known = sshd_server.known_hosts(tmp_path / "known_hosts", port=free_port())  # another host:port
    storage = make(
        sshd_server, root, host_key_fingerprint=None, known_hosts=str(known),
        private_key=None, password=sshd_server.password or "never-sent-pw",
    )  # fmt: skip
    message = refuses_before_auth(sshd_server, storage, "is unknown", root)
    assert f"127.0.0.1:{sshd_server.port}" in message
    assert sshd_server.fingerprint() in message  # what the server showed, to check by hand
    assert str(known) in message


def test_it_gives_no_credentials_when_another_fingerprint_is_pinned(sshd_server: SSHServer) -> None:
    root = sshd_server.fresh_dir("pinned")
    pinned = sshd_server.fingerprint("other_host_key")
    storage = make(
        sshd_server, root, host_key_fingerprint=pinned, private_key=None,
        password=sshd_server.password or "never-sent-pw",
    )  # fmt: skip
    message = refuses_before_auth(sshd_server, storage, "is not the pinned one", root)
    assert f"(got {sshd_server.fingerprint()} ssh-ed25519, pinned {pinned})" in message


def test_it_refuses_a_changed_host_key(sshd_server: SSHServer, tmp_path: Path) -> None:
    root = sshd_server.fresh_dir("changed")
    known = sshd_server.known_hosts(tmp_path / "known_hosts", key="other_host_key")  # same host:port
    storage = make(sshd_server, root, host_key_fingerprint=None, known_hosts=str(known))
    message = refuses_before_auth(sshd_server, storage, "does not match known_hosts", root)
    assert "changed" in message


def test_it_accepts_a_pinned_line_from_ssh_keygen_and_a_known_hosts_file(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    line = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd_server.key("host_key.pub"))], capture_output=True, text=True
    ).stdout.strip()  # "256 SHA256:... comment (ED25519)"
    root = sshd_server.fresh_dir("ok")
    make(sshd_server, root, host_key_fingerprint=line).put_bytes("a.bin", b"1")
    known = sshd_server.known_hosts(tmp_path / "known_hosts")
    assert make(sshd_server, root, host_key_fingerprint=None, known_hosts=str(known)).exists("a.bin")


def test_it_reports_a_missing_known_hosts_file(sshd_server: SSHServer, tmp_path: Path) -> None:
    storage = make(sshd_server, sshd_server.fresh_dir("x"), host_key_fingerprint=None, known_hosts=str(tmp_path / "nope"))  # fmt: skip
    with pytest.raises(StorageError, match=r"cannot read known_hosts .*nope: No such file"):
        storage.exists("a")


# -- connecting and authenticating --------------------------------------------------------------


def test_it_reports_plainly_that_the_server_is_down(sshd_server: SSHServer) -> None:
    storage = make(sshd_server, sshd_server.fresh_dir("down"), port=free_port())  # building: no connection
    with pytest.raises(
        StorageError, match=r"^offsite: cannot connect to 127\.0\.0\.1:\d+: connection refused"
    ):
        storage.exists("a")


def test_it_times_out_when_the_server_never_answers(sshd_server: SSHServer) -> None:
    with silent_listener() as port:
        storage = make(sshd_server, sshd_server.fresh_dir("hung"), port=port, connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(StorageError, match=f"cannot connect to 127.0.0.1:{port}: SSH handshake failed"):
            storage.exists("a")
        assert time.monotonic() - started < 10


def test_it_works_with_key_and_password_auth(
    sshd_server: SSHServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root = sshd_server.fresh_dir("auth")
    make(sshd_server, root).put_bytes("key.bin", b"by key")
    encrypted = str(sshd_server.key("client_key_encrypted"))
    make(sshd_server, root, private_key=encrypted, private_key_passphrase=KEY_PASSPHRASE).put_bytes(
        "enc.bin", b"2"
    )
    if sshd_server.password is None:
        pytest.skip("password auth needs root (a throwaway user with a password)")
    with make(sshd_server, root, private_key=None, password=sshd_server.password) as storage:
        storage.put_bytes("password.bin", b"by password")
        assert sorted(o.path for o in storage.list_objects()) == ["enc.bin", "key.bin", "password.bin"]
    assert sshd_server.password not in caplog.text and KEY_PASSPHRASE not in caplog.text


def test_it_reuses_one_connection_until_close(sshd_server: SSHServer) -> None:
    storage = make(sshd_server, sshd_server.fresh_dir("reuse"))
    offset = len(sshd_server.log_text())
    storage.put_bytes("a.bin", b"1")
    assert storage.exists("a.bin") and storage.read_bytes("a.bin") == b"1"
    assert [o.path for o in storage.list_objects()] == ["a.bin"]
    storage.close()
    storage.delete("a.bin")  # usable again after close: it reconnects
    storage.close()
    assert new_log(sshd_server, offset).count("Accepted publickey") == 2


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"private_key": None, "password": "wrong-Passw0rd-1234"}, "wrong password"),
        ({"private_key": "stranger_key"}, "wrong key"),
        ({"private_key": "client_key_encrypted", "private_key_passphrase": "wrong-Passphr4se-99"}, "wrong private_key_passphrase"),
        ({"private_key": "client_key_encrypted"}, "is encrypted; set private_key_passphrase"),
        ({"private_key": "stranger_key", "password": "wrong-Passw0rd-1234"}, "wrong password or key"),
    ],
)  # fmt: skip
def test_it_refuses_wrong_credentials_without_revealing_them(
    sshd_server: SSHServer, caplog: pytest.LogCaptureFixture, overrides: dict[str, Any], match: str
) -> None:
    caplog.set_level(logging.DEBUG)
    if overrides.get("private_key"):
        overrides = {**overrides, "private_key": str(sshd_server.key(overrides["private_key"]))}
    root = sshd_server.fresh_dir("creds")
    storage = make(sshd_server, root, **overrides)
    with pytest.raises(StorageError, match=match) as info:
        storage.put_bytes("a.bin", b"never")
    message = str(info.value)
    assert message.startswith("offsite: ")
    for secret in ("wrong-Passw0rd-1234", "wrong-Passphr4se-99", KEY_PASSPHRASE, sshd_server.password or "-"):
        assert secret not in message
        assert secret not in repr(info.value.args)
        assert secret not in caplog.text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not root.exists()


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"host": None}, "host"),
        ({"user": None}, "user"),
        ({"host_key_fingerprint": None}, "known_hosts"),
        ({"known_hosts": "/etc/ssh/known_hosts"}, "host_key_fingerprint"),
        ({"host_key_fingerprint": "MD5:12:34:56"}, "host_key_fingerprint"),
        ({"password": None}, "password"),
        ({"private_key_passphrase": "s3cret-pass"}, "private_key_passphrase"),
        ({"port": "22"}, "port"),
        ({"port": 70000}, "port"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_it_names_the_option_when_validating_options(change: dict[str, Any], option: str) -> None:
    options = {"host": "backup.example", "user": "u", "password": "s3cret-pw", "host_key_fingerprint": "SHA256:" + "A" * 43}  # fmt: skip
    options = {key: value for key, value in {**options, **change}.items() if value is not None}
    with pytest.raises(StorageError, match=rf"^offsite: .*\b{option}: ") as info:
        build_storage("offsite", "sftp", options)
    assert "s3cret" not in str(info.value)


def test_it_does_not_connect_when_built_and_keeps_secrets_out_of_its_location(sshd_server: SSHServer) -> None:
    storage = SFTPStorage("offsite", {"host": "192.0.2.1", "user": "bob", "password": "s3cret-pw", "host_key_fingerprint": "SHA256:" + "A" * 43, "root": "/srv/backups"}, prefix="p")  # fmt: skip
    assert storage.location("app/x.gz") == "sftp://bob@192.0.2.1:22/srv/backups/p/app/x.gz"
    relative = SFTPStorage("o", {**storage.options, "root": "backups", "port": 2222})
    assert relative.location("x.gz") == "sftp://bob@192.0.2.1:2222/~/backups/x.gz"


# -- writing -------------------------------------------------------------------------------------


def test_it_keeps_the_temporary_hidden_and_0600_and_never_overwrites_on_rename(
    sshd_server: SSHServer,
) -> None:
    root = sshd_server.fresh_dir("write")
    storage = make(sshd_server, root)
    writer = storage.open_writer("app/w.bin")
    writer.write(b"x" * 100_000)
    [temp] = files_under(root)
    assert temp.startswith("app/.w.bin.partial-")
    assert stat.S_IMODE((root / temp).stat().st_mode) == 0o600
    writer.commit()
    assert files_under(root) == ["app/w.bin"]
    assert stat.S_IMODE((root / "app/w.bin").stat().st_mode) == 0o600
    # The guarantee commit relies on: OpenSSH's SFTP v3 rename refuses an existing target.
    storage.put_bytes("app/other.bin", b"other")
    with pytest.raises(OSError):
        storage.client().rename(storage.remote("app/other.bin"), storage.remote("app/w.bin"))
    assert (root / "app/w.bin").read_bytes() == b"x" * 100_000


def test_it_reports_a_read_only_directory_when_checking_writable(sshd_server: SSHServer) -> None:
    root = sshd_server.fresh_dir("readonly")
    root.mkdir(mode=0o555)  # made by the test process: the login user cannot write there
    with pytest.raises(
        StorageError,
        match=r"cannot write a test file in the directory sftp://.*readonly-\w+: permission denied",
    ):
        make(sshd_server, root).check_writable()
    assert files_under(root) == []


def test_it_reports_a_full_disk_and_leaves_nothing(sshd_server: SSHServer) -> None:
    root = sshd_server.fresh_dir("full")
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        account = pwd.getpwnam(sshd_server.user)
        os.chown(root, account.pw_uid, account.pw_gid)
        storage = make(sshd_server, root)
        with pytest.raises(StorageError, match=r"write failed for .*/app/big\.bin: .*full disk or quota"):
            storage.put_bytes("app/big.bin", os.urandom(5 * MiB))
        assert files_under(root) == []  # put_bytes aborted: the temporary is gone, its space freed
        # 80 pipelined writes: paramiko itself checks none of their acks; commit must.
        with pytest.raises(StorageError, match=r"cannot commit .*/app/tail\.bin: .*full disk or quota"):
            storage.put_bytes("app/tail.bin", os.urandom(2 * MiB + MiB // 2))
        assert files_under(root) == []
        storage.put_bytes("app/small.bin", b"fits")  # the connection is still usable
        storage.close()
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_it_leaves_only_a_temporary_for_the_sweep_when_the_link_is_cut_mid_upload(
    sshd_server: SSHServer,
) -> None:
    root = sshd_server.fresh_dir("cut")
    with cuttable_proxy(sshd_server.host, sshd_server.port) as proxy:
        storage = make(sshd_server, root, port=proxy.port, connect_timeout=3)
        writer = storage.open_writer("app/cut.bin")
        proxy.cut_after(10 * MiB)
        with pytest.raises(StorageError, match="connection to the server was lost"):
            for _ in range(20):
                writer.write(os.urandom(MiB))
            writer.commit()
        writer.abort()  # the link is still down: it cannot remove the temporary, and says nothing
        assert proxy.cuts >= 1
    [temp] = files_under(root)
    assert is_partial(Path(temp).name) and temp.startswith("app/.cut.bin.partial-")
    direct = make(sshd_server, root)
    assert not direct.exists("app/cut.bin")
    assert list(direct.list_objects()) == []
    assert direct.sweep_stale() == 0  # young: its writer might still be running
    assert direct.sweep_stale(timedelta(0)) == 1
    assert files_under(root) == []


def test_it_removes_the_temporary_on_an_abort_after_the_link_is_back(sshd_server: SSHServer) -> None:
    root = sshd_server.fresh_dir("cut-back")
    with cuttable_proxy(sshd_server.host, sshd_server.port) as proxy:
        storage = make(sshd_server, root, port=proxy.port, connect_timeout=3)
        writer = storage.open_writer("app/cut.bin")
        proxy.cut_after(10 * MiB)
        with pytest.raises(StorageError, match="lost"):
            for _ in range(20):
                writer.write(os.urandom(MiB))
        proxy.allow()
        writer.abort()  # reconnects once and removes the temporary
        assert files_under(root) == []
        storage.put_bytes("app/cut.bin", b"the retry")  # the same storage reconnected
        assert storage.read_bytes("app/cut.bin") == b"the retry"


WORKER = """
import json, sys, time
from backups.storages.sftp import SFTPStorage
storage = SFTPStorage("offsite", json.loads(sys.argv[1]))
writer = storage.open_writer("app/killed.bin")
for _ in range(8):
    writer.write(b"x" * 1024 * 1024)
print("written", flush=True)
time.sleep(300)
"""


def test_it_leaves_only_a_temporary_for_the_sweep_when_a_worker_is_killed_mid_upload(
    sshd_server: SSHServer,
) -> None:
    root = sshd_server.fresh_dir("killed")
    options = sshd_server.options(str(root))
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(options)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "written\n"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    [temp] = files_under(root)
    assert is_partial(Path(temp).name) and temp.startswith("app/.killed.bin.partial-")
    storage = make(sshd_server, root)
    assert not storage.exists("app/killed.bin")
    assert list(storage.list_objects()) == []
    assert storage.sweep_stale() == 0  # a young temporary may belong to a running writer
    assert files_under(root) == [temp]
    assert storage.sweep_stale(timedelta(0)) == 1
    assert files_under(root) == []
