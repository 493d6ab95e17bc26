"""SIGKILL at a chosen moment, shared by the fault-suite cases that kill real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest


def kill_when(process: subprocess.Popen[bytes], there: Callable[[], bool], what: str) -> None:
    """SIGKILL ``process`` as soon as ``there()`` holds; fail if it never does (within 60 s)."""
    deadline = time.monotonic() + 60
    try:
        while not there():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the process never got to {what} (exit status {process.poll()})")
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
