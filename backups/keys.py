"""Encryption keys at work: which recipients a run encrypts to, which identities this host has
to decrypt a backup, and the key catalog's life cycle (generate, register, rotate, status,
retire).

A key's identity is only ever a reference in the catalog (``${file:...}`` or ``${ENV}``),
resolved right before a decryption and remembered for redaction; nothing here returns it to a
caller that prints, logs or stores it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import secrets
from .models import Backup, BackupStatus, EncryptionKey, Target
from .requests import ScheduleInfo
from .resources import ServiceError
from .streaming.encryption import (
    EncryptionError,
    generate_key_file,
    identity_line,
    parse_recipient,
    recipient_of,
)

AGE = "age"


class KeyProblem(ServiceError):
    """A run cannot encrypt as configured (an unknown or retired key): it fails before dumping."""


class KeyUnavailable(ServiceError):
    """This host cannot decrypt a backup: no identity for any key it was encrypted to, or one
    that does not resolve or belongs to another key. Nothing was touched."""


@dataclass(frozen=True)
class Encryption:
    """What one run encrypts to: its key and the escrow keys."""

    key: EncryptionKey
    escrow: tuple[EncryptionKey, ...] = ()

    @property
    def recipients(self) -> list[str]:
        return [self.key.recipient, *(key.recipient for key in self.escrow)]

    def describe(self) -> str:
        text = f"age, to key {self.key.name} (id {self.key.fingerprint})"
        if self.escrow:
            text += "; escrow: " + ", ".join(key.name for key in self.escrow)
        return text


def encryption_for(target: Target, schedule: ScheduleInfo | None = None) -> Encryption | None:
    """The keys a run of ``target`` (for ``schedule``) encrypts to, or None when unencrypted.
    Raises :class:`KeyProblem` naming the key and the fix when one is unknown or retired."""
    name = (schedule.encryption if schedule is not None else "") or target.encryption
    escrow_names = [*target.escrow, *(schedule.escrow if schedule is not None else ())]
    if not name:
        if escrow_names:
            raise KeyProblem(
                f"target {target.name} lists escrow keys but no encryption key; set "
                f"targets.{target.name}.encryption"
            )
        return None
    names = list(dict.fromkeys([name, *escrow_names]))
    rows = {key.name: key for key in EncryptionKey.objects.filter(name__in=names)}
    for wanted in names:
        key = rows.get(wanted)
        role = "encryption key" if wanted == name else "escrow key"
        if key is None:
            raise KeyProblem(
                f"target {target.name}: its {role} {wanted!r} is not in the key catalog; add it "
                f"([keys.{wanted}] in the configuration file, or backup_keys generate {wanted})"
            )
        if key.is_retired:
            raise KeyProblem(
                f"target {target.name}: its {role} {wanted!r} was retired on {key.retired_at:%Y-%m-%d}; "
                f"name an active key (backup_keys rotate --target {target.name} --to NEWKEY)"
            )
    return Encryption(key=rows[name], escrow=tuple(rows[n] for n in names if n != name))


def keys_of(backup: Backup) -> list[EncryptionKey]:
    """The catalog's keys ``backup`` was encrypted to, its own key first."""
    keys = list(
        EncryptionKey.objects.filter(recipient__in=backup.encryption_recipients)
        | EncryptionKey.objects.filter(fingerprint=backup.encryption_key_id)
    )
    keys.sort(key=lambda key: key.fingerprint != backup.encryption_key_id)
    return keys


def describe_keys(backup: Backup) -> str:
    """``key prod (id 1a2b...) or escrow key offline``: what can decrypt ``backup``."""
    keys = keys_of(backup)
    own = [key for key in keys if key.fingerprint == backup.encryption_key_id]
    parts = [f"key {own[0].name} (id {own[0].fingerprint})" if own else f"key id {backup.encryption_key_id}"]
    parts += [f"escrow key {key.name}" for key in keys if key.fingerprint != backup.encryption_key_id]
    unknown = len(backup.encryption_recipients) - len(keys)
    if unknown > 0:
        parts.append(f"{unknown} recipient(s) not in this catalog")
    return " or ".join(parts)


def identity_of(key: EncryptionKey) -> str:
    """``key``'s identity (the key file's text) on this host; KeyUnavailable naming the key
    path and the fix when it has none, it does not resolve, or it is another key's."""
    where = f"keys.{key.name}.identity"
    if not key.identity:
        raise KeyUnavailable(
            f"{where}: this host has no identity for key {key.name}; set identity = "
            f'"${{file:/run/secrets/{key.name}.key}}" (its age key file) under [keys.{key.name}]'
        )
    try:
        text = secrets.resolve(key.identity, field=where)
        secrets.remember(identity_line(text))
        found = recipient_of(text)
    except (secrets.SecretError, EncryptionError) as exc:
        raise KeyUnavailable(f"{where}: {exc}") from None
    if found != key.recipient:
        raise KeyUnavailable(
            f"{where}: the file holds the identity of another key ({found}), not of {key.recipient}"
        )
    return text


def identities_for(backup: Backup) -> list[str]:
    """The identities this host has for ``backup`` (empty when it is not encrypted). Raises
    :class:`KeyUnavailable` naming the backup, its keys and the fix when there is none."""
    if backup.encryption != AGE:
        return []
    found: list[str] = []
    problems: list[str] = []
    for key in keys_of(backup):
        try:
            found.append(identity_of(key))
        except KeyUnavailable as exc:
            problems.append(str(exc))
    if found:
        return found
    hint = (
        "; ".join(problems)
        if problems
        else "register the key with its identity: backup_keys add NAME --recipient age1... "
        "--identity '${file:/run/secrets/NAME.key}'"
    )
    raise KeyUnavailable(
        f"backup {backup.pk} is encrypted to {describe_keys(backup)}, and this host cannot decrypt "
        f"it: {hint}; or run this on a host that has the key"
    )


# -- the key catalog's life cycle -------------------------------------------------------------------


def _check_new_name(name: str) -> None:
    try:
        EncryptionKey._meta.get_field("name").clean(name, None)
    except ValidationError as exc:
        raise ServiceError(f"name: {' '.join(exc.messages)}") from None
    if EncryptionKey.objects.filter(name__iexact=name).exists():
        raise ServiceError(f"a key named {name!r} exists already")


def register_key(name: str, recipient: str, identity: str = "") -> EncryptionKey:
    """Add a key to the catalog (a recipient, and where this host finds its identity)."""
    _check_new_name(name)
    try:
        parse_recipient(recipient)
    except EncryptionError as exc:
        raise ServiceError(f"recipient: {exc}") from None
    if identity and not secrets.is_reference_only(identity):
        raise ServiceError(
            "identity: write where the key file is, as ${file:/path/to/key} or ${ENV_VAR}; "
            "an identity itself is never stored"
        )
    key = EncryptionKey(name=name, recipient=recipient.strip(), identity=identity)
    key.full_clean()
    key.save()
    return key


def default_key_file(name: str) -> Path:
    return Path(settings.BACKUPSITE_HOME) / "secrets" / f"{name}.key"


def generate_key(name: str, out: Path | None = None) -> tuple[EncryptionKey, Path]:
    """A new identity written to ``out`` (0600, never overwritten) and its recipient registered
    with ``${file:out}`` as its identity. The identity goes nowhere else."""
    _check_new_name(name)
    path = (out or default_key_file(name)).absolute()
    text, recipient = generate_key_file(f"{timezone.now():%Y-%m-%dT%H:%M:%SZ}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ServiceError(
            f"{path} exists already; choose another --out (a key file is never overwritten)"
        ) from None
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    try:
        with transaction.atomic():
            key = register_key(name, recipient, f"${{file:{path}}}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return key, path


def rotate(target: Target, to: str) -> list[str]:
    """New backups of ``target`` use key ``to``; old ones keep theirs. Also moves the target's
    schedules that named the old key. Returns what changed, one line each."""
    key = EncryptionKey.objects.filter(name=to).first()
    if key is None:
        raise ServiceError(f"--to: no key named {to!r}; backup_keys status lists them")
    if key.is_retired:
        raise ServiceError(f"--to: key {to!r} is retired; name an active key")
    old = target.encryption
    if old == to:
        return []
    changed = [f"target {target.name}: {old or 'unencrypted'} -> {to}"]
    with transaction.atomic():
        target.encryption = to
        target.escrow = [name for name in target.escrow if name != to]
        target.save(update_fields=["encryption", "escrow", "updated_at"])
        if old:
            for schedule in target.schedules.filter(encryption=old):
                schedule.encryption = to
                schedule.save(update_fields=["encryption"])
                changed.append(f"schedule {schedule.name}: {old} -> {to}")
    return changed


@dataclass(frozen=True)
class KeyStatus:
    key: EncryptionKey
    live_backups: int  # successful backups not yet deleted that list it as a recipient
    own_backups: int  # of which encrypted to it as their key (not as escrow)
    used_by: tuple[str, ...]  # targets and schedules that name it
    can_decrypt: bool
    why: str  # why this host cannot decrypt with it ("" when it can)


def key_status(*, check_identities: bool = True) -> list[KeyStatus]:
    """Every key: how many live backups depend on it, who uses it, whether this host decrypts
    (only with ``check_identities``, which reads every key file: not for a web page)."""
    live = Backup.objects.filter(encryption=AGE, status=BackupStatus.SUCCESS, deleted_at__isnull=True)
    recipients: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for key_id, listed in live.values_list("encryption_key_id", "encryption_recipients"):
        own[key_id] += 1
        recipients.update(set(listed or []))
    users = _users()
    rows = []
    for key in EncryptionKey.objects.all():
        can, why = False, "not checked"
        if check_identities:
            try:
                identity_of(key)
                can, why = True, ""
            except KeyUnavailable as exc:
                can, why = False, str(exc)
        rows.append(
            KeyStatus(
                key=key,
                live_backups=max(recipients[key.recipient], own[key.fingerprint]),
                own_backups=own[key.fingerprint],
                used_by=tuple(users.get(key.name, [])),
                can_decrypt=can,
                why=why,
            )
        )
    return rows


def _users() -> dict[str, list[str]]:
    from .requests import schedule_key_users

    users: dict[str, list[str]] = {}
    for target in Target.objects.all():
        for name in dict.fromkeys([target.encryption, *target.escrow]):
            if name:
                users.setdefault(name, []).append(f"target {target.name}")
    for name, user in schedule_key_users():
        users.setdefault(name, []).append(user)
    return users


def retire(name: str) -> EncryptionKey:
    """Retire key ``name``: no new backup is encrypted to it. Refused, with the count, while
    live backups depend on it or a target or schedule still names it."""
    key = EncryptionKey.objects.filter(name=name).first()
    if key is None:
        raise ServiceError(f"no key named {name!r}; backup_keys status lists them")
    if key.is_retired:
        return key
    status = next(row for row in key_status(check_identities=False) if row.key.pk == key.pk)
    if status.live_backups:
        raise ServiceError(
            f"key {name} is still needed by {status.live_backups} live backup(s) "
            f"({status.own_backups} encrypted to it, the rest with it as escrow); retire it once "
            "retention has removed them, and keep its identity until then"
        )
    if status.used_by:
        raise ServiceError(
            f"key {name} is still named by {', '.join(status.used_by)}; rotate them to another key "
            "first (backup_keys rotate --target NAME --to NEWKEY)"
        )
    key.retired_at = timezone.now()
    key.save(update_fields=["retired_at"])
    return key
