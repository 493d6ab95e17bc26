"""The evidence report as one self-contained HTML page: inline CSS in the admin's colours, a
print stylesheet (a page per target, no dark backgrounds) and SVG charts drawn here, so the file
opens anywhere, offline, with no script. Every value is escaped by ``format_html``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from backups.humanize import human_bytes, human_duration
from backups.models import Proof
from restores.evidence import (
    BackupEvidence,
    DrillEvidence,
    Evidence,
    OutageEvidence,
    RestoreEvidence,
    TargetEvidence,
)
from restores.evidence_charts import restore_trend, timeline, when

NUMERIC = {"#", "Backup", "Duration", "Size", "Failed runs", "Lasted", "Took", "Restore took", "Data age"}
PROOF_LABELS = {value: str(label).split(" (")[0] for value, label in Proof.choices}

STYLE = """
:root { --primary: #79aec8; --secondary: #417690; --fg: #333; --quiet: #666; --line: #e8e8e8;
  --ok: #2e7d32; --bad: #c62828; --warn: #ef6c00; }
body { font-family: -apple-system, "Segoe UI", system-ui, Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--fg); margin: 0; font-size: 14px; line-height: 1.45; }
header { background: var(--secondary); color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 22px; font-weight: 400; }
header p { margin: 4px 0 0; color: #f5dd5d; }
main { padding: 8px 24px 24px; max-width: 1200px; }
h2 { color: var(--secondary); border-bottom: 2px solid var(--primary); padding-bottom: 4px; margin-top: 28px; }
h3 { color: var(--quiet); font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f8f8f8; color: var(--quiet); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; word-break: break-all; }
dl.policy { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 6px 0; }
dl.policy dt { color: var(--quiet); } dl.policy dd { margin: 0; }
.success, .passed, .ok { color: var(--ok); font-weight: 600; }
.failed, .corrupt, .bad { color: var(--bad); font-weight: 600; }
.skipped, .quiet { color: var(--quiet); }
.open { color: var(--bad); font-weight: 600; }
.charts svg { display: block; margin: 6px 0; max-width: 100%; height: auto; }
.note { color: var(--quiet); font-size: 12px; }
@media print {
  header { background: none; color: #000; border-bottom: 2px solid #000; padding: 0 0 6px; }
  header p { color: #000; }
  main { padding: 0; max-width: none; }
  section.target { break-before: page; page-break-before: always; }
  th { background: none; }
  table, svg, dl { break-inside: avoid; page-break-inside: avoid; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def render(evidence: Evidence) -> str:
    """The whole page."""
    window = f"{evidence.since.astimezone(UTC):%Y-%m-%d %H:%M} to {evidence.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    body = _summary_table(evidence) + format_html_join(
        "", "{}", ((_target_section(target, evidence),) for target in evidence.targets)
    )
    page = format_html(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{} backup evidence, {}</title><style>{}</style></head><body>"
        "<header><h1>{}: backup evidence</h1><p>Window {}; generated {} ({} target{}); all times UTC</p></header>"
        "<main>{}</main></body></html>\n",
        evidence.site,
        window,
        SafeString(STYLE),
        evidence.site,
        window,
        f"{evidence.generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        len(evidence.targets),
        "" if len(evidence.targets) == 1 else "s",
        body,
    )
    return str(page)


def _summary_table(evidence: Evidence) -> SafeString:
    if not evidence.targets:
        return SafeString('<p class="note">No target.</p>')
    rows = []
    for target in evidence.targets:
        summary = target.summary
        assert summary is not None  # collect() sets it
        outage = (
            human_duration(summary.longest_outage_seconds)
            if summary.longest_outage_seconds is not None
            else "none"
        )
        if summary.open_outage:
            outage += " (open)"
        rows.append(
            (
                target.name,
                target.name,
                summary.backups,
                summary.successes,
                "bad" if summary.failures else "",
                summary.failures,
                "open" if summary.open_outage else "",
                outage,
                summary.last_drill or "quiet",
                summary.last_drill or "none",
                f" ({summary.last_drill_at.astimezone(UTC):%Y-%m-%d})" if summary.last_drill_at else "",
                PROOF_LABELS.get(summary.newest_success_proof, "none"),
            )
        )
    return format_html(
        "<h2>Summary</h2><table><thead><tr><th>Target</th><th class=num>Backups</th><th class=num>Successes"
        "</th><th class=num>Failures</th><th>Longest outage</th><th>Last drill</th>"
        "<th>Proof of the newest success</th></tr></thead><tbody>{}</tbody></table>",
        format_html_join(
            "",
            '<tr><td><a href="#target-{}">{}</a></td><td class=num>{}</td><td class=num>{}</td>'
            '<td class="num {}">{}</td><td class="{}">{}</td><td><span class="{}">{}</span>{}</td><td>{}</td></tr>',
            rows,
        ),
    )


def _target_section(target: TargetEvidence, evidence: Evidence) -> SafeString:
    return format_html(
        '<section class="target" id="target-{}"><h2>{}</h2>{}<div class="charts">{}{}</div>{}{}{}{}{}</section>',
        target.name,
        target.name,
        _policy(target),
        timeline(target.backups, evidence.since, evidence.until),
        restore_trend(target.drills, evidence.since, evidence.until),
        _outages(target.outages),
        _backups(target.backups),
        _verifications(target.backups),
        _drills(target.drills),
        _restores(target.restores),
    )


def _policy(target: TargetEvidence) -> SafeString:
    policy = target.policy
    schedules = (
        format_html_join(
            "; ",
            "{} <code>{}</code> {} ({}{})",
            (
                (s.name, s.cron, s.timezone, s.backup_type, "" if s.active else ", inactive")
                for s in policy.schedules
            ),
        )
        if policy.schedules
        else "none (manual runs only)"
    )
    where = policy.engine + (f" on {policy.host}" if policy.host else "")
    return format_html(
        '<h3>Policy</h3><dl class="policy"><dt>Source</dt><dd>{} <code>{}</code></dd><dt>Retention</dt><dd>{}</dd>'
        "<dt>Schedules</dt><dd>{}</dd><dt>Encryption</dt><dd>{}</dd><dt>Storages</dt><dd>{}</dd>"
        "<dt>Drills</dt><dd>{}</dd></dl>",
        where,
        policy.database,
        policy.retention,
        schedules,
        (
            f"age, key {policy.encryption_key}"
            + (f" (escrow: {', '.join(policy.escrow_keys)})" if policy.escrow_keys else "")
            if policy.encryption_key
            else "none (stored unencrypted)"
        ),
        ", ".join(policy.storages) or "none",
        f"scheduled {policy.drill_schedule}" if policy.drill_schedule else "no schedule (manual only)",
    )


def _table(caption: str, headers: Iterable[str], rows: SafeString, empty: str) -> SafeString:
    if not rows:
        return format_html('<h3>{}</h3><p class="note">{}</p>', caption, empty)
    return format_html(
        "<h3>{}</h3><table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        caption,
        format_html_join(
            "", '<th class="{}">{}</th>', (("num" if header in NUMERIC else "", header) for header in headers)
        ),
        rows,
    )


def _rows(items: Iterable[Sequence[object]], cells: str) -> SafeString:
    return format_html_join("", "<tr>" + cells + "</tr>", items)


def _outages(outages: Sequence[OutageEvidence]) -> SafeString:
    rows = _rows(
        (
            (when(o.started_at), "open" if o.open else "", "still open" if o.open else when(o.ended_at),
             o.failed_runs, human_duration(o.duration_seconds))
            for o in outages
        ),
        '<td>{}</td><td class="{}">{}</td><td class=num>{}</td><td class=num>{}</td>',
    )  # fmt: skip
    return _table(
        "Failures and outages",
        ("From (first failed run)", "To (next success)", "Failed runs", "Lasted"),
        rows,
        "No failure in the window.",
    )


def _copies(backup: BackupEvidence) -> SafeString:
    return format_html_join(
        "<br>", "{} {} {}", ((c.storage, c.status, human_bytes(c.size_bytes)) for c in backup.copies)
    )


def _backups(backups: Sequence[BackupEvidence]) -> SafeString:
    rows = _rows(
        (
            (b.id, b.status, b.status, b.backup_type, when(b.started_at), human_duration(b.duration_seconds),
             human_bytes(b.size_bytes), b.sha256 or "-", _copies(b), PROOF_LABELS.get(b.proof, "-"),
             when(b.proof_at), b.error)
            for b in backups
        ),
        '<td class=num>{}</td><td class="{}">{}</td><td>{}</td><td>{}</td><td class=num>{}</td>'
        "<td class=num>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
    )  # fmt: skip
    return _table(
        f"Backups ({len(backups)})",
        (
            "#",
            "Status",
            "Type",
            "Started",
            "Duration",
            "Size",
            "SHA-256",
            "Copies",
            "Proof",
            "Proven",
            "Error",
        ),
        rows,
        "No backup in the window.",
    )


def _verifications(backups: Sequence[BackupEvidence]) -> SafeString:
    rows = _rows(
        (
            (
                b.id,
                v.step,
                v.status,
                v.status,
                when(v.started_at),
                human_duration(v.duration_seconds),
                v.message,
            )
            for b in backups
            for v in b.verifications
        ),
        '<td class=num>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td><td class=num>{}</td><td>{}</td>',
    )
    return _table(
        "Verifications",
        ("Backup", "Step", "Status", "Started", "Took", "Result"),
        rows,
        "No verification in the window.",
    )


def _checks(drill: DrillEvidence) -> SafeString:
    if not drill.checks:
        return SafeString("-")
    return format_html_join(
        "<br>",
        '<span class="{}">{}</span> {}: expected {}, got {}',
        (
            ("ok" if c.ok else "bad", "ok" if c.ok else "FAILED", c.name, c.expected, c.actual)
            for c in drill.checks
        ),
    )


def _drills(drills: Sequence[DrillEvidence]) -> SafeString:
    rows = _rows(
        (
            (d.id, when(d.started_at), d.backup_id or "-", d.status, d.status, d.trigger,
             human_duration(d.restore_seconds), human_duration(d.data_age_seconds), _checks(d), d.error)
            for d in drills
        ),
        '<td class=num>{}</td><td>{}</td><td class=num>{}</td><td class="{}">{}</td><td>{}</td>'
        "<td class=num>{}</td><td class=num>{}</td><td>{}</td><td>{}</td>",
    )  # fmt: skip
    return _table(
        f"Restore drills ({len(drills)})",
        ("#", "Started", "Backup", "Status", "Trigger", "Restore took", "Data age", "Checks", "Error"),
        rows,
        "No drill in the window.",
    )


def _restores(restores: Sequence[RestoreEvidence]) -> SafeString:
    rows = _rows(
        (
            (r.id, when(r.started_at), r.backup_id, r.destination or "-", r.initiated_by or "-",
             r.approved_by or "-", r.status, r.status, human_duration(r.duration_seconds), r.error)
            for r in restores
        ),
        '<td class=num>{}</td><td>{}</td><td class=num>{}</td><td>{}</td><td>{}</td><td>{}</td>'
        '<td class="{}">{}</td><td class=num>{}</td><td>{}</td>',
    )  # fmt: skip
    return _table(
        f"Restores performed and requested ({len(restores)})",
        ("#", "Started", "Backup", "Into", "By", "Approved by", "Outcome", "Took", "Error"),
        rows,
        "No restore in the window.",
    )
