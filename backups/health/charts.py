"""A target's history as small inline SVG bar charts (size and duration of its last runs), drawn
server-side: no script, no build step. Every value is escaped by ``format_html``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString

from backups.humanize import human_bytes, human_duration
from backups.models import Backup, BackupStatus

HISTORY_RUNS = 90
WIDTH, HEIGHT, TOP = 720, 110, 16
COLOURS: dict[str, str] = {
    BackupStatus.SUCCESS: "#2e7d32",
    BackupStatus.FAILED: "#c62828",
    BackupStatus.CORRUPT: "#c62828",
    BackupStatus.SKIPPED: "#9e9e9e",
}


@dataclass(frozen=True)
class Run:
    started_at: datetime | None
    status: str
    size: int | None
    duration: float | None


def history(target_id: int, runs: int = HISTORY_RUNS) -> list[Run]:
    """The target's last ``runs`` finished runs, oldest first (one query)."""
    rows = (
        Backup.objects.filter(target_id=target_id)
        .exclude(status__in=(BackupStatus.PENDING, BackupStatus.RUNNING))
        .order_by("-started_at", "-id")
        .values_list("started_at", "status", "file_size", "duration_seconds")[:runs]
    )
    return [Run(*row) for row in reversed(rows)]


def bar_chart(
    runs: Sequence[Run], value: Callable[[Run], float | None], describe: Callable[[float], str], title: str
) -> SafeString:
    """One bar per run, its height ``value(run)``, coloured by the run's status; a failed run with
    no value is a short red tick. Each bar's tooltip gives the time and the value."""
    values = [value(run) or 0.0 for run in runs]
    top = max(values, default=0.0) or 1.0
    step = WIDTH / HISTORY_RUNS  # the same scale for every target; the newest run on the right
    offset = WIDTH - step * len(runs)
    usable = HEIGHT - TOP
    bars = SafeString()
    for index, (run, amount) in enumerate(zip(runs, values, strict=True)):
        height = max(amount / top * usable, 2.0 if amount or run.status != BackupStatus.SUCCESS else 0.0)
        when = f"{run.started_at:%Y-%m-%d %H:%M}" if run.started_at else "never started"
        bars += format_html(
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} ({})</title></rect>',
            f"{offset + index * step + 0.5:.1f}",
            f"{HEIGHT - height:.1f}",
            f"{max(step - 1.0, 1.0):.1f}",
            f"{height:.1f}",
            COLOURS.get(run.status, "#9e9e9e"),
            when,
            describe(amount) if amount else "-",
            run.status,
        )
    label = f"{title}: max {describe(top)}" if any(values) else f"{title}: no data yet"
    return format_html(
        '<svg class="history-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}" '
        'xmlns="http://www.w3.org/2000/svg"><text x="0" y="11" font-size="11" fill="#666">{}</text>{}'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/></svg>',
        label,
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        label,
        bars,
        HEIGHT - 0.5,
        WIDTH,
        HEIGHT - 0.5,
    )


def history_charts(target_id: int) -> SafeString:
    """The size chart and the duration chart of a target's last runs."""
    runs = history(target_id)
    if not runs:
        return SafeString('<p class="help">No finished run yet.</p>')
    size = bar_chart(runs, lambda run: run.size, human_bytes, f"Stored size, last {len(runs)} runs")
    duration = bar_chart(runs, lambda run: run.duration, human_duration, f"Duration, last {len(runs)} runs")
    return size + duration
