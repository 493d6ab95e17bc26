"""Which version of the configuration file the catalog holds: the newest AppliedConfig row,
written by each apply that changed something (:func:`backups.config.loader.apply`). The
processes that must not start on an older catalog wait for it; the drift check compares it,
and the rows, with the file (``BACKUPSITE_CONFIG``)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register
from django.db import DatabaseError, connections

from backups import secrets
from backups.config.diff import compare
from backups.config.loader import ConfigInvalid, load, validate
from backups.models import AppliedConfig

LISTED = 5  # rows a drift warning names before "and N more"


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes, as AppliedConfig records it. Raises OSError."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def newest_applied() -> AppliedConfig | None:
    """The newest AppliedConfig row: the version of the file the catalog holds now."""
    return AppliedConfig.objects.order_by("-applied_at", "-id").first()


@dataclass(frozen=True)
class Waited:
    """How :func:`wait_until_applied` ended: ``done`` when the digest is applied; ``applied``:
    the newest row seen; ``problem``: the catalog's last error while it could not be read."""

    done: bool
    applied: AppliedConfig | None
    problem: str = ""


def wait_until_applied(digest: str, timeout: float, interval: float = 1.0) -> Waited:
    """Poll every ``interval`` seconds until the newest AppliedConfig records ``digest``, for at
    most ``timeout`` seconds. A catalog not reachable or not migrated yet (a worker starting
    before the web process migrated) counts as nothing applied yet: polled again."""
    deadline = time.monotonic() + timeout
    applied: AppliedConfig | None = None
    problem = ""
    while True:
        try:
            applied = newest_applied()
            problem = ""
        except DatabaseError as exc:
            lines = str(exc).strip().splitlines()
            problem = secrets.redact(lines[0] if lines else type(exc).__name__)
            connections.close_all()  # a fresh connection at the next try
        if applied is not None and applied.digest == digest:
            return Waited(True, applied)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Waited(False, applied, problem)
        time.sleep(min(interval, remaining))


def drift(path: str) -> str:
    """Why the catalog is not what the file at ``path`` defines ("" when it is): unreadable or
    invalid, another version recorded as applied, or rows that differ (changed by other means).
    Never probes anything remote (validated without probes)."""
    try:
        config = load(path)
        plan = validate(config, probe=False)
    except ConfigInvalid as exc:
        first = exc.errors[0] if exc.errors else "invalid"
        more = f" (and {len(exc.errors) - 1} more problem(s))" if len(exc.errors) > 1 else ""
        return f"{path} cannot be applied: {first}{more}"
    diff = compare(config, plan)
    if diff.empty:
        return ""
    found = []
    if not diff.recorded:
        found.append(
            f"the catalog holds another version of it (applied {diff.applied[:12]} from {diff.applied_path}, "
            f"the file is {diff.digest[:12]})"
            if diff.applied
            else "it was never applied"
        )
    if diff.changes:
        labels = [f"{c.label} ({c.action})" for c in diff.changes]
        more = f" and {len(labels) - LISTED} more" if len(labels) > LISTED else ""
        found.append(f"{len(labels)} row(s) differ from it: {', '.join(labels[:LISTED])}{more}")
    return f"the catalog has drifted from {config.path}: {'; '.join(found)}"


@register()
def check_config_drift(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """backups.W003 when BACKUPSITE_CONFIG is set and the catalog is not what it defines. Never
    raises: a missing or unreadable file is itself the warning; a catalog not migrated yet has
    nothing to compare."""
    path = getattr(settings, "BACKUPSITE_CONFIG", "")
    if not path:
        return []
    try:
        problem = drift(path)
    except DatabaseError:
        return []
    except Exception as exc:  # a system check must not stop the command it precedes
        reason = f"{type(exc).__name__}: {secrets.redact(str(exc))}"
        problem = f"{path} could not be compared with the catalog: {reason}"
    if not problem:
        return []
    return [
        Warning(
            problem,
            hint="Run backup_config diff to see it, backup_config apply to fix it.",
            id="backups.W003",
        )
    ]
