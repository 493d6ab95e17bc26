"""manage.py backup_provision: a backup restored into a new database on a sandbox for
developers, with its own user; the connection string is printed once and stored nowhere."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from backups.cli import MAX_ID, dump_json, failed, usage_error, who, whole_number
from backups.humanize import relative_time
from backups.models import Backup, Target
from backups.services import ServiceError
from restores.models import Provision
from restores.provisioning import (
    ProvisionRefused,
    drop_provision,
    live_provisions,
    parse_ttl,
    provision,
)


def provision_dict(row: Provision, now: Any) -> dict[str, Any]:
    if row.dropped_at:
        status = "dropped"
    elif row.drop_error:
        status = "drop failed"
    else:
        status = {"running": "restoring", "failed": "failed"}.get(row.restore.status, "active")
    return {
        "name": row.database,
        "user": row.username,
        "sandbox": row.sandbox.name,
        "backup": row.restore.backup_id,
        "created_at": row.created_at.isoformat(),
        "created": relative_time(row.created_at, now),
        "expires_at": row.expires_at.isoformat(),
        "expires": relative_time(row.expires_at, now),
        "masked": row.masked,
        "created_by": row.created_by,
        "status": status,
        "drop_error": row.drop_error,
    }


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = (
        "Restore a backup into a new database on a sandbox target for developers, with a database user "
        "of its own (rights on that database only); prints the connection string ONCE (the password is "
        "not stored). --list shows the copies, --drop NAME drops one now (no prompt). "
        "Exit 0: done, 1: failed, 2: refused or bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", type=whole_number(1, MAX_ID), dest="backup_id", help="the backup to copy")
        parser.add_argument("--to", metavar="SANDBOX", help="the sandbox target to create the database on")
        parser.add_argument("--ttl", default="24h", help="dropped after this long (e.g. 8h, 7d; at most 30d)")
        parser.add_argument("--mask", metavar="FILE", help="SQL run on the copy before the user exists")
        parser.add_argument("--list", action="store_true", help="show the copies not dropped yet")
        parser.add_argument("--drop", metavar="NAME", help="drop this copy's database and user now")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self._list(options["json"])
        elif options["drop"]:
            self._drop(options["drop"], options["json"])
        else:
            self._create(options)

    def _create(self, options: dict[str, Any]) -> None:
        if options["backup_id"] is None or not options["to"]:
            raise usage_error("give --id BACKUP and --to SANDBOX (or --list, or --drop NAME)")
        try:
            ttl = parse_ttl(options["ttl"], "--ttl")
        except ProvisionRefused as exc:
            raise usage_error(str(exc)) from None
        mask = None
        if options["mask"]:
            try:
                mask = Path(options["mask"]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise usage_error(f"--mask: cannot read {options['mask']} as UTF-8 SQL: {exc}") from None
        backup = Backup.objects.select_related("target").filter(pk=options["backup_id"]).first()
        if backup is None:
            raise usage_error(f"--id: no backup with id {options['backup_id']}")
        sandbox = Target.objects.filter(name=options["to"]).first()
        if sandbox is None:
            raise usage_error(f"--to: no target named {options['to']}")
        try:
            row, url = provision(backup, sandbox, ttl=ttl, mask_sql=mask, initiated_by=who())
        except ProvisionRefused as exc:
            raise usage_error(str(exc)) from None
        except ServiceError as exc:
            raise failed(str(exc)) from None
        if options["json"]:
            dump_json(self.stdout, {**provision_dict(row, timezone.now()), "connection_string": url})
            return
        self.stdout.write(f"provisioned backup {backup.pk} as {row.database} on {sandbox.name}")
        self.stdout.write(
            f"expires {relative_time(row.expires_at, timezone.now())} ({row.expires_at:%Y-%m-%d %H:%M %Z})"
        )
        self.stdout.write(url)
        sys.stderr.write("this connection string is shown only now: the password is not stored anywhere\n")

    def _list(self, as_json: bool) -> None:
        now = timezone.now()
        rows = [provision_dict(row, now) for row in live_provisions()]
        if as_json:
            dump_json(self.stdout, rows)
            return
        if not rows:
            self.stdout.write("no provisioned copies")
            return
        for row in rows:
            self.stdout.write(
                f"{row['name']}  sandbox {row['sandbox']}  backup {row['backup']}  "
                f"created {row['created']}  "
                f"expires {row['expires']}  {row['status']}"
                + (f": {row['drop_error']}" if row["drop_error"] else "")
            )

    def _drop(self, name: str, as_json: bool) -> None:
        row = Provision.objects.select_related("sandbox", "restore").filter(database=name).first()
        if row is None:
            raise usage_error(f"--drop: no provisioned copy named {name} (see --list)")
        try:
            drop_provision(row, by=who())
        except ServiceError as exc:
            raise failed(str(exc)) from None
        if as_json:
            dump_json(self.stdout, provision_dict(row, timezone.now()))
        else:
            self.stdout.write(f"dropped {row.database} and user {row.username} on {row.sandbox.name}")
