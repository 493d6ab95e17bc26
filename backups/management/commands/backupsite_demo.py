"""manage.py backupsite_demo: what `make run` does before serving the admin."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from backups.demo import ADMIN_USERNAME, bootstrap_demo


class Command(BaseCommand):
    help = "Create the admin user, apply examples/demo.toml and take a first backup of each demo target."

    def handle(self, *args: Any, **options: Any) -> None:
        report = bootstrap_demo()
        if report.generated_password:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin user '{ADMIN_USERNAME}' with password: {report.generated_password}\n"
                    "It is shown only this once; set BACKUPSITE_ADMIN_PASSWORD to choose it yourself."
                )
            )
        elif report.admin_created:
            self.stdout.write(
                f"Created admin user '{ADMIN_USERNAME}' (password from BACKUPSITE_ADMIN_PASSWORD)."
            )
        if report.skipped_reason:
            self.stdout.write(f"Demo configuration not applied: {report.skipped_reason}.")
        elif report.config_applied:
            self.stdout.write("Applied examples/demo.toml.")
        for line in report.backups:
            self.stdout.write(f"First backup of {line}")
        self.stdout.write(self.style.SUCCESS("Backupsite admin: http://127.0.0.1:8000/admin/"))
