"""Live progress of running work, as the JSON the dashboard polls: bytes so far, average rate,
elapsed time and, when the expected size is known, percent and ETA."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backups.health.summary import Running, running_now
from backups.humanize import human_bytes, human_duration


def describe(item: Running, now: datetime) -> dict[str, Any]:
    elapsed = max((now - item.started_at).total_seconds(), 0.0) if item.started_at else 0.0
    rate = item.done_bytes / elapsed if elapsed >= 1 else None
    expected = item.expected_bytes if item.expected_bytes and item.expected_bytes > 0 else None
    percent = min(item.done_bytes / expected * 100, 99.0) if expected else None
    eta = (expected - item.done_bytes) / rate if expected and rate and item.done_bytes < expected else None
    parts = [human_bytes(item.done_bytes)]
    if expected:
        parts[0] += f" of about {human_bytes(expected)}"
    if rate:
        parts.append(f"{human_bytes(rate)}/s")
    parts.append(f"{human_duration(elapsed)} elapsed")
    if eta is not None:
        parts.append(f"about {human_duration(eta)} left")
    return {
        "kind": item.kind,
        "id": item.pk,
        "key": f"{item.kind}-{item.pk}",
        "label": item.label,
        "target_id": item.target_id,
        "done_bytes": item.done_bytes,
        "expected_bytes": expected,
        "percent": round(percent, 1) if percent is not None else None,
        "rate": rate,
        "elapsed_seconds": elapsed,
        "eta_seconds": eta,
        "text": ", ".join(parts),
        "url": item.url,
    }


def progress(now: datetime) -> list[dict[str, Any]]:
    """Every running backup and restore, oldest first."""
    return [describe(item, now) for item in running_now()]
