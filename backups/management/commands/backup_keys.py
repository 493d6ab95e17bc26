"""manage.py backup_keys generate|add|rotate|status|retire: the encryption key catalog.

A key's identity (its private key) stays in its file: these commands print names, key ids,
recipients and file paths, never an identity. Each change is recorded in the audit log, by
``cli:<the OS user>``, and so is each refusal.

Exit status: 0 done (or nothing to do); 1 refused or a bad value, in one line naming the field
and the fix, with nothing changed; 2 a missing or unknown argument."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Model
from django.utils import timezone

from backups import services
from backups.cli import dump_json, failed, who
from backups.models import EncryptionKey, Outcome, Target

KEY_MODEL = "backups.encryptionkey"
# The audit action of each change this command makes (or is refused).
AUDIT_ACTIONS = {
    "generated": "key.generate",
    "added": "key.add",
    "rotated": "key.rotate",
    "retired": "key.retire",
}
IDENTITY_PREFIX = "AGE-SECRET-KEY-"


class Command(BaseCommand):
    # Keys are looked at when something else is broken (a restore on another host): the
    # project-wide checks (storages, binaries) must not stand in the way.
    requires_system_checks: list[str] = []
    help = (
        "Manage the encryption keys backups are encrypted to (age): generate a key file, add an "
        "existing recipient, rotate a target to another key, show every key's status, retire a key. "
        "Never prints a private key. Exit 0: done, 1: refused or a bad value (nothing changed), "
        "2: bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        generate = actions.add_parser(
            "generate",
            help="write a new key file (0600, never overwritten) and register its recipient",
        )
        generate.add_argument("name", metavar="NAME")
        generate.add_argument(
            "--out",
            metavar="FILE",
            help="where to write the key file (default: BACKUPSITE_HOME/secrets/NAME.key)",
        )
        add = actions.add_parser(
            "add", help="register an existing key by its recipient (e.g. an escrow key kept offline)"
        )
        add.add_argument("name", metavar="NAME")
        add.add_argument("--recipient", required=True, metavar="age1...", help="the key's public key")
        add.add_argument(
            "--identity",
            default="",
            metavar="REF",
            help="where this host finds its key file: '${file:/path/to/key}' or '${ENV_VAR}' "
            "(default: none, this host only encrypts to it)",
        )
        rotate = actions.add_parser(
            "rotate", help="new backups of a target (and its schedules on the old key) use another key"
        )
        rotate.add_argument("--target", required=True, metavar="NAME")
        rotate.add_argument("--to", required=True, metavar="KEY")
        status = actions.add_parser(
            "status", help="every key: live backups depending on it, who uses it, whether this host decrypts"
        )
        status.add_argument("--json", action="store_true", help="machine-readable output")
        retire = actions.add_parser(
            "retire", help="no new backup is encrypted to the key (refused while live backups need it)"
        )
        retire.add_argument("name", metavar="NAME")

    def handle(self, *args: Any, **options: Any) -> None:
        handlers = {
            "generate": self.generate,
            "add": self.add,
            "rotate": self.rotate,
            "status": self.status,
            "retire": self.retire,
        }
        handlers[options["action"]](options)

    # -- the actions ------------------------------------------------------------------------------

    def generate(self, options: dict[str, Any]) -> None:
        name: str = options["name"]
        try:
            check_name(name)
            key, path = services.generate_key(name, Path(options["out"]) if options["out"] else None)
        except (services.ServiceError, ValidationError) as exc:
            raise self.refused("generated", unknown_key(name), f"generate {name}: {one_line(exc)}") from None
        self.audit("generated", key, {"fingerprint": key.fingerprint, "key_file": str(path)})
        self.stdout.write(self.style.SUCCESS(f"generated key {key.name}"))
        self.stdout.write(f"  id         {key.fingerprint}")
        self.stdout.write(f"  recipient  {key.recipient}")
        self.stdout.write(f"  key file   {path} (0600)")
        self.stdout.write(
            "  keep a copy of the key file somewhere safe: without it, backups encrypted to this key "
            "cannot be restored"
        )
        self.warn_unless_decrypts(key)

    def add(self, options: dict[str, Any]) -> None:
        name: str = options["name"]
        recipient: str = options["recipient"].strip()
        identity: str = options["identity"].strip()
        try:
            check_name(name)
            check_recipient(recipient)
            key = services.register_key(name, recipient, identity)
        except (services.ServiceError, ValidationError) as exc:
            raise self.refused("added", unknown_key(name), f"add {name}: {one_line(exc)}") from None
        self.audit("added", key, {"fingerprint": key.fingerprint, "has_identity": bool(key.identity)})
        self.stdout.write(self.style.SUCCESS(f"added key {key.name}"))
        self.stdout.write(f"  id         {key.fingerprint}")
        self.stdout.write(f"  recipient  {key.recipient}")
        if key.identity:
            self.stdout.write(f"  identity   {key.identity}")
            self.warn_unless_decrypts(key)
        else:
            self.stdout.write(
                "  identity   none on this host: backups can be encrypted to it, not decrypted here"
            )

    def rotate(self, options: dict[str, Any]) -> None:
        target = Target.objects.filter(name=options["target"]).first()
        if target is None:
            known = ", ".join(Target.objects.values_list("name", flat=True)) or "none"
            raise self.refused(
                "rotated",
                services.AuditObject("backups.target", "", options["target"]),
                f"--target: no target named {options['target']!r}; known targets: {known}",
            )
        old = target.encryption
        try:
            changed = services.rotate_key(target, options["to"])
        except services.ServiceError as exc:
            raise self.refused("rotated", target, one_line(exc)) from None
        if not changed:
            self.stdout.write(f"target {target.name} already uses key {options['to']}; nothing changed")
            return
        self.audit("rotated", target, {"from": old, "to": options["to"], "changed": changed})
        for line in changed:
            self.stdout.write(self.style.SUCCESS(line))
        to = options["to"]
        if old:
            self.stdout.write(
                f"backups made so far keep key {old}: keep its identity until retention has removed "
                f"them (backup_keys status counts them), then backup_keys retire {old}"
            )
            reminder = (
                f'configuration file: write encryption = "{to}" where it names "{old}" for target '
                f"{target.name} and its schedules, or the next backup_config apply puts {old} back"
            )
        else:
            reminder = (
                f'configuration file: add encryption = "{to}" under [targets.{target.name}], or the '
                "next backup_config apply turns encryption off again"
            )
        self.stdout.write(self.style.WARNING(reminder))

    def status(self, options: dict[str, Any]) -> None:
        rows = services.key_status()
        if options["json"]:
            dump_json(self.stdout, [status_record(row) for row in rows])
            return
        if not rows:
            self.stdout.write("no encryption keys; backup_keys generate NAME makes one")
            return
        width = max(len("KEY"), *(len(row.key.name) for row in rows))
        live = [live_text(row) for row in rows]
        live_width = max(len("LIVE BACKUPS"), *(len(text) for text in live))
        indent = " " * (width + 2)
        self.stdout.write(
            f"{'KEY':<{width}}  {'ID':<16}  {'CREATED':<10}  {'RETIRED':<10}  "
            f"{'LIVE BACKUPS':<{live_width}}  DECRYPTS HERE  USED BY"
        )
        for row, live_backups in zip(rows, live, strict=True):
            key = row.key
            self.stdout.write(
                f"{key.name:<{width}}  {key.fingerprint:<16}  {day(key.created_at):<10}  "
                f"{day(key.retired_at):<10}  {live_backups:<{live_width}}  "
                f"{'yes' if row.can_decrypt else 'NO':<13}  {', '.join(row.used_by) or '-'}"
            )
            self.stdout.write(f"{indent}recipient {key.recipient}")
            if not row.can_decrypt:
                self.stdout.write(self.style.WARNING(f"{indent}cannot decrypt here: {row.why}"))

    def retire(self, options: dict[str, Any]) -> None:
        name: str = options["name"]
        before = EncryptionKey.objects.filter(name=name).first()
        try:
            key = services.retire_key(name)
        except services.ServiceError as exc:
            raise self.refused("retired", before or unknown_key(name), one_line(exc)) from None
        if before is not None and before.retired_at is not None:
            self.stdout.write(f"key {key.name} was retired on {day(before.retired_at)}; nothing changed")
            return
        self.audit("retired", key, {"fingerprint": key.fingerprint})
        self.stdout.write(
            self.style.SUCCESS(
                f"retired key {key.name} (id {key.fingerprint}): no new backup is encrypted to it"
            )
        )

    # -- helpers ----------------------------------------------------------------------------------

    def warn_unless_decrypts(self, key: EncryptionKey) -> None:
        row = next(row for row in services.key_status() if row.key.pk == key.pk)
        if row.can_decrypt:
            self.stdout.write("  this host can decrypt its backups")
        else:
            self.stdout.write(self.style.WARNING(f"  this host cannot decrypt its backups yet: {row.why}"))

    def audit(self, change: str, about: Model, details: dict[str, Any]) -> None:
        services.record_audit(
            AUDIT_ACTIONS[change],
            username=who(),
            auth_method="cli",
            obj=about,
            details={"model": about._meta.label_lower, "change": change, **details},
        )

    def refused(self, change: str, about: Model | services.AuditObject, message: str) -> CommandError:
        """The refusal in the audit log, and the command's one-line error (exit 1)."""
        model = about.type if isinstance(about, services.AuditObject) else about._meta.label_lower
        services.record_audit(
            AUDIT_ACTIONS[change],
            username=who(),
            auth_method="cli",
            obj=about,
            outcome=Outcome.REFUSED,
            details={"model": model, "change": change, "reason": message},
        )
        return failed(message)


def unknown_key(name: str) -> services.AuditObject:
    """What a refused change is about when no key row is at hand."""
    return services.AuditObject(KEY_MODEL, "", name)


def check_name(name: str) -> None:
    """NAME as the catalog takes it (a slug), before anything is written under it."""
    try:
        EncryptionKey._meta.get_field("name").clean(name, None)
    except ValidationError as exc:
        raise services.ServiceError(
            f"NAME: {one_line(exc)} (the name targets and the configuration file use for the key)"
        ) from None
    existing = EncryptionKey.objects.filter(name__iexact=name).first()
    if existing is not None:
        raise services.ServiceError(
            f"NAME: a key named {existing.name!r} exists already; choose another name "
            "(backup_keys status lists them)"
        )


def check_recipient(recipient: str) -> None:
    """--recipient as the catalog takes it; a private key pasted by mistake is never repeated
    (an error shown or audited would spread it)."""
    if recipient.upper().startswith(IDENTITY_PREFIX):
        raise services.ServiceError(
            "--recipient: that is a private key (an identity), not a recipient; give its public "
            "key (age-keygen -y KEYFILE prints it) and keep the private key in its file"
        )
    try:
        EncryptionKey._meta.get_field("recipient").clean(recipient, None)
    except ValidationError as exc:
        raise services.ServiceError(f"--recipient: {one_line(exc)}") from None
    existing = EncryptionKey.objects.filter(recipient=recipient).first()
    if existing is not None:
        raise services.ServiceError(
            f"--recipient: already in the catalog as key {existing.name!r}; a key is added once"
        )


def one_line(error: Exception) -> str:
    """A service's or the model's refusal as one line, each field named."""
    if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    return " ".join(str(error).split())


def day(moment: datetime | None) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d}" if moment is not None else "-"


def live_text(row: services.KeyStatus) -> str:
    """``12 (10 own, 2 escrow)``: the live backups that need this key, and in which role."""
    if not row.live_backups:
        return "0"
    return f"{row.live_backups} ({row.own_backups} own, {row.live_backups - row.own_backups} escrow)"


def status_record(row: services.KeyStatus) -> dict[str, Any]:
    key = row.key
    return {
        "name": key.name,
        "fingerprint": key.fingerprint,
        "recipient": key.recipient,
        "identity": key.identity,  # a reference (${file:...} or ${ENV}), never the key itself
        "created_at": key.created_at,
        "retired_at": key.retired_at,
        "live_backups": row.live_backups,
        "own_backups": row.own_backups,
        "escrow_backups": row.live_backups - row.own_backups,
        "used_by": list(row.used_by),
        "can_decrypt": row.can_decrypt,
        "why": row.why,
    }
