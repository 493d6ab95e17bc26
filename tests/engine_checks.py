"""Checks shared by the engine tests: a missing program, the dump tools a test started, and
what every process's command line and the database tools' environments show while an engine
works."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from django.core.checks import run_checks

from backups import services
from backups.models import BackupStatus, Target


def children_named(name: str, *, prefix: bool = False, parent: int | None = None) -> list[int]:
    """Pids of the children of ``parent`` (default: this process) whose command name is ``name``
    (or starts with it)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            matches = comm.startswith(name) if prefix else comm == name
            if matches and int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.append(int(pid))
    return found


def child_named(name: str, parent: int | None = None) -> int | None:
    """The pid of the child called ``name`` of ``parent`` (default: this process), if one runs."""
    pids = children_named(name, parent=parent)
    return pids[0] if pids else None


def written(pid: int) -> int:
    """Bytes process ``pid`` has written so far (0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def assert_missing_tools_fail(
    target: Target, tools: list[str], failure: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With an empty PATH (left in place for the caller's own checks), the system check names
    each of ``tools`` as ``backups.E001`` and a backup of ``target`` fails with ``failure``."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    messages = [e.msg for e in run_checks() if e.id == "backups.E001"]
    for tool in tools:
        expected = f"engine '{target.engine}' needs the program '{tool}', which is not on PATH"
        assert any(message.startswith(expected) for message in messages), messages
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    assert failure in backup.error_message


def command_lines() -> list[bytes]:
    """Every process's command line (NUL-separated arguments), as /proc shows it to anyone."""
    return [line for _pid, line in _processes()]


def _processes() -> list[tuple[str, bytes]]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as handle:
                found.append((pid, handle.read()))
    return found


def _parent(pid: str) -> int | None:
    """The parent process id of ``pid`` (None once it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/stat", "rb") as handle:
        return int(handle.read().rsplit(b")", 1)[1].split()[1])
    return None


def environment(pid: str) -> dict[bytes, bytes]:
    """The environment process ``pid`` was started with (empty once it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as handle:
        pairs = (item.partition(b"=") for item in handle.read().split(b"\0") if item)
        return {name: value for name, _, value in pairs}
    return {}


# The tools the engines start to dump and to restore, by program name (argv[0]'s last part).
DUMP_TOOLS = ("pg_dump", "mysqldump", "mariadb-dump", "clickhouse-client", "mongodump", "redis-cli")
RESTORE_TOOLS = ("pg_restore", "psql", "mysql", "mariadb", "clickhouse-client", "mongorestore", "redis-cli")

# Environment variables that may carry a password by design. redis-cli takes a password only
# from its argv or from REDISCLI_AUTH, and /proc/<pid>/environ, unlike argv, is readable only by
# the process's own user (and root). Every other tool gets its password from a 0600 file
# (PGPASSFILE names one: a path, not a secret).
ALLOWED_ENV = frozenset({b"REDISCLI_AUTH"})


def program_of(line: bytes) -> bytes:
    """The program name of a command line as /proc shows it: argv[0]'s last path part, up to a
    space, because some servers retitle themselves once started (redis-server's command line
    becomes ``redis-server *:6390``: a sampler that missed the moment before would never match
    its name, and a test would find it only now and then)."""
    return line.split(b"\0", 1)[0].split(b" ", 1)[0].rsplit(b"/", 1)[-1]


def runs(*programs: str) -> Callable[[bytes], bool]:
    """A ``wanted`` for :class:`ProcessWatch`: command lines whose program is one of ``programs``."""
    names = {program.encode() for program in programs}
    return lambda line: program_of(line) in names


class ProcessWatch:
    """While its block runs, samples every process's command line, the environment of the
    processes ``wanted`` picks, and the permission bits of credential files: the lines picked
    (``seen``), the command lines that held a secret (``leaked``), the picked processes'
    variable names (``environments``) and their variables outside ``allowed_env`` that held one
    (``env_leaked``, as ``b"environment of PROGRAM: NAME"``, also counted in ``leaked``), the
    modes seen."""

    def __init__(
        self,
        secrets: list[str],
        wanted: Callable[[bytes], bool],
        files: Callable[[], Iterable[Path]] = lambda: (),
        allowed_env: frozenset[bytes] = ALLOWED_ENV,
    ) -> None:
        self._secrets = [secret.encode() for secret in secrets]
        self._wanted, self._files, self._allowed_env = wanted, files, allowed_env
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="process-watch")
        self.seen: list[bytes] = []
        self.environments: list[tuple[bytes, frozenset[bytes]]] = []  # (program, variable names)
        self.leaked: list[bytes] = []
        self.env_leaked: list[bytes] = []
        self.modes: set[int] = set()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid, line in _processes():
                if self._wanted(line):
                    self.seen.append(line)
                    self._sample_environment(pid, line)
                if any(secret in line for secret in self._secrets):
                    self.leaked.append(line)
            self._sample_modes()
            time.sleep(0.002)

    def _sample_environment(self, pid: str, line: bytes) -> None:
        if _parent(pid) != os.getpid():
            # Only the tools this process started (the engine under test runs in it): a tool
            # some other test or fixture left running, with the suite's own environment, is
            # not the code under test.
            return
        variables = environment(pid)
        if not variables:
            return  # gone already, or not yet exec'd
        program = line.split(b"\0", 1)[0]
        self.environments.append((program, frozenset(variables)))
        for name, value in variables.items():
            if name not in self._allowed_env and any(secret in value for secret in self._secrets):
                self.env_leaked.append(b"environment of " + program + b": " + name)
                self.leaked.append(b"environment of " + program + b": " + name)

    def _sample_modes(self) -> None:
        # The credential files' directory comes and goes while the tool runs: a listing that
        # races its removal is skipped, never allowed to end the sampling thread.
        with contextlib.suppress(OSError):
            for path in self._files():
                with contextlib.suppress(OSError):
                    self.modes.add(stat.S_IMODE(path.stat().st_mode))

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
