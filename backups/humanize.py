"""Numbers and times as people read them: 14.5 MiB, "1 min 12 s", "3 h ago", "in 42 min".
Standard library only; every page, command and message uses these."""

from __future__ import annotations

from datetime import datetime


def human_bytes(count: float | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    """``0.02 s``, ``4.2 s``, ``12 s``, ``1 min 12 s``, ``2 h 5 min``, ``3 d 4 h``; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)} h"
    if seconds < 86400 * 60:
        return f"{int(seconds // 86400)} d"
    if seconds < 86400 * 730:
        return f"{int(seconds // (86400 * 30))} mo"
    return f"{int(seconds // (86400 * 365))} y"


def relative_time(moment: datetime | None, now: datetime) -> str:
    """``3 h ago`` or ``in 42 min`` (``just now`` within a few seconds); "never" for None."""
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 5:
        return "just now"
    return f"{_span(seconds)} ago" if seconds > 0 else f"in {_span(seconds)}"
