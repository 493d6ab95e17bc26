"""One command for the whole site on one machine (``make run``): the web server, the Celery
worker that runs the backups, a small worker of the watch's own and one beat as child processes,
their output interleaved line by line with each child's name in front.

Each child runs in its own process group, so a Ctrl-C at the terminal reaches only the
supervisor, which then stops the children in order: SIGTERM to each (Celery's warm shutdown
lets a running task finish), SIGKILL to each child's whole process group after ``stop_timeout``
seconds or on a second Ctrl-C. A child that exits on its own stops the others and makes the
supervisor fail: a site without its workers or beat must not look healthy.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

logger = logging.getLogger(__name__)

BEAT_SCHEDULER = "schedules.beat:DatabaseScheduler"
_POLL_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1


class Output(Protocol):
    def write(self, text: str, /) -> object: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: list[str]


@dataclass
class Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes]
    pump: threading.Thread | None = field(default=None)

    @property
    def name(self) -> str:
        return self.spec.name


class SupervisorError(Exception):
    """A child could not start, or exited while it should have been running."""


def site_children(
    *,
    base_dir: Path,
    home: Path,
    bind: str | None,
    concurrency: int,
    node_name: str,
    queues: Sequence[str] = ("celery",),
) -> list[ChildSpec]:
    """The children of a site: web (unless ``bind`` is None), ``worker`` (``concurrency`` pool
    processes consuming ``queues``, by default the default ``celery`` queue: backups, restores,
    verifications; a target's own queue brings its work to workers near it), ``watch`` (one
    process, the ``watch`` queue: the watch and the sweep, so a watch never waits behind backups
    while every backup process is busy; named ``watch-<node_name>``) and beat, each started with
    this interpreter (the venv's Celery, whatever PATH says)."""
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "backupsite"]
    children = []
    if bind is not None:
        children.append(
            ChildSpec("web", [python, str(base_dir / "manage.py"), "runserver", "--noreload", bind])
        )
    worker = [*celery, "worker", "-l", "info", "-Q", ",".join(queues), "-c", str(concurrency)]
    worker += ["-n", node_name]
    children.append(ChildSpec("worker", worker))
    watch = [*celery, "worker", "-l", "info", "-Q", "watch", "-c", "1", "-n", f"watch-{node_name}"]
    children.append(ChildSpec("watch", watch))
    beat = [*celery, "beat", "-l", "info", "-S", BEAT_SCHEDULER]
    beat += ["--pidfile", str(home / "beat.pid"), "-s", str(home / "celerybeat-schedule")]
    children.append(ChildSpec("beat", beat))
    return children


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when the supervisor dies (even by
    SIGKILL), so no orphaned worker or beat outlives it; None where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    prctl = ctypes.CDLL(name, use_errno=True).prctl  # looked up before fork, not in the child

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


class Supervisor:
    """Start ``specs`` as children and watch them until a signal asks to stop or one dies."""

    def __init__(
        self,
        specs: list[ChildSpec],
        out: Output,
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        stop_timeout: float = 30.0,
    ) -> None:
        self.specs = specs
        self.out = out
        self.cwd = cwd
        self.env = {**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"}
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self._stop_requested = threading.Event()
        self._kill_requested = threading.Event()
        self._write_lock = threading.Lock()
        self._width = max([len(spec.name) for spec in specs] + [len("supervisor")])

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (returns once every child is stopped) or until a child exits
        on its own (stops the others, then raises SupervisorError)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self._start_all()
                died = self._watch()
            finally:
                self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if died is not None:
            others = ", ".join(c.name for c in self.children if c is not died) or "nothing else"
            raise SupervisorError(
                f"{died.name} (pid {died.process.pid}) exited unexpectedly with "
                f"{_describe_status(died.process.returncode)}; stopped {others}"
            )

    def say(self, message: str, name: str = "supervisor") -> None:
        with self._write_lock:
            self.out.write(f"{name:<{self._width}} | {message}\n")
            self.out.flush()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested.is_set():
            self._kill_requested.set()  # a second Ctrl-C: do not wait for a graceful stop
        self._stop_requested.set()

    def _start_all(self) -> None:
        preexec = _die_with_parent()
        for spec in self.specs:
            try:
                process = subprocess.Popen(
                    spec.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    process_group=0, preexec_fn=preexec,
                )  # fmt: skip
            except OSError as exc:
                raise SupervisorError(f"cannot start {spec.name} ({spec.argv[0]}): {exc.strerror}") from None
            self.children.append(Child(spec, process))
            self.say(f"started {spec.name} (pid {process.pid}): {' '.join(spec.argv[1:])}")
        # Output threads start after every fork: a preexec function is unsafe beside threads.
        for child in self.children:
            child.pump = threading.Thread(
                target=self._pump, args=(child,), name=f"output-{child.name}", daemon=True
            )
            child.pump.start()

    def _pump(self, child: Child) -> None:
        stream: IO[bytes] | None = child.process.stdout
        if stream is None:
            return
        for raw in iter(stream.readline, b""):
            self.say(raw.decode(errors="replace").rstrip("\r\n"), child.name)
        stream.close()

    def _watch(self) -> Child | None:
        while not self._stop_requested.wait(_POLL_SECONDS):
            for child in self.children:
                if child.process.poll() is not None:
                    return child
        self.say("stopping (press Ctrl-C again to kill at once)")
        return None

    def _stop_all(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                # The main process only: Celery stops its own pool (SIGTERM to the pool's
                # processes as well can leave the worker hanging in its warm shutdown).
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline and not self._kill_requested.is_set():
            if all(child.process.poll() is not None for child in self.children):
                break
            time.sleep(_POLL_SECONDS)
        for child in self.children:
            if child.process.poll() is None:
                self.say(f"{child.name} did not stop in time; killing it")
                _kill_group(child.process.pid)
            elif child.process.returncode < 0:
                _kill_group(child.process.pid)  # killed outright: its pool may be left behind
            child.process.wait()
            if child.pump is not None:
                child.pump.join(timeout=5)
            self.say(f"{child.name} stopped ({_describe_status(child.process.returncode)})")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _describe_status(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"
