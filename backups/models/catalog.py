"""What to back up (Target) and where to (Storage)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower

from backups import secrets
from backups.engines import engine_choices
from backups.queues import queue_problem
from backups.retention.policy import Policy, PolicyError
from backups.storages import STORAGE_KINDS
from backups.storages.base import prefix_problem
from backups.streaming.codecs import COMPRESSIONS


def storage_kind_choices() -> list[tuple[str, str]]:
    return [(kind, kind.upper() if len(kind) <= 3 else kind.capitalize()) for kind in STORAGE_KINDS]


def validate_secret_reference(value: str) -> None:
    if not secrets.is_reference_only(value):
        raise ValidationError(
            "Write secrets as ${ENV_VAR} or ${file:/path/to/file}; plaintext secrets are never stored."
        )


TAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def tag_problem(tags: Any) -> str:
    """Why ``tags`` is not a list of tags (lower-case words: letters, digits, ``_.-``), or ""."""
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return 'a list of tags, e.g. ["shop", "production"]'
    bad = [tag for tag in tags if not TAG.fullmatch(tag)]
    if bad:
        return f"{bad[0]!r} is not a tag: use lower-case letters, digits, '_', '.' or '-' (at most 63)"
    return ""


COMPRESSION_CHOICES = [(name, name) for name in COMPRESSIONS]


def encryption_problems(encryption: Any, escrow: Any, inherited: str = "") -> dict[str, str]:
    """Why a target's or schedule's ``encryption`` key name and ``escrow`` key names cannot be
    used for new backups, by field: unknown or retired keys. ``inherited``: the target's key,
    for a schedule that names none."""
    from backups.models.keys import EncryptionKey

    problems: dict[str, str] = {}
    if not isinstance(escrow, list) or not all(isinstance(name, str) for name in escrow):
        return {"escrow": 'a list of key names, e.g. ["offline"]'}
    names = [name for name in [encryption, *escrow] if name]
    keys = {key.name: key for key in EncryptionKey.objects.filter(name__in=names)}
    for field, wanted in (("encryption", [encryption] if encryption else []), ("escrow", escrow)):
        for name in wanted:
            key = keys.get(name)
            if key is None:
                problems[field] = (
                    f"no encryption key named {name!r}; add it ([keys.{name}] in the configuration "
                    f"file, or backup_keys generate {name})"
                )
            elif key.is_retired:
                problems[field] = f"key {name!r} is retired; name an active key"
    if escrow and not (encryption or inherited):
        problems["escrow"] = "escrow keys need an encryption key: set encryption as well"
    return problems


class BackupType(models.TextChoices):
    FULL = "full", "Full"
    DATABASE = "database", "Database"
    FILES = "files", "Files"
    INCREMENTAL = "incremental", "Incremental"
    CONFIGURATION = "configuration", "Configuration"


def local_path_problem(path: Any) -> str:
    """Why a local storage may not keep its backups in ``path``, or "": the directory that holds
    BACKUPSITE_HOME (or is it) would list the catalog, the secret key and the broker's files as
    unknown objects in every reconcile, and a reindex would read them. A directory inside
    BACKUPSITE_HOME (``var/backups``, the demo's) is fine. The admin and the TOML check use it."""
    if not isinstance(path, str) or not path or secrets.references(path):
        return ""  # a reference is checked where it resolves; a missing path is the kind's error
    home = Path(settings.BACKUPSITE_HOME).resolve()
    where = Path(path).resolve()
    if where == home or where in home.parents:
        return (
            f"{where} {'is' if where == home else 'contains'} BACKUPSITE_HOME ({home}), where the "
            "catalog and the secret key live; use a directory of its own, e.g. /var/backups/backupsite"
        )
    return ""


def managed_by_field() -> models.CharField[str, str]:
    """Which configuration file defines the row (read-only in the admin); empty: the admin's own."""
    return models.CharField(
        max_length=500,
        blank=True,
        default="",
        editable=False,
        help_text="The configuration file that defines this (read-only in the admin while it does); "
        "empty: managed in the admin.",
    )


class Storage(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=storage_kind_choices)
    options = models.JSONField(
        default=dict, blank=True, help_text="Kind-specific settings; secrets as ${ENV_VAR} references."
    )
    prefix = models.CharField(max_length=255, blank=True, help_text="Path prefix inside the storage.")
    required = models.BooleanField(
        default=True,
        help_text="A backup succeeds only when its copy here is stored and confirmed. An optional "
        "storage that fails is retried, then noted, and the backup still succeeds.",
    )
    managed_by = managed_by_field()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="storage_name_ci_unique")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        problem = prefix_problem(self.prefix)
        if problem:
            errors["prefix"] = problem
        if self.kind == "local" and isinstance(self.options, dict):
            problem = local_path_problem(self.options.get("path"))
            if problem:
                errors["options"] = f"path: {problem}"
        if errors:
            raise ValidationError(errors)


def validate_retention(policy: Any, timezone: str) -> None:
    """Raise a ValidationError on the ``retention`` field (or ``timezone``) naming the bad rule."""
    try:
        Policy.from_mapping(policy, timezone=timezone)
    except PolicyError as exc:
        field = "timezone" if exc.field == "timezone" else "retention"
        raise ValidationError({field: str(exc) if field == "retention" else exc.message}) from None


class Target(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    engine = models.CharField(max_length=32, choices=engine_choices)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(max_length=1024, blank=True, help_text="Database name; for SQLite, its path.")
    user = models.CharField(max_length=255, blank=True)
    password = models.CharField(
        max_length=512,
        blank=True,
        validators=[validate_secret_reference],
        help_text="A reference, resolved only at run time: ${ENV_VAR} or ${file:/path}.",
    )
    options = models.JSONField(default=dict, blank=True)
    include_tables = models.JSONField(default=list, blank=True)
    exclude_tables = models.JSONField(default=list, blank=True)
    paths = models.JSONField(default=list, blank=True, help_text="Directories (files engine).")
    config_paths = models.JSONField(
        default=list,
        blank=True,
        help_text="Configuration files and directories (absolute paths) saved by backups of type "
        '"configuration", e.g. ["/etc/postgresql/15/main/postgresql.conf", "/etc/backupsite.toml"].',
    )
    timezone = models.CharField(max_length=64, default="UTC")
    compression = models.CharField(max_length=16, choices=COMPRESSION_CHOICES, default="gzip")
    retention = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"keep_daily": 7, "keep_weekly": 4, "tiers": ["1h:72h"], "retention_days": 90}; '
        "see the README's Retention section. Empty: nothing is ever deleted.",
    )
    encryption = models.CharField(
        max_length=100,
        blank=True,
        help_text="The name of the encryption key (see Encryption keys) its backups are encrypted "
        "to, in the age format; empty: backups are stored unencrypted.",
    )
    escrow = models.JSONField(
        default=list,
        blank=True,
        help_text='Further keys every backup is also encrypted to, e.g. ["offline"]: any of them '
        "can decrypt it (a key kept in a safe).",
    )
    is_active = models.BooleanField(default=True)
    tags = models.JSONField(
        default=list,
        blank=True,
        help_text='Labels that scope role grants, e.g. ["shop", "production"]: a grant such as '
        '"Restorer@shop" reaches only the targets tagged shop.',
    )
    protected = models.BooleanField(
        default=False,
        help_text="Restores into this target need a second person: one Restorer requests, another "
        "Restorer or an Administrator approves (four eyes).",
    )
    skip_unchanged = models.BooleanField(
        default=False,
        help_text="Record a run SKIPPED when the engine can tell for sure that nothing changed since "
        "the last successful backup (PostgreSQL: same WAL position).",
    )
    sandbox = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="sandbox_for",
        help_text="A server of the same engine where backup_verify --deep restores into a scratch "
        "database, compares row counts with the manifest and drops it.",
    )
    drill = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text='When to drill a restore of its backups into its sandbox, as cron (e.g. "0 4 * * 0"); '
        "empty: no scheduled drill.",
    )
    drill_checks = models.JSONField(
        default=list,
        blank=True,
        help_text="SQL assertions run against the drill's scratch copy, each must return true, e.g. "
        '["select count(*) > 0 from orders"].',
    )
    drill_from_last = models.PositiveIntegerField(
        default=1,
        help_text="Drill a random one of its last N successful backups (1: the newest).",
    )
    storages = models.ManyToManyField(Storage, related_name="targets", blank=True)
    queue = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text='The Celery queue of this target\'s runs, verifications and restores (e.g. "eu-db"), '
        "so that workers near its database do its work; empty: the default queue.",
    )
    managed_by = managed_by_field()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="target_name_ci_unique")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        validate_retention(self.retention, self.timezone)
        key_problems = encryption_problems(self.encryption, self.escrow)
        if key_problems:
            raise ValidationError(key_problems)
        problem = tag_problem(self.tags)
        if problem:
            raise ValidationError({"tags": problem})
        problem = queue_problem(self.queue) if self.queue else ""
        if problem:
            raise ValidationError({"queue": problem})
        from backups.engines.configuration import path_problems

        if not isinstance(self.config_paths, list):
            raise ValidationError({"config_paths": 'a list of absolute paths, e.g. ["/etc/my.cnf"]'})
        problems = path_problems(self.config_paths)
        if problems:
            raise ValidationError({"config_paths": problems})
        from backups.models.drill_settings import drill_problems

        drill = drill_problems(
            self.drill, self.drill_checks, self.drill_from_last, self.engine, self.sandbox_id is not None
        )
        if drill:
            raise ValidationError({field: [m for f, m in drill if f == field] for field, _ in drill})
        if self.sandbox_id is None:
            return
        if self.pk is not None and self.sandbox_id == self.pk:
            raise ValidationError(
                {"sandbox": "a target cannot be its own sandbox; pick another server or user"}
            )
        if self.sandbox is not None and self.sandbox.engine != self.engine:
            raise ValidationError(
                {
                    "sandbox": f"{self.sandbox.name} uses the {self.sandbox.engine} engine; pick a {self.engine} target"
                }
            )
