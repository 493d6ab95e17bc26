"""Static TOML configuration: parse, validate, apply (idempotent and transactional).

Every problem is reported with the key path that holds it (``targets.app-db.port: must be
1-65535``) and nothing is changed unless the whole file is valid. Secrets stay references:
they are checked for resolvability but only ever stored as written.
"""

from __future__ import annotations

import datetime
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from backups.config.checks import Validator, suggest
from backups.config.registry import (
    ApplyReport,
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
    validate_notifier,
    validate_storage,
    validate_target,
)
from backups.models import Notifier, Storage, Target

MAX_DEPTH = 20  # levels of tables and arrays; a real file needs about 6
INTEGER_RANGE = range(-(2**63), 2**63)  # TOML's integers are 64-bit; tomllib reads any size


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
    return Config(source=source, data={section: data.get(section, {}) for section in sections})


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


def _visible(path: str) -> str:
    return path.replace("\0", "\\0")


def _value_problem(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value not in INTEGER_RANGE:
        return f"out of range: TOML integers are 64-bit (at most {INTEGER_RANGE.stop - 1})"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not nan or inf)"
    if isinstance(value, str) and "\0" in value:
        return "holds a NUL character"
    if isinstance(value, datetime.date | datetime.time):  # a datetime is a date
        return "no setting takes a date or time; quote it to make it a string"
    return None


@dataclass
class Plan:
    """Validated, normalised field values ready to write, keyed by name."""

    storages: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    known = Known(
        storages=known_storages,
        targets=known_targets,
        targets_with_config=with_config,
        notifiers=set(plan.notifiers) | set(Notifier.objects.values_list("name", flat=True)),
    )
    for section in extra_sections():
        plan.extra[section.name] = {
            name: section.validate(check, name, table, known)
            for name, table in config.data[section.name].items()
        }
    if check.errors:
        raise ConfigInvalid(check.errors)
    return plan


def apply(config: Config, *, probe: bool = True) -> ApplyReport:
    """Validate, then create or update every declared object in one transaction.

    Objects not named in the file are left alone. Applying the same file twice changes nothing.
    Registered sections are written after the core ones, in the same transaction; afterwards
    each section's ``after_apply`` runs (the schedules app syncs Celery beat).
    """
    plan = validate(config, probe=probe)
    report = ApplyReport()
    with transaction.atomic():
        storages = {
            name: upsert(Storage, name, fields, report, "storage") for name, fields in plan.storages.items()
        }
        storages.update({s.name: s for s in Storage.objects.exclude(name__in=storages)})
        targets: dict[str, Target] = {}
        for name, fields in plan.targets.items():
            target = upsert(Target, name, fields, report, "target")
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
            upsert(Notifier, name, fields, report, "notifier")
        written = Written(storages=storages, targets=targets, report=report)
        for section in extra_sections():
            for name, section_plan in plan.extra.get(section.name, {}).items():
                section.apply(name, section_plan, written)
    for section in extra_sections():
        if section.after_apply is not None:
            section.after_apply()
    return report
