"""The evidence report's charts as inline SVG drawn server-side (no script, no asset): a target's
backups over the window coloured by status, and its drills' restore times. Every value is escaped
by ``format_html``; times are shown in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from backups.humanize import human_duration
from backups.models import BackupStatus, DrillStatus
from restores.evidence import BackupEvidence, DrillEvidence

WIDTH, HEIGHT = 720, 70
TREND_HEIGHT = 120
COLOURS: dict[str, str] = {
    BackupStatus.SUCCESS: "#2e7d32",
    BackupStatus.FAILED: "#c62828",
    BackupStatus.CORRUPT: "#6a1b9a",
    BackupStatus.SKIPPED: "#9e9e9e",
    BackupStatus.RUNNING: "#79aec8",
    BackupStatus.PENDING: "#79aec8",
    DrillStatus.PASSED: "#2e7d32",
}


def when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if moment else "-"


def _x(moment: datetime | None, since: datetime, until: datetime) -> float:
    if moment is None:
        return WIDTH
    span = max((until - since).total_seconds(), 1.0)
    return min(max((moment - since).total_seconds() / span, 0.0), 1.0) * (WIDTH - 8) + 4


def timeline(backups: Sequence[BackupEvidence], since: datetime, until: datetime) -> SafeString:
    """Every backup a mark at its start over the window, coloured by its status (red tall: failed)."""
    marks = format_html_join(
        "",
        '<rect x="{}" y="{}" width="3" height="{}" fill="{}"><title>{} #{}: {}</title></rect>',
        (
            (
                f"{_x(b.started_at, since, until) - 1.5:.1f}",
                18 if b.status in (BackupStatus.FAILED, BackupStatus.CORRUPT) else 26,
                HEIGHT - 38 if b.status in (BackupStatus.FAILED, BackupStatus.CORRUPT) else HEIGHT - 46,
                COLOURS.get(b.status, "#9e9e9e"),
                when(b.started_at) if b.started_at else "not started",
                b.id,
                b.status,
            )
            for b in backups
        ),
    )
    counts = {status: sum(1 for b in backups if b.status == status) for status in BackupStatus.values}
    label = (
        ", ".join(f"{count} {status}" for status, count in counts.items() if count)
        or "no backup in the window"
    )
    return _frame(f"Backups over the window: {label}", HEIGHT, marks, since, until)


def restore_trend(drills: Sequence[DrillEvidence], since: datetime, until: datetime) -> SafeString:
    """The drills' restore times over the window: a line through the passed ones, every drill a dot
    (red: failed), the axis from zero to the slowest."""
    timed = [d for d in drills if d.restore_seconds is not None]
    if not timed:
        return _frame(
            "Restore time of drills: no drill measured in the window", 40, SafeString(), since, until
        )
    top = max(d.restore_seconds or 0.0 for d in timed) or 1.0
    usable = TREND_HEIGHT - 40

    def y(seconds: float | None) -> float:
        return TREND_HEIGHT - 20 - (seconds or 0.0) / top * usable

    line = " ".join(
        f"{_x(d.started_at, since, until):.1f},{y(d.restore_seconds):.1f}"
        for d in timed
        if d.status == DrillStatus.PASSED
    )
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="4" fill="{}"><title>{} drill #{}: {} restore, {}</title></circle>',
        (
            (
                f"{_x(d.started_at, since, until):.1f}",
                f"{y(d.restore_seconds):.1f}",
                COLOURS.get(d.status, "#c62828"),
                when(d.started_at),
                d.id,
                human_duration(d.restore_seconds),
                d.status,
            )
            for d in timed
        ),
    )
    body = format_html(
        '<polyline points="{}" fill="none" stroke="#417690" stroke-width="1.5"/>{}'
        '<text x="{}" y="{}" font-size="10" fill="#666" text-anchor="end">{}</text>',
        line,
        dots,
        WIDTH - 2,
        TREND_HEIGHT - 20 - usable - 3,
        human_duration(top),
    )
    return _frame(
        f"Restore time of drills (max {human_duration(top)}, {len(timed)} measured)",
        TREND_HEIGHT,
        body,
        since,
        until,
    )


def _frame(title: str, height: int, body: SafeString, since: datetime, until: datetime) -> SafeString:
    return format_html(
        '<svg role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}" xmlns="http://www.w3.org/2000/svg">'
        '<text x="0" y="11" font-size="11" fill="#333">{}</text>{}'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#bbb"/>'
        '<text x="2" y="{}" font-size="10" fill="#666">{}</text>'
        '<text x="{}" y="{}" font-size="10" fill="#666" text-anchor="end">{}</text></svg>',
        title,
        WIDTH,
        height,
        WIDTH,
        height,
        title,
        body,
        height - 14.5,
        WIDTH,
        height - 14.5,
        height - 2,
        f"{since.astimezone(UTC):%Y-%m-%d}",
        WIDTH - 2,
        height - 2,
        f"{until.astimezone(UTC):%Y-%m-%d}",
    )
