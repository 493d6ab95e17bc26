"""First-run setup for ``make run``: an admin user, the demo configuration, a first backup."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from backups import services

from .models import BackupStatus, Target

DEMO_CONFIG = Path(settings.BASE_DIR) / "examples" / "demo.toml"
ADMIN_USERNAME = "admin"


@dataclass
class DemoReport:
    admin_created: bool = False
    generated_password: str | None = None
    config_applied: bool = False
    skipped_reason: str = ""
    backups: list[str] = field(default_factory=list)


def ensure_admin(password: str | None) -> tuple[bool, str | None]:
    """Create the ``admin`` superuser once. Returns (created, generated password or None)."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=ADMIN_USERNAME).first()
    if user is not None:
        if password:
            user.set_password(password)
            user.save(update_fields=["password"])
        return False, None
    generated = None if password else secrets.token_urlsafe(12)
    user_model.objects.create_superuser(ADMIN_USERNAME, "", password or generated)
    return True, generated


def _demo_files(root: Path) -> None:
    if root.exists():
        return
    (root / "docs").mkdir(parents=True)
    (root / "README.txt").write_text("Demo files backed up by Backupsite.\n")
    (root / "docs" / "notes.md").write_text("# Notes\n\nEdit me, then run `manage.py backup_create`.\n")
    (root / "docs" / "data.csv").write_text("".join(f"{i},{i * i}\n" for i in range(1000)))
    (root / "scratch.tmp").write_text("excluded by the demo's exclude glob\n")


def bootstrap_demo() -> DemoReport:
    report = DemoReport()
    report.admin_created, report.generated_password = ensure_admin(
        os.environ.get("BACKUPSITE_ADMIN_PASSWORD")
    )
    home = Path(settings.BACKUPSITE_HOME)
    database = Path(str(settings.DATABASES["default"]["NAME"]))
    if home != Path(settings.BASE_DIR) / "var" or database != home / "backupsite.sqlite3":
        report.skipped_reason = "BACKUPSITE_HOME or DATABASE_URL is customised; the demo config expects ./var"
        return report
    _demo_files(home / "demo-files")
    # The demo's rows stay editable in the admin: it is there to be tried out.
    services.apply_config(services.load_config(DEMO_CONFIG), as_source=False)
    report.config_applied = True
    for target in Target.objects.filter(name__in=["backupsite-db", "demo-files"]):
        if not target.backups.filter(status=BackupStatus.SUCCESS).exists():
            backup = services.run_backup(target, initiated_by="make run")
            detail = backup.file_path if backup.status == BackupStatus.SUCCESS else backup.error_message
            report.backups.append(f"{target.name}: {backup.status} ({detail})")
    return report
