"""Static TOML configuration: parse, validate, apply (idempotent and transactional).

Every problem is reported with the key path that holds it (``targets.app-db.port: must be
1-65535``) and nothing is changed unless the whole file is valid. Secrets stay references:
they are checked for resolvability but only ever stored as written; an age identity written
into the file itself is refused wherever it is, and never repeated in a message.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from backups.config.checks import Validator, suggest
from backups.config.diff import ConfigDiff, compare, removed_rows
from backups.config.registry import (
    ApplyReport,
    Keys,
    Known,
    Written,
    extra_sections,
    section_names,
    set_storages,
    upsert,
)
from backups.config.sections import (
    sandbox_ref,
    storage_refs,
    validate_key,
    validate_notifier,
    validate_storage,
    validate_target,
)
from backups.models import AppliedConfig, EncryptionKey, Notifier, Storage, Target
from backups.models.drill_settings import drill_problems

MAX_DEPTH = 20  # levels of tables and arrays; a real file needs about 6
INTEGER_RANGE = range(-(2**63), 2**63)  # TOML's integers are 64-bit; tomllib reads any size
IDENTITY_MARK = "AGE-SECRET-KEY-"  # how every age identity starts (Bech32: either case)
IDENTITY_IN_FILE = (
    "holds an age identity (AGE-SECRET-KEY-...), a secret that is never written here: give its key "
    'file as identity = "${file:/run/secrets/KEY.key}" under [keys.NAME]'
)


class ConfigInvalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Config:
    source: Path  # the file itself (symbolic links resolved): relative paths in it start here
    data: dict[str, dict[str, dict[str, Any]]]
    digest: str = ""  # SHA-256 of the bytes read, as AppliedConfig records it
    # The file as named, made absolute but with symbolic links kept: what ``managed_by`` and
    # AppliedConfig record. A Kubernetes ConfigMap's file is a link whose target changes with
    # every update; the name the operator gave stays the same.
    path: str = ""

    @property
    def base_dir(self) -> Path:
        return self.source.parent


def load(path: str | Path) -> Config:
    """Read and parse a TOML file; raise :class:`ConfigInvalid` on unreadable or invalid TOML."""
    source = Path(path).resolve()
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigInvalid([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigInvalid([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigInvalid([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid([f"{path}: invalid TOML: {exc}"]) from None
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        raise ConfigInvalid([f"{path}: too deeply nested (at most {MAX_DEPTH} levels)"]) from None
    except ValueError:  # int() refuses a number of thousands of digits
        raise ConfigInvalid([f"{path}: invalid TOML: a number of thousands of digits"]) from None
    errors = shape_problems(data)
    if errors:
        raise ConfigInvalid(errors)
    sections = section_names()
    for key, value in data.items():
        if key not in sections:
            errors.append(
                f"{key}: unknown section{suggest(key, sections)}; sections are {', '.join(sections)}"
            )
        elif not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            errors.append(f"{key}: must be tables written [{key}.NAME]")
    if errors:
        raise ConfigInvalid(errors)
    return Config(
        source=source,
        data={section: data.get(section, {}) for section in sections},
        digest=hashlib.sha256(raw).hexdigest(),
        path=os.path.abspath(path),
    )


def shape_problems(data: dict[str, Any]) -> list[str]:
    """Values no key may hold, each under its key path: nesting deeper than MAX_DEPTH (which
    the checks, the JSON columns and the engines walk recursively), and what no setting takes
    and a JSON column or a database cannot hold. Walked without recursion, in the file's order."""
    problems: list[str] = []
    pending: list[tuple[str, int, Any]] = [("", 0, data)]
    while pending:
        where, depth, value = pending.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            problems.append(f"{where}: too deeply nested (at most {MAX_DEPTH} levels)")
        elif isinstance(value, dict):
            if any(_holds_identity(key) for key in value):  # its path would repeat it: not walked
                problems.append(f"{where or 'a section name'}: a key name {IDENTITY_IN_FILE}")
            value = {key: item for key, item in value.items() if not _holds_identity(key)}
            paths = {key: f"{where}.{key}" if where else key for key in value}
            problems += [
                f"{_visible(paths[key])}: a key holds a NUL character" for key in value if "\0" in key
            ]
            pending += [(paths[key], depth + 1, item) for key, item in reversed(value.items())]
        elif isinstance(value, list):
            pending += [
                (f"{where}[{index}]", depth + 1, item) for index, item in reversed(list(enumerate(value)))
            ]
        elif (problem := _value_problem(value)) is not None:
            problems.append(f"{where}: {problem}")
    return problems


def _holds_identity(text: str) -> bool:
    return IDENTITY_MARK in text.upper()


def _visible(path: str) -> str:
    return path.replace("\0", "\\0")


def _value_problem(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value not in INTEGER_RANGE:
        return f"out of range: TOML integers are 64-bit (at most {INTEGER_RANGE.stop - 1})"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not nan or inf)"
    if isinstance(value, str) and "\0" in value:
        return "holds a NUL character"
    if isinstance(value, str) and _holds_identity(value):
        return IDENTITY_IN_FILE
    if isinstance(value, datetime.date | datetime.time):  # a datetime is a date
        return "no setting takes a date or time; quote it to make it a string"
    return None


@dataclass
class Plan:
    """Validated, normalised field values ready to write, keyed by name."""

    storages: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_storages: dict[str, list[str]] = field(default_factory=dict)
    target_sandboxes: dict[str, str] = field(default_factory=dict)
    notifiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # registered section -> name -> plan


def validate(config: Config, *, probe: bool = True) -> Plan:
    """Check everything; raise :class:`ConfigInvalid` listing every problem, or return the plan.

    With ``probe``, also check the environment: sources readable, storages writable.
    """
    check = Validator(config, probe)
    for name in config.data:
        check.names(name)
    plan = Plan()
    for name, table in config.data["storages"].items():
        plan.storages[name] = validate_storage(check, name, table)
    known_storages = set(plan.storages) | set(Storage.objects.values_list("name", flat=True))
    keys = _validate_keys(check, config, plan)
    for name, table in config.data["targets"].items():
        plan.targets[name] = validate_target(check, name, table)
        plan.target_storages[name] = storage_refs(check, table, f"targets.{name}", known_storages)
        keys.refs(check, f"targets.{name}", plan.targets[name]["encryption"], plan.targets[name]["escrow"])
    known_targets = {
        **{t.name: t.engine for t in Target.objects.all()},
        **{n: t.get("engine", "") for n, t in plan.targets.items()},
    }
    with_config = {
        *Target.objects.exclude(config_paths=[]).values_list("name", flat=True),
        *(n for n, t in plan.targets.items() if t.get("config_paths")),
    } - {n for n, t in plan.targets.items() if not t.get("config_paths")}
    for name, table in config.data["targets"].items():
        sandbox = sandbox_ref(check, name, table, known_targets)
        if sandbox:
            plan.target_sandboxes[name] = sandbox
        drilled = plan.targets[name]
        for key, message in drill_problems(
            drilled["drill"],
            drilled["drill_checks"],
            drilled["drill_from_last"],
            drilled["engine"],
            bool(sandbox),
        ):
            check.error(f"targets.{name}.{key}", message)
    for name, table in config.data["notifiers"].items():
        plan.notifiers[name] = validate_notifier(check, name, table)
    known = Known(
        storages=known_storages,
        targets=known_targets,
        targets_with_config=with_config,
        notifiers=set(plan.notifiers) | set(Notifier.objects.values_list("name", flat=True)),
        keys=keys,
        target_keys={
            **dict(Target.objects.values_list("name", "encryption")),
            **{n: t["encryption"] for n, t in plan.targets.items()},
        },
    )
    for section in extra_sections():
        plan.extra[section.name] = {
            name: section.validate(check, name, table, known)
            for name, table in config.data[section.name].items()
        }
    if settings.BACKUPSITE_RESTORES_HERE:
        _identities_needed(check, keys, plan)
    if check.errors:
        raise ConfigInvalid(check.errors)
    return plan


def _validate_keys(check: Validator, config: Config, plan: Plan) -> Keys:
    """The ``[keys.*]`` tables into ``plan.keys``; the keys tables may name."""
    catalog = {key.name: key for key in EncryptionKey.objects.all()}
    owners: dict[str, str] = {}
    for name, table in config.data["keys"].items():
        plan.keys[name] = validate_key(check, name, table, catalog)
        recipient = plan.keys[name]["recipient"]
        owner = owners.setdefault(recipient, name) if recipient else name
        if owner != name:
            check.error(f"keys.{name}.recipient", f"the recipient of keys.{owner} too; a key has one name")
    return Keys(
        identities={
            **{name: key.identity for name, key in catalog.items()},
            **{name: key["identity"] for name, key in plan.keys.items()},
        },
        retired={name for name, key in catalog.items() if key.is_retired},
    )


def _identities_needed(check: Validator, keys: Keys, plan: Plan) -> None:
    """On a host that restores and deep-verifies, each key a target or schedule encrypts to
    needs its identity here (escrow keys do not: they are kept elsewhere). The catalog's targets
    count for the keys this file declares, which could take their identity away."""
    users = {name: list(tables) for name, tables in keys.encrypting.items()}
    others = Target.objects.exclude(name__in=list(plan.targets)).filter(encryption__in=list(plan.keys))
    for target, key in others.values_list("name", "encryption"):
        users.setdefault(key, []).append(f"target {target} (in the catalog)")
    for name, tables in users.items():
        if name in keys.identities and name not in keys.retired and not keys.identities[name]:
            check.error(
                f"keys.{name}.identity",
                f"required: this host restores (BACKUPSITE_RESTORES_HERE) and {', '.join(tables)} "
                f"encrypt{'s' if len(tables) == 1 else ''} to it; give its key file as ${{file:...}}, "
                "or set BACKUPSITE_RESTORES_HERE=false on a backup-only host",
            )


def apply(config: Config, *, probe: bool = True, applied_by: str = "", as_source: bool = True) -> ApplyReport:
    """Validate, then create or update every declared object in one transaction.

    The file is the source of truth for what it defines (``as_source``, the default): each row
    it defines is marked ``managed_by`` its absolute path (read-only in the admin), and rows
    marked so that it no longer defines are deactivated or released (:mod:`backups.config.diff`;
    never deleted, their backups untouched). In the same transaction an :class:`AppliedConfig`
    row records the file's path and digest, ``applied_by`` and when, if anything changed or the
    newest such row names another version of the file (so applying the same file twice changes
    nothing and records nothing). ``as_source=False`` (the demo): rows are written, not marked,
    and nothing else is touched or recorded. Other objects are left alone.
    Registered sections are written after the core ones, in the same transaction; afterwards
    each section's ``after_apply`` runs (the schedules app syncs Celery beat).
    """
    plan = validate(config, probe=probe)
    report = ApplyReport()
    path = config.path if as_source else None
    with transaction.atomic():
        written = Written(storages={}, targets={}, report=report, managed_by=path)
        for name, fields in plan.keys.items():  # before the targets, which name them
            upsert(EncryptionKey, name, written.marked(fields), report, "key")
        storages = {
            name: upsert(Storage, name, written.marked(fields), report, "storage")
            for name, fields in plan.storages.items()
        }
        storages.update({s.name: s for s in Storage.objects.exclude(name__in=storages)})
        targets: dict[str, Target] = {}
        for name, fields in plan.targets.items():
            target = upsert(Target, name, written.marked(fields), report, "target")
            set_storages(target, [storages[s] for s in plan.target_storages[name]], report, f"target {name}")
            targets[name] = target
        for name, target in targets.items():
            sandbox_name = plan.target_sandboxes.get(name)
            sandbox = (
                (targets.get(sandbox_name) or Target.objects.get(name=sandbox_name)) if sandbox_name else None
            )
            if target.sandbox_id != (sandbox.pk if sandbox else None):
                target.sandbox = sandbox
                target.save(update_fields=["sandbox"])
                if f"target {name}" not in report.created:
                    report.updated.append(f"target {name} (sandbox)")
        for name, fields in plan.notifiers.items():
            upsert(Notifier, name, written.marked(fields), report, "notifier")
        written.storages, written.targets = storages, targets
        for section in extra_sections():
            for name, section_plan in plan.extra.get(section.name, {}).items():
                section.apply(name, section_plan, written)
        if path is not None:
            for removed in removed_rows(plan, path):
                report.deactivated.append(removed.carry_out())
            _record(config, applied_by, report)
    for section in extra_sections():
        if section.after_apply is not None:
            section.after_apply()
    return report


def diff(config: Config) -> ConfigDiff:
    """What :func:`apply` of ``config`` would change now (validated without probes: raises
    :class:`ConfigInvalid` as :func:`validate` does). Reads the catalog only."""
    return compare(config, validate(config, probe=False))


def _record(config: Config, applied_by: str, report: ApplyReport) -> None:
    """An AppliedConfig row when the apply changed something or the newest row names another
    file or version: what ``backup_config wait`` (the workers and beat) waits for."""
    newest = AppliedConfig.objects.order_by("-applied_at", "-id").first()
    if report.changed or newest is None or (newest.path, newest.digest) != (config.path, config.digest):
        AppliedConfig.objects.create(path=config.path, digest=config.digest, applied_by=applied_by[:150])
