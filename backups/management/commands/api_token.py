"""manage.py api_token create|list|revoke: personal tokens of the HTTP API (docs/API.md).

``create`` prints the token once: only its SHA-256 is stored, so it cannot be shown again. Each
creation and revocation is recorded in the audit log, by ``cli:<the OS user>``.

Exit status: 0 done; 1 a bad value or an unknown user or token, in one line naming the option and
the fix, with nothing changed; 2 a missing or unknown argument."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from backups.access import tokens
from backups.cli import MAX_ID, dump_json, failed, who, whole_number
from backups.models import ApiToken


class Command(BaseCommand):
    help = (
        "Manage personal API tokens: create one for a user (printed once, stored only as its SHA-256), "
        "list them, revoke one. Exit 0: done, 1: a bad value (nothing changed), 2: bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="create a token and print it once")
        create.add_argument("--user", required=True, metavar="USERNAME", help="whose rights the token has")
        create.add_argument(
            "--expires",
            default="90d",
            metavar="WHEN",
            help="a lifetime (90d, 12h, 4w) or an ISO date (2027-03-01); default 90d",
        )
        create.add_argument(
            "--scope",
            default="",
            metavar="TAG",
            help="act only on the targets carrying this tag (default: all)",
        )
        create.add_argument("--name", default="", metavar="NAME", help="what it is for, e.g. ci-deploy")
        create.add_argument("--json", action="store_true", help="machine-readable output")
        listing = actions.add_parser("list", help="every token (never the token itself)")
        listing.add_argument("--user", metavar="USERNAME", help="only this user's tokens")
        listing.add_argument("--json", action="store_true", help="machine-readable output")
        revoke = actions.add_parser("revoke", help="revoke a token at once")
        revoke.add_argument("id", type=whole_number(1, MAX_ID), metavar="ID", help="its id (api_token list)")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['action']}")(options)

    def do_create(self, options: dict[str, Any]) -> None:
        user = self.user(options["user"])
        try:
            expires_at = tokens.parse_expiry(options["expires"])
            row, clear = tokens.create_token(
                user,
                name=options["name"],
                expires_at=expires_at,
                scope=options["scope"],
                by=tokens.Actor(username=who(), auth_method="cli"),
            )
        except tokens.TokenProblem as exc:
            raise failed(f"--{exc.field}: {exc}") from None
        if options["json"]:
            dump_json(self.stdout, {**describe(row), "token": clear})
            return
        self.stdout.write(
            f"Token {row.pk} ({row.key_id}) for {user.get_username()}, expires {row.expires_at:%Y-%m-%d %H:%M %Z}"
        )
        if row.scope:
            self.stdout.write(f"Acts only on targets tagged {row.scope}.")
        self.stdout.write("Copy it now: it is shown only this once.")
        self.stdout.write(clear)

    def do_list(self, options: dict[str, Any]) -> None:
        rows = ApiToken.objects.select_related("user").order_by("user__username", "-created_at")
        if options["user"]:
            rows = rows.filter(user=self.user(options["user"]))
        described = [describe(row) for row in rows]
        if options["json"]:
            dump_json(self.stdout, described)
            return
        if not described:
            self.stdout.write("No API tokens.")
        for item in described:
            self.stdout.write(
                f"{item['id']:>5}  {item['key_id']}  {item['user']:<20} {item['state']:<8} "
                f"expires {item['expires_at'][:16]}  scope {item['scope'] or '-'}  {item['name']}"
            )

    def do_revoke(self, options: dict[str, Any]) -> None:
        row = ApiToken.objects.select_related("user").filter(pk=options["id"]).first()
        if row is None:
            raise failed(f"ID: there is no token {options['id']}; api_token list shows them")
        if tokens.revoke(row, by=tokens.Actor(username=who(), auth_method="cli")):
            self.stdout.write(f"Revoked token {row.pk} ({row.key_id}) of {row.user.get_username()}.")
        else:
            self.stdout.write(f"Token {row.pk} ({row.key_id}) was already revoked; nothing changed.")

    @staticmethod
    def user(username: str) -> Any:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise failed(
                f"--user: there is no user {username!r}; create it first (manage.py createsuperuser)"
            )
        return user


def describe(row: ApiToken) -> dict[str, Any]:
    now = timezone.now()
    state = "revoked" if row.revoked_at else "expired" if row.expires_at <= now else "active"
    return {
        "id": row.pk,
        "key_id": row.key_id,
        "user": row.user.get_username(),
        "name": row.name,
        "scope": row.scope,
        "state": state,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "last_used_address": row.last_used_address,
    }
