"""manage.py backup_config check|apply FILE: declare storages, targets and schedules in TOML."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backups import services
from backups.cli import dump_json, usage_error, who


class Command(BaseCommand):
    help = "Check or apply a TOML configuration file. Exit 2 lists every problem and changes nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["check", "apply"])
        parser.add_argument("file")
        parser.add_argument(
            "--skip-probes",
            action="store_true",
            help="do not check that sources and storages are reachable now",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        probe = not options["skip_probes"]
        try:
            cfg = services.load_config(options["file"])
            if options["action"] == "check":
                services.validate_config(cfg, probe=probe)
                report = None
            else:
                report = services.apply_config(cfg, probe=probe)
        except services.ConfigInvalid as exc:
            if options["action"] == "apply":
                self.audit_apply(options["file"], "failure", {"problems": len(exc.errors)})
            if options["json"]:
                dump_json(self.stdout, {"ok": False, "errors": exc.errors})
            raise usage_error(
                f"{options['file']}: {len(exc.errors)} problem(s), nothing changed:\n  "
                + "\n  ".join(exc.errors)
            ) from None
        if report is not None:
            self.audit_apply(options["file"], "success", report.as_dict())
        if options["json"]:
            dump_json(self.stdout, {"ok": True, **(report.as_dict() if report else {})})
        elif report is None:
            self.stdout.write(self.style.SUCCESS(f"{options['file']}: ok"))
        else:
            for kind in ("created", "updated", "unchanged"):
                for line in getattr(report, kind):
                    self.stdout.write(f"{kind}: {line}")
            self.stdout.write(self.style.SUCCESS(f"{options['file']}: applied"))

    def audit_apply(self, file: str, outcome: str, details: dict[str, Any]) -> None:
        """config.apply in the audit log, by ``cli:<the OS user>``: what changed, or how many problems."""
        services.record_audit(
            "config.apply",
            username=who(),
            auth_method="cli",
            outcome=outcome,
            details={"file": file, **details},
        )
