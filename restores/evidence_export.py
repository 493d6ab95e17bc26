"""The evidence as data others read: JSON (stable keys, ISO 8601 UTC times) and CSV rows (one
kind of row per file: backups, drills or restores, since one CSV file holds one table)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from restores.evidence import Evidence

CSV_KINDS = ("backups", "drills", "restores")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z (``2026-12-07T11:47:31Z``); None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def as_json(evidence: Evidence) -> dict[str, Any]:
    """The whole report as JSON-ready values with stable keys and ISO 8601 UTC times."""
    return {"format": "backupsite-evidence/1", **_plain(asdict(evidence))}


CSV_HEADERS: dict[str, tuple[str, ...]] = {
    "backups": (
        "target", "id", "status", "type", "started", "duration_seconds", "size_bytes", "sha256",
        "copies", "proof", "proof_at", "verified_at", "drills_passed", "drills_failed",
    ),
    "drills": (
        "target", "id", "backup_id", "status", "trigger", "started", "restore_seconds", "data_age_seconds",
        "duration_seconds", "checks_passed", "checks_failed", "error",
    ),
    "restores": (
        "target", "id", "backup_id", "destination", "initiated_by", "approved_by", "status", "started",
        "completed", "duration_seconds", "error",
    ),
}  # fmt: skip


def csv_rows(evidence: Evidence, what: str = "backups") -> Iterable[list[Any]]:
    """The header, then one row per backup (or drill, or restore) of ``what``."""
    yield list(CSV_HEADERS[what])
    for target in evidence.targets:
        if what == "backups":
            for b in target.backups:
                copies = " ".join(
                    f"{c.storage}:{c.status}:{'' if c.size_bytes is None else c.size_bytes}" for c in b.copies
                )
                yield [
                    target.name, b.id, b.status, b.backup_type, iso(b.started_at), _blank(b.duration_seconds),
                    _blank(b.size_bytes), b.sha256, copies, b.proof, iso(b.proof_at) or "", iso(b.verified_at) or "",
                    b.drills_passed, b.drills_failed,
                ]  # fmt: skip
        elif what == "drills":
            for d in target.drills:
                passed = sum(1 for check in d.checks if check.ok)
                yield [
                    target.name, d.id, _blank(d.backup_id), d.status, d.trigger, iso(d.started_at),
                    _blank(d.restore_seconds), _blank(d.data_age_seconds), _blank(d.duration_seconds), passed,
                    len(d.checks) - passed, d.error,
                ]  # fmt: skip
        else:
            for r in target.restores:
                yield [
                    target.name, r.id, r.backup_id, r.destination, r.initiated_by, r.approved_by, r.status,
                    iso(r.started_at) or "", iso(r.completed_at) or "", _blank(r.duration_seconds), r.error,
                ]  # fmt: skip


def _blank(value: Any) -> Any:
    return "" if value is None else value
