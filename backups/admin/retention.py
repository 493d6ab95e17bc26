"""The retention preview on a target's admin page: which backups the current policy keeps, why,
and which it will delete at the next cleanup."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from backups.models import Target
from backups.services import backup_info, plan_cleanup

PREVIEW_ROWS = 60


def retention_preview(target: Target) -> SafeString:
    if target.pk is None:
        return format_html("<p>{}</p>", "Save the target to see what its retention policy keeps.")
    plan = plan_cleanup(target)
    rows = [(backup, "keep", ", ".join(reasons)) for backup, reasons in plan.keep]
    rows += [(backup, "delete", reason) for backup, reason in plan.delete]
    if not rows:
        return format_html("<p>{}</p>", "No backups yet.")
    rows.sort(key=lambda row: (backup_info(row[0]).timestamp, row[0].pk), reverse=True)
    summary = f"The next cleanup keeps {len(plan.keep)} and deletes {len(plan.delete)} backup(s)."
    if len(rows) > PREVIEW_ROWS:
        summary += f" Newest {PREVIEW_ROWS} shown; manage.py backup_retention_preview --target {target.name} lists all."
    notes = [*plan.errors, *([plan.refused] if plan.refused else [])]
    body = format_html_join(
        "",
        '<tr class="retention-{}"><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td><strong>{}</strong></td>'
        "<td>{}</td></tr>",
        (
            (
                verdict,
                reverse("admin:backups_backup_change", args=[backup.pk]),
                backup.pk,
                f"{backup_info(backup).timestamp:%Y-%m-%d %H:%M %Z}",
                backup.get_status_display(),
                verdict.upper(),
                why,
            )
            for backup, verdict, why in rows[:PREVIEW_ROWS]
        ),
    )
    return format_html(
        '<div id="retention-preview"><p>{}</p>{}<table><thead><tr><th>Backup</th><th>Started</th>'
        "<th>Status</th><th>Next cleanup</th><th>Why</th></tr></thead><tbody>{}</tbody></table></div>",
        summary,
        format_html_join("", '<p class="errornote">{}</p>', ((note,) for note in notes)),
        body,
    )
