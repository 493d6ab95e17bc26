"""Which process does a piece of work: ``host:pid`` names recorded on rows (a run's worker, a
notification's sender), and whether such a process is known to be gone."""

from __future__ import annotations

import os
import socket


def this_worker() -> str:
    """This process as ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(worker: str) -> bool:
    """True when ``worker`` (host:pid) is a process of this host that no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's process: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
