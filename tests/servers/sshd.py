"""A throwaway OpenSSH sshd (Debian's openssh-server) on a free loopback port.

Everything lives in a temp directory: an ed25519 host key, the client keys (one plain, one with a
passphrase) in its own ``authorized_keys``, the config, the PidFile and the log (``-e``, LogLevel
DEBUG1, so a test can prove that a client never tried to authenticate). ``Subsystem sftp
internal-sftp``, no PAM.

As root, clients log in as a dedicated throwaway user, ``backupsite-sftp`` (nologin shell, no
home, created if missing) whose password is random, kept root-only in
``/var/lib/backupsite-tests/sftp-password`` and reused, so concurrent sessions agree on it; key and
password auth are both tested. As another user, sshd runs as that user, which may only log in as
itself and with a key (password auth needs root), so ``password`` is None.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import free_port, stop_process, wait_for

SSHD = "/usr/sbin/sshd"
TEST_USER = "backupsite-sftp"
PASSWORD_FILE = Path("/var/lib/backupsite-tests/sftp-password")
KEY_PASSPHRASE = "key-Passphr4se: never logged"


@dataclass
class SSHServer:
    base: Path
    port: int
    user: str
    password: str | None
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        """The directory the login user owns; storages get a fresh directory under it."""
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "sshd.log"

    def key(self, name: str) -> Path:
        return self.base / name

    def fingerprint(self, name: str = "host_key") -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(self.key(name))], check=True, capture_output=True)
        return out.stdout.decode().split()[1]

    def known_hosts(self, path: Path, port: int | None = None, key: str = "host_key") -> Path:
        """A known_hosts file that holds ``key`` (another key: a changed one) for host:port."""
        kind, blob = self.key(key + ".pub").read_text().split()[:2]
        path.write_text(f"[{self.host}]:{port or self.port} {kind} {blob}\n")
        return path

    def options(self, root: str, **overrides: Any) -> dict[str, Any]:
        """Options for an sftp storage: key auth, the pinned host key."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "private_key": str(self.key("client_key")),
            "host_key_fingerprint": self.fingerprint(),
            "root": root,
            "connect_timeout": 10,
        }
        options.update(overrides)
        return {key: value for key, value in options.items() if value is not None}

    def fresh_dir(self, name: str) -> Path:
        """A new directory under :attr:`data` (not created: storages mkdir it themselves)."""
        return self.data / f"{name}-{secrets.token_hex(4)}"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def start(self) -> None:
        for name, passphrase in [
            ("host_key", ""), ("other_host_key", ""), ("client_key", ""),
            ("client_key_encrypted", KEY_PASSPHRASE), ("stranger_key", ""),
        ]:  # fmt: skip
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", f"backupsite-test-{name}",
                 "-f", str(self.key(name))],
                check=True, capture_output=True,
            )  # fmt: skip
        authorized = self.base / "authorized_keys"
        authorized.write_text(
            self.key("client_key.pub").read_text() + self.key("client_key_encrypted.pub").read_text()
        )
        authorized.chmod(0o644)  # sshd reads it as the login user
        account = pwd.getpwnam(self.user)
        self.data.mkdir(mode=0o700)
        os.chown(self.data, account.pw_uid, account.pw_gid)
        config = self.base / "sshd_config"
        config.write_text(
            f"""\
ListenAddress {self.host}
Port {self.port}
HostKey {self.key("host_key")}
PidFile {self.base / "sshd.pid"}
AuthorizedKeysFile {authorized}
# the temp dir is under /tmp (world-writable), which StrictModes would reject
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication {"yes" if self.password else "no"}
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {self.user}
AllowTcpForwarding no
X11Forwarding no
LogLevel DEBUG1
MaxStartups 100
Subsystem sftp internal-sftp
"""
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # the privilege separation chroot
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )  # fmt: skip
        wait_for(self._ready, "sshd to listen", timeout=30)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
        return False

    def sessions(self) -> list[int]:
        """The listener's descendants (a monitor and a user process per connection), deepest first."""
        parents: dict[int, int] = {}
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(stat_file.parent.name)] = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
        found: list[int] = []
        level = [self.process.pid] if self.process is not None else []
        while level:
            level = [pid for pid, parent in parents.items() if parent in level]
            found[:0] = level
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGTERM on sshd's listener leaves its sessions running: let them end (their clients
            # are closed by now), else end them, deepest first, so each parent reaps its child.
            for _ in range(2):
                with contextlib.suppress(RuntimeError):
                    wait_for(lambda: not self.sessions(), "sshd sessions to end", timeout=3)
                for pid in self.sessions():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGTERM)
            stop_process(self.process)
        shutil.rmtree(self.base, ignore_errors=True)


def _die_with_parent() -> None:
    """sshd -D outlives a killed pytest otherwise: ask Linux to SIGTERM it when we go away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ensure_test_user() -> tuple[str, str]:
    """(user, password) of the throwaway login user; idempotent, safe to run concurrently."""
    if TEST_USER not in {entry.pw_name for entry in pwd.getpwall()}:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", TEST_USER],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode not in (0, 9):  # 9: created meanwhile by another session
            raise RuntimeError(f"useradd {TEST_USER} failed: {result.stderr}")
    PASSWORD_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"pw-{secrets.token_urlsafe(18)} with spaces:and'quotes\n")
    password = PASSWORD_FILE.read_text().rstrip("\n")
    subprocess.run(
        ["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, check=True, capture_output=True
    )
    return TEST_USER, password


@contextlib.contextmanager
def running_sshd() -> Iterator[SSHServer]:
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server")
    base = Path(tempfile.mkdtemp(prefix="backupsite-sshd-"))
    base.chmod(0o755)  # the login user reads authorized_keys and reaches data/
    user, password = ensure_test_user() if os.geteuid() == 0 else (getpass.getuser(), None)
    server = SSHServer(base=base, port=free_port(), user=user, password=password)
    try:
        server.start()
        yield server
    finally:
        server.stop()
