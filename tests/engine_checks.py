"""Checks shared by the engine tests: a missing program, and the dump tools a test started."""

from __future__ import annotations

import contextlib
import os
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
