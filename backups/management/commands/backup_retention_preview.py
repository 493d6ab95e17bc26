"""manage.py backup_retention_preview: what a retention policy keeps and deletes, and why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from backups import services
from backups.cli import dump_json, usage_error
from backups.models import Target
from backups.services import (
    BackupInfo,
    Policy,
    PolicyError,
    SpecError,
    parse_moment,
    parse_spec,
    parse_timestamps,
)
from backups.services import plan_retention as plan


class Command(BaseCommand):
    help = (
        "Preview a retention policy without deleting anything, on a file of timestamps (all treated "
        "as successful backups) or on a target's real backups. SPEC: comma-separated key=value, e.g. "
        "keep_last=3,keep_daily=7,keep_within=2d,tiers=15min:24h;1h:72h,rules=3.1;2.15,"
        "retention_days=30,max_backups=10,min_keep=1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--policy", metavar="SPEC", help="the policy to try (default with --target: its own)"
        )
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--timestamps", metavar="FILE", help="one ISO 8601 timestamp per line ('-': stdin)"
        )
        source.add_argument("--target", metavar="NAME")
        parser.add_argument("--now", metavar="ISO8601", help="plan as of this moment (default: now)")
        parser.add_argument("--timezone", metavar="TZ", help="for periods and naive timestamps (default: "
                            "the target's, else UTC)")  # fmt: skip
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        target = None
        if options["target"]:
            target = Target.objects.filter(name=options["target"]).first()
            if target is None:
                raise usage_error(f"--target: unknown target {options['target']!r}")
        tz_name = options["timezone"] or (target.timezone if target else "UTC")
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            raise usage_error(
                f"--timezone: unknown timezone {tz_name!r}; use an IANA name like Europe/Berlin"
            ) from None
        try:
            now = parse_moment(options["now"], tz) if options["now"] else timezone.now()
        except ValueError:
            raise usage_error(f"--now: {options['now']!r} is not an ISO 8601 timestamp") from None
        policy = self._policy(options["policy"], tz_name, required=target is None)
        if target is not None:
            self._preview_target(target, policy, now, options["json"])
        else:
            assert policy is not None
            self._preview_file(options["timestamps"], policy, now, tz, options["json"])

    def _policy(self, spec: str | None, tz_name: str, *, required: bool) -> Policy | None:
        if spec is None:
            if required:
                raise usage_error(
                    "--policy: required with --timestamps, e.g. --policy keep_daily=7,keep_weekly=4"
                )
            return None
        try:
            return Policy.from_mapping(parse_spec(spec), timezone=tz_name)
        except SpecError as exc:
            raise usage_error(f"--policy {exc}") from None
        except PolicyError as exc:
            raise usage_error(
                f"--policy {exc}" if exc.field != "timezone" else f"--timezone: {exc.message}"
            ) from None

    def _preview_file(self, name: str, policy: Policy, now: Any, tz: ZoneInfo, as_json: bool) -> None:
        try:
            if name == "-":
                lines = sys.stdin.read().splitlines()
            else:
                lines = Path(name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise usage_error(f"--timestamps: cannot read {name}: {exc}") from None
        try:
            moments = parse_timestamps(lines, tz, name)
        except SpecError as exc:
            raise usage_error(f"--timestamps: {exc}") from None
        text = {number: original for number, original, _ in moments}
        result = plan([BackupInfo(number, moment, "success") for number, _, moment in moments], policy, now)
        if as_json:
            dump_json(
                self.stdout,
                {
                    "keep": [
                        {"timestamp": text[k.backup.id], "reasons": list(k.reasons)} for k in result.keep
                    ],
                    "delete": [{"timestamp": text[d.backup.id]} for d in result.delete],
                },
            )
            return
        width = max(len(original) for original in text.values())
        self.stdout.write(f"{len(result.keep)} kept, {len(result.delete)} deleted")
        rows = [(k.backup, "keep", ", ".join(k.reasons)) for k in result.keep]
        rows += [(d.backup, "delete", d.reason) for d in result.delete]
        for backup, verdict, why in sorted(rows, key=lambda row: (row[0].timestamp, row[0].id), reverse=True):
            self.stdout.write(f"{verdict:<7} {text[backup.id]:<{width}}  {why}")

    def _preview_target(self, target: Target, policy: Policy | None, now: Any, as_json: bool) -> None:
        result = services.plan_cleanup(target, now, policy=policy)
        if as_json:
            dump_json(
                self.stdout,
                {
                    "target": target.name,
                    "keep": [
                        {"id": b.pk, "timestamp": _when(b), "status": b.status, "reasons": list(reasons)}
                        for b, reasons in result.keep
                    ],
                    "delete": [
                        {"id": b.pk, "timestamp": _when(b), "status": b.status, "reason": reason}
                        for b, reason in result.delete
                    ],
                    "refused": result.refused,
                    "errors": result.errors,
                },
            )
            return
        self.stdout.write(f"{target.name}: {len(result.keep)} kept, {len(result.delete)} deleted")
        for group in result.groups:
            if group.error:
                self.stdout.write(self.style.ERROR(f"  {group.error}"))
        if result.refused:
            self.stdout.write(self.style.WARNING(f"  cleanup would stop here: {result.refused}"))
        rows = [(b, "keep", ", ".join(reasons)) for b, reasons in result.keep]
        rows += [(b, "delete", reason) for b, reason in result.delete]
        rows.sort(key=lambda row: (services.backup_info(row[0]).timestamp, row[0].pk), reverse=True)
        for backup, verdict, why in rows:
            self.stdout.write(f"{verdict:<7} {backup.pk:>7}  {_when(backup)}  {backup.status:<8} {why}")


def _when(backup: Any) -> str:
    return services.backup_info(backup).timestamp.isoformat()
