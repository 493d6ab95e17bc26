"""Which ``pg_dump``/``pg_restore`` to run: every installed client with its major version, and
the oldest one that can talk to the server and read the archive.

``pg_dump`` refuses servers newer than itself, so among the installed clients
(``/usr/lib/postgresql/<major>/bin`` or the target's ``bin_dir``) the lowest major version that is
at least the server's is chosen; ``pg_restore`` must also be able to read the archive.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from backups.engines.base import EngineError
from backups.engines.process import base_env, run_tool

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Tool:
    path: str
    major: int
    version: str


@functools.cache
def _tool_version(path: str, mtime: float) -> Tool | None:
    try:
        output = run_tool([path, "--version"], base_env({}), tool=Path(path).name, timeout=30)
    except EngineError:
        return None
    match = _VERSION.search(output)
    if match is None:
        return None
    major = int(match.group(1))
    minor = match.group(2)
    return Tool(path=path, major=major, version=f"{major}.{minor}" if minor else str(major))


def installed_tools(name: str, bin_dir: str = "") -> list[Tool]:
    """Every installed copy of ``name`` (pg_dump, pg_restore) with its major version."""
    if bin_dir:
        paths = [str(Path(bin_dir) / name)]
    else:
        paths = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        on_path = shutil.which(name)
        if not paths and on_path:
            paths = [on_path]
    tools = []
    for path in paths:
        if os.access(path, os.X_OK):
            tool = _tool_version(path, os.path.getmtime(path))
            if tool is not None:
                tools.append(tool)
    return tools


def choose_tool(name: str, tools: list[Tool], needed_major: int, why: str) -> Tool:
    """The installed tool with the lowest major version that is at least ``needed_major``."""
    usable = sorted((t for t in tools if t.major >= needed_major), key=lambda t: t.major)
    if usable:
        return usable[0]
    if not tools:
        raise EngineError(
            f"{name} is not installed; install postgresql-client-{needed_major} "
            "(or set the target's bin_dir option)"
        )
    found = ", ".join(f"{t.major} ({t.path})" for t in sorted(tools, key=lambda t: t.major))
    raise EngineError(
        f"no {name} can handle {why} (needs version {needed_major} or newer; installed: {found}); "
        f"install postgresql-client-{needed_major}"
    )


def major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0
