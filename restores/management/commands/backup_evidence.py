"""manage.py backup_evidence: the auditors' report of a window (HTML, JSON or CSV)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups.cli import usage_error, who
from backups.services import parse_audit_since, record_audit
from restores.evidence import Evidence, UnknownTarget, collect
from restores.evidence_export import CSV_KINDS, as_json, csv_rows
from restores.evidence_html import render

FILE_MODE = 0o640


class Command(BaseCommand):
    # Run by an operator on the server (no web user to ask can() about); recorded in the audit log.
    help = (
        "Write the evidence auditors ask for: per target its policy, every backup in the window with "
        "its copies, checksum and proof, verifications, restore drills, restores performed and outages. "
        "CSV holds one kind of row per file (--what)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", default="90d", help="the window: a duration (90d, 12w, 24h) or an ISO date"
        )
        parser.add_argument("--target", help="only this target (default: every target)")
        parser.add_argument("--format", choices=("html", "json", "csv"), default="html")
        parser.add_argument(
            "--what", choices=CSV_KINDS, default="backups", help="CSV only: which rows (default backups)"
        )
        parser.add_argument(
            "--output", help="write this file (atomically, mode 0640) instead of standard output"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = parse_audit_since(options["since"])
        except ValueError as exc:
            raise usage_error(f"--since: {exc}") from None
        if options["what"] != "backups" and options["format"] != "csv":
            raise usage_error("--what applies to --format csv only; HTML and JSON hold every kind")
        output = Path(options["output"]) if options["output"] else None
        if output is not None and not output.parent.is_dir():
            raise usage_error(
                f"--output: directory {output.parent} does not exist; create it or name another"
            )
        try:
            evidence = collect(since, options["target"])
        except UnknownTarget:
            raise usage_error(
                f"--target: no target named {options['target']!r}; see the admin's Targets page or backup_list"
            ) from None
        text = self._render(evidence, options["format"], options["what"])
        if output is None:
            self.stdout.write(text, ending="")
        else:
            write_atomically(output, text)
        record_audit(
            "evidence.export",
            auth_method="cli",
            username=who(),
            details={
                "since": since.isoformat(),
                "target": options["target"] or "",
                "format": options["format"],
                "targets": len(evidence.targets),
                "output": str(output) if output else "stdout",
            },
        )
        if output is not None:
            self.stderr.write(f"{output}: evidence of {len(evidence.targets)} target(s) written")

    def _render(self, evidence: Evidence, form: str, what: str) -> str:
        if form == "json":
            return json.dumps(as_json(evidence), indent=2, ensure_ascii=False) + "\n"
        if form == "csv":
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(csv_rows(evidence, what))
            return buffer.getvalue()
        return render(evidence)


def write_atomically(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file in the same directory, renamed over it once
    complete (a reader sees the old file or the new one, never half of it); mode 0640."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
