"""Static TOML configuration: parse, validate, apply (idempotent and transactional).

Every problem is reported with the key path that holds it (``targets.app-db.port: must be
1-65535``) and nothing is changed unless the whole file is valid. Secrets stay references:
they are checked for resolvability but only ever stored as written.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Model

from backups.config.checks import SECTIONS, Validator, suggest
from backups.config.sections import (
    sandbox_ref,
    storage_refs,
    validate_notifier,
    validate_schedule,
    validate_storage,
    validate_target,
)
from backups.models import Notifier, Storage, Target


class ConfigInvalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Config:
    source: Path
    data: dict[str, dict[str, dict[str, Any]]]

    @property
    def base_dir(self) -> Path:
        return self.source.parent


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


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
    errors: list[str] = []
    for key, value in data.items():
        if key not in SECTIONS:
            errors.append(
                f"{key}: unknown section{suggest(key, SECTIONS)}; sections are {', '.join(SECTIONS)}"
            )
        elif not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            errors.append(f"{key}: must be tables written [{key}.NAME]")
    if errors:
        raise ConfigInvalid(errors)
    return Config(source=source, data={section: data.get(section, {}) for section in SECTIONS})


@dataclass
class Plan:
    """Validated, normalised field values ready to write, keyed by name."""

    storages: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_storages: dict[str, list[str]] = field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule_storages: dict[str, list[str]] = field(default_factory=dict)
    target_sandboxes: dict[str, str] = field(default_factory=dict)
    notifiers: dict[str, dict[str, Any]] = field(default_factory=dict)


def validate(config: Config, *, probe: bool = True) -> Plan:
    """Check everything; raise :class:`ConfigInvalid` listing every problem, or return the plan.

    With ``probe``, also check the environment: sources readable, storages writable.
    """
    check = Validator(config, probe)
    for section in SECTIONS:
        check.names(section)
    plan = Plan()
    for name, table in config.data["storages"].items():
        plan.storages[name] = validate_storage(check, name, table)
    known_storages = set(plan.storages) | set(Storage.objects.values_list("name", flat=True))
    for name, table in config.data["targets"].items():
        plan.targets[name] = validate_target(check, name, table)
        plan.target_storages[name] = storage_refs(check, table, f"targets.{name}", known_storages)
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
    for name, table in config.data["notifiers"].items():
        plan.notifiers[name] = validate_notifier(check, name, table)
    known_notifiers = set(plan.notifiers) | set(Notifier.objects.values_list("name", flat=True))
    for name, table in config.data["schedules"].items():
        plan.schedules[name] = validate_schedule(check, name, table, known_targets, with_config)
        plan.schedule_storages[name] = storage_refs(check, table, f"schedules.{name}", known_storages)
        for channel in plan.schedules[name]["notify_channels"]:
            if channel not in known_notifiers:
                check.error(
                    f"schedules.{name}.notify",
                    f"no notifier named {channel!r}{suggest(channel, known_notifiers)}",
                )
    if check.errors:
        raise ConfigInvalid(check.errors)
    return plan


def apply(config: Config, *, probe: bool = True) -> ApplyReport:
    """Validate, then create or update every declared object in one transaction.

    Objects not named in the file are left alone. Applying the same file twice changes nothing.
    Afterwards every hook in :data:`AFTER_APPLY` runs (the schedules app syncs Celery beat).
    """
    from django.apps import apps

    BackupSchedule = apps.get_model("schedules", "BackupSchedule")
    plan = validate(config, probe=probe)
    report = ApplyReport()
    with transaction.atomic():
        storages = {
            name: _upsert(Storage, name, fields, report, "storage") for name, fields in plan.storages.items()
        }
        storages.update({s.name: s for s in Storage.objects.exclude(name__in=storages)})
        targets: dict[str, Target] = {}
        for name, fields in plan.targets.items():
            target = _upsert(Target, name, fields, report, "target")
            _set_m2m(
                target,
                "storages",
                [storages[s] for s in plan.target_storages[name]],
                report,
                f"target {name}",
            )
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
            _upsert(Notifier, name, fields, report, "notifier")
        for name, fields in plan.schedules.items():
            fields = {
                **fields,
                "target": targets.get(fields["target"]) or Target.objects.get(name=fields["target"]),
            }
            schedule = _upsert(BackupSchedule, name, fields, report, "schedule")
            _set_m2m(
                schedule,
                "storages",
                [storages[s] for s in plan.schedule_storages[name]],
                report,
                f"schedule {name}",
            )
    for hook in AFTER_APPLY:
        hook()
    return report


# Run after a successful apply; apps that project configuration elsewhere register here (the
# schedules app keeps Celery beat's tasks in step). backups never imports those apps.
AFTER_APPLY: list[Callable[[], object]] = []


def _upsert(model: type[Model], name: str, fields: dict[str, Any], report: ApplyReport, label: str) -> Any:
    obj = model._default_manager.filter(name=name).first()
    if obj is None:
        obj = model._default_manager.create(name=name, **fields)
        report.created.append(f"{label} {name}")
        return obj
    changed = [key for key, value in fields.items() if getattr(obj, key) != value]
    if changed:
        for key in changed:
            setattr(obj, key, fields[key])
        obj.save()
        report.updated.append(f"{label} {name} ({', '.join(changed)})")
    else:
        report.unchanged.append(f"{label} {name}")
    return obj


def _set_m2m(obj: Any, attribute: str, wanted: list[Any], report: ApplyReport, label: str) -> None:
    manager = getattr(obj, attribute)
    current = {item.pk for item in manager.all()}
    if current != {item.pk for item in wanted}:
        manager.set(wanted)
        entry = f"{label} (storages)"
        if not any(line.startswith(label) for line in report.created + report.updated):
            report.unchanged = [line for line in report.unchanged if line != label]
            report.updated.append(entry)
