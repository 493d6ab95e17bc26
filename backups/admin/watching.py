"""What the target page shows of an external target's watch (backups.watching): its last scan,
its open outages and what stopped its retention, read from its ExternalWatch row."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join

from backups.admin.common import when
from backups.models import ExternalWatch, Target

DESCRIPTION = (
    "Another tool writes this target's backups; a scan every 5 minutes adopts new files (docs/EXTERNAL.md)."
)


def watch_state(target: Target) -> str:
    watch = ExternalWatch.objects.filter(target=target).first()
    if watch is None:
        return "not scanned yet: the watch scans external targets every 5 minutes"
    # when() gives a <time> element: each line is built with format_html, the rest escaped.
    lines = [
        format_html("last listed {}: {} matching file(s)", when(watch.scanned_at), watch.seen)
        if watch.scanned_at
        else "never listed"
    ]
    if watch.failing_since:
        lines.append(format_html("cannot be watched since {}: {}", when(watch.failing_since), watch.error))
    elif watch.error:
        lines.append(format_html("problem at the last scan: {}", watch.error))
    if watch.missed_since:
        lines.append(format_html("missing: the file expected {} has not come", when(watch.missed_since)))
    if watch.retention_note:
        lines.append(format_html("retention: {}", watch.retention_note))
    return format_html_join("", "<div>{}</div>", ((line,) for line in lines))
