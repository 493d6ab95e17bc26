"""Long-running processes' signs of life in the catalog (``ProcessHeartbeat``, one row per role):
beat touches its row from its scheduler's tick, and readiness asks how long ago it did."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from backups.models import ProcessHeartbeat
from backups.processes import this_worker


def touch_heartbeat(role: str) -> None:
    """Record that this process (``host:pid``) is alive in ``role`` now. Database errors
    propagate: a caller that must not stop (beat) catches and logs them; a caller on a fast
    loop decides how often to call."""
    fields = {"host": this_worker(), "seen_at": timezone.now()}
    if not ProcessHeartbeat.objects.filter(role=role).update(**fields):
        try:
            with transaction.atomic():
                ProcessHeartbeat.objects.create(role=role, **fields)
        except IntegrityError:  # another process created the row in between: it exists now
            ProcessHeartbeat.objects.filter(role=role).update(**fields)


def heartbeat_seen(role: str) -> tuple[datetime, str] | None:
    """When and by which process (``host:pid``) ``role`` last showed life; None if never."""
    row = ProcessHeartbeat.objects.filter(role=role).values_list("seen_at", "host").first()
    return (row[0], row[1]) if row is not None else None
