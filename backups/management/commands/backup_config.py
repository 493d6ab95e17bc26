"""manage.py backup_config check|apply|diff|wait [FILE]: declare storages, targets and
schedules in TOML; FILE defaults to BACKUPSITE_CONFIG."""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups import services
from backups.cli import EXIT_FAILED, dump_json, failed, usage_error, who

DEFAULT_WAIT_SECONDS = 300
ACTIONS = {
    "check": "Validate the file (and probe sources and storages); exit 2 lists every problem.",
    "apply": "Validate, then write every row the file defines in one transaction; rows it no longer "
    "defines are deactivated (targets, schedules, notifiers) or released (storages, keys).",
    "diff": "What apply would change (added, changed fields, deactivated; secrets as references): "
    "exit 0 nothing, 1 something, 2 the file is invalid.",
    "wait": "Exit 0 once the catalog holds this version of the file (at once with no file); 1 on timeout.",
}


def wait_seconds(text: str) -> int:
    """--timeout: whole seconds from 0 to a day."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be whole seconds from 0 to 86400, got {text[:30]!r}")
    return value


class Command(BaseCommand):
    help = (
        "Check, apply, diff or wait for a TOML configuration file (FILE, or BACKUPSITE_CONFIG). "
        "check and apply: exit 2 lists every problem and changes nothing. diff: exit 0 when an "
        "apply would change nothing, 1 when it would, 2 when the file is invalid. wait: exit 0 once "
        "the catalog holds this version of the file (at once with no file), 1 on timeout."
    )
    # No system checks first: this command is the configuration's own check, and the drift
    # check would only repeat, before an apply, the drift the apply is about to fix.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        # One subcommand each, so that FILE may follow the options (apply --skip-probes FILE):
        # an optional positional after the action cannot, with a single parser.
        actions = parser.add_subparsers(dest="action", required=True, metavar="{check,apply,diff,wait}")
        for name, text in ACTIONS.items():
            sub = actions.add_parser(name, help=text, description=text)
            sub.add_argument("file", nargs="?", help="the TOML file (default: BACKUPSITE_CONFIG)")
            if name in ("check", "apply"):
                sub.add_argument(
                    "--skip-probes",
                    action="store_true",
                    help="do not check that sources and storages are reachable now",
                )
            if name == "wait":
                sub.add_argument(
                    "--timeout",
                    type=wait_seconds,
                    default=DEFAULT_WAIT_SECONDS,
                    metavar="SECONDS",
                    help=f"give up after this long (default {DEFAULT_WAIT_SECONDS}), exit 1",
                )
            else:
                sub.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        file = options["file"] or settings.BACKUPSITE_CONFIG
        action = options["action"]
        if action == "wait":
            self.wait(file, options["timeout"])
            return
        if not file:
            raise usage_error(f"backup_config {action}: give FILE or set BACKUPSITE_CONFIG")
        probe = not options.get("skip_probes", False)
        try:
            cfg = services.load_config(file)
            if action == "check":
                services.validate_config(cfg, probe=probe)
                report = None
            elif action == "diff":
                self.show_diff(services.diff_config(cfg), options["json"])
                return
            else:
                report = services.apply_config(cfg, probe=probe, applied_by=who())
        except services.ConfigInvalid as exc:
            if action == "apply":
                self.audit_apply(file, "failure", {"problems": len(exc.errors)})
            if options["json"]:
                dump_json(self.stdout, {"ok": False, "errors": exc.errors})
            raise usage_error(
                f"{file}: {len(exc.errors)} problem(s), nothing changed:\n  " + "\n  ".join(exc.errors)
            ) from None
        if report is not None:
            self.audit_apply(file, "success", report.as_dict())
        if options["json"]:
            dump_json(self.stdout, {"ok": True, **(report.as_dict() if report else {})})
        elif report is None:
            self.stdout.write(self.style.SUCCESS(f"{file}: ok"))
        else:
            for kind in ("created", "updated", "unchanged", "deactivated"):
                for line in getattr(report, kind):
                    self.stdout.write(f"{kind}: {line}")
            self.stdout.write(self.style.SUCCESS(f"{file}: applied"))

    def show_diff(self, diff: services.ConfigDiff, as_json: bool) -> None:
        """Print what an apply would change; exit 1 (like diff(1)) when it would change anything."""
        if as_json:
            dump_json(self.stdout, diff.as_dict())
        else:
            for change in diff.added:
                self.stdout.write(f"added: {change.label}")
            for change in diff.changed:
                self.stdout.write(f"changed: {change.label}")
                for item in change.fields:
                    self.stdout.write(f"  {item.field}: {_text(item.old)} -> {_text(item.new)}")
            for change in diff.deactivated:
                self.stdout.write(f"{change.action}: {change.label}")
            if not diff.recorded:
                applied = f"{diff.applied[:12]} ({diff.applied_path})" if diff.applied else "none"
                self.stdout.write(
                    f"applied version: {applied}; this file: {diff.digest[:12]} (apply records it)"
                )
            if diff.empty:
                self.stdout.write(f"{diff.path}: no changes")
        if not diff.empty:
            raise CommandError(
                f"{diff.path}: an apply would change {len(diff.changes)} row(s)"
                + ("" if diff.recorded else " and record this version"),
                returncode=EXIT_FAILED,
            )

    def wait(self, file: str, timeout: int) -> None:
        """Exit 0 once the newest AppliedConfig records the file's digest; 1 on timeout."""
        if not file:
            self.stdout.write("no configuration file (BACKUPSITE_CONFIG is empty): nothing to wait for")
            return
        try:
            digest = services.file_digest(file)
        except OSError as exc:
            raise usage_error(f"{file}: cannot read: {exc.strerror}") from None
        waited = services.wait_until_applied(digest, timeout)
        if waited.done:
            self.stdout.write(f"{file}: applied ({digest[:12]})")
            return
        if waited.applied is not None:
            holds = (
                f"the catalog holds {waited.applied.digest} ({waited.applied.path}, applied "
                f"{waited.applied.applied_at:%Y-%m-%d %H:%M:%S} by {waited.applied.applied_by or '?'})"
            )
        else:
            holds = f"the catalog holds no applied file ({waited.problem or 'none applied yet'})"
        raise failed(
            f"{file}: waited {timeout} s for sha256 {digest} to be applied; {holds}. "
            "Apply it (backup_config apply) or check the process that does (the web service)."
        )

    def audit_apply(self, file: str, outcome: str, details: dict[str, Any]) -> None:
        """config.apply in the audit log, by ``cli:<the OS user>``: what changed, or how many problems."""
        services.record_audit(
            "config.apply",
            username=who(),
            auth_method="cli",
            outcome=outcome,
            details={"file": file, **details},
        )


def _text(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
