"""Static TOML configuration: parse, validate, apply (idempotent and transactional).

Every problem is reported with the key path that holds it (``targets.app-db.port: must be
1-65535``) and nothing is changed unless the whole file is valid. Secrets stay references:
they are checked for resolvability but only ever stored as written.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Model

from . import secrets
from .codecs import COMPRESSIONS
from .engines import Connection, EngineError, engine_keys, get_engine
from .engines.configuration import path_problems
from .models import BackupType, Event, Notifier, Storage, Target, default_notifier_events
from .notifiers import NOTIFIER_KINDS, NotifierError, build_notifier, notifier_class
from .retention import Policy, PolicyError
from .storages import STORAGE_KINDS, StorageError, build_storage, storage_class

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
SECTIONS = ("storages", "targets", "schedules", "notifiers")
SECRET_OPTION_WORDS = ("password", "secret", "token", "key", "passphrase", "credentials")

STORAGE_KEYS = {"kind", "prefix", "required"}  # plus the options of the storage's kind
NOTIFIER_KEYS = {"kind", "events", "default", "is_active"}  # plus the options of the notifier's kind
TARGET_KEYS = {
    "engine", "host", "port", "database", "user", "password", "options", "include_tables",
    "exclude_tables", "paths", "timezone", "is_active", "storages", "compression", "retention",
    "skip_unchanged", "sandbox", "config_paths",
}  # fmt: skip
SCHEDULE_KEYS = {
    "target", "backup_type", "cron", "timezone", "storages", "compression", "encryption", "retention",
    "retention_days", "notification_email", "storage_path", "include_tables", "exclude_tables",
    "include_files", "is_active", "notify", "verify", "grace_minutes",
}  # fmt: skip
VERIFY_MODES = ("after-backup", "daily", "never")  # schedules.models.VerifyMode's values


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
                f"{key}: unknown section{_suggest(key, SECTIONS)}; sections are {', '.join(SECTIONS)}"
            )
        elif not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            errors.append(f"{key}: must be tables written [{key}.NAME]")
    if errors:
        raise ConfigInvalid(errors)
    return Config(source=source, data={section: data.get(section, {}) for section in SECTIONS})


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Validator:
    def __init__(self, config: Config, probe: bool) -> None:
        self.config, self.probe = config, probe
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    # typed getters: each reports a wrong type under its key path and returns a safe default
    def string(self, table: dict[str, Any], key: str, path: str, default: str = "") -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            self.error(f"{path}.{key}", f"must be a string, got {type(value).__name__}")
            return default
        return value

    def string_list(self, table: dict[str, Any], key: str, path: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.error(f"{path}.{key}", "must be a list of strings")
            return []
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            self.error(f"{path}.{key}", f"lists {', '.join(duplicates)} more than once")
        return list(value)

    def boolean(self, table: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.error(f"{path}.{key}", "must be true or false")
            return default
        return value

    def whole_number(self, table: dict[str, Any], key: str, path: str, low: int, high: int) -> int | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(f"{path}.{key}", f"must be {low}-{high}")
            return None
        return value

    def unknown_keys(self, table: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in table:
            if key not in allowed:
                self.error(f"{path}.{key}", f"unknown key{_suggest(key, allowed)}")

    def names(self, section: str) -> None:
        seen: dict[str, str] = {}
        for name in self.config.data[section]:
            if not NAME_PATTERN.match(name):
                self.error(
                    f"{section}.{name}",
                    "invalid name: use letters, digits, '-' and '_' only (no '/', '..' or spaces), at most 100",
                )
            folded = name.lower()
            if folded in seen:
                self.error(f"{section}.{name}", f"duplicate name: {seen[folded]!r} differs only in case")
            seen[folded] = name

    def reference(self, value: str, path: str, must_be_reference: bool) -> None:
        if must_be_reference and not secrets.is_reference_only(value):
            self.error(path, "write secrets as ${ENV_VAR} or ${file:/path}; plaintext secrets are refused")
            return
        # Whether the reference resolves *here* is a fact about this host: a probe.
        problem = secrets.check_resolvable(value) if self.probe else None
        if problem:
            self.error(path, problem)

    def path_value(self, value: str) -> str:
        expanded = os.path.expanduser(value)
        return str((self.config.base_dir / expanded).resolve()) if not os.path.isabs(expanded) else expanded

    def timezone(self, table: dict[str, Any], path: str) -> str:
        name = self.string(table, "timezone", path, "UTC")
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            self.error(f"{path}.timezone", f"unknown time zone {name!r} (e.g. 'UTC', 'Europe/Berlin')")
        return name

    def compression(self, table: dict[str, Any], path: str, default: str) -> str:
        value = self.string(table, "compression", path, default)
        if value not in COMPRESSIONS:
            self.error(f"{path}.compression", f"must be one of {', '.join(COMPRESSIONS)}")
        return value


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
    check = _Validator(config, probe)
    for section in SECTIONS:
        check.names(section)
    plan = Plan()
    for name, table in config.data["storages"].items():
        plan.storages[name] = _validate_storage(check, name, table)
    known_storages = set(plan.storages) | set(Storage.objects.values_list("name", flat=True))
    for name, table in config.data["targets"].items():
        plan.targets[name] = _validate_target(check, name, table)
        plan.target_storages[name] = _storage_refs(check, table, f"targets.{name}", known_storages)
    known_targets = {
        **{t.name: t.engine for t in Target.objects.all()},
        **{n: t.get("engine", "") for n, t in plan.targets.items()},
    }
    with_config = {
        *Target.objects.exclude(config_paths=[]).values_list("name", flat=True),
        *(n for n, t in plan.targets.items() if t.get("config_paths")),
    } - {n for n, t in plan.targets.items() if not t.get("config_paths")}
    for name, table in config.data["targets"].items():
        sandbox = _sandbox_ref(check, name, table, known_targets)
        if sandbox:
            plan.target_sandboxes[name] = sandbox
    for name, table in config.data["notifiers"].items():
        plan.notifiers[name] = _validate_notifier(check, name, table)
    known_notifiers = set(plan.notifiers) | set(Notifier.objects.values_list("name", flat=True))
    for name, table in config.data["schedules"].items():
        plan.schedules[name] = _validate_schedule(check, name, table, known_targets, with_config)
        plan.schedule_storages[name] = _storage_refs(check, table, f"schedules.{name}", known_storages)
        for channel in plan.schedules[name]["notify_channels"]:
            if channel not in known_notifiers:
                check.error(
                    f"schedules.{name}.notify",
                    f"no notifier named {channel!r}{_suggest(channel, known_notifiers)}",
                )
    if check.errors:
        raise ConfigInvalid(check.errors)
    return plan


def _sandbox_ref(check: _Validator, name: str, table: dict[str, Any], known_targets: dict[str, str]) -> str:
    path = f"targets.{name}.sandbox"
    sandbox = check.string(table, "sandbox", f"targets.{name}")
    if not sandbox:
        return ""
    engine_key = known_targets.get(name, "")
    if sandbox not in known_targets:
        check.error(path, f"no target named {sandbox!r}{_suggest(sandbox, known_targets)}")
    elif sandbox == name:
        check.error(
            path, "a target cannot be its own sandbox: scratch restores need a separate server or user"
        )
    elif known_targets[sandbox] != engine_key:
        check.error(
            path,
            f"target {sandbox!r} uses the {known_targets[sandbox]} engine; the sandbox must be {engine_key}",
        )
    elif engine_key in engine_keys() and not get_engine(engine_key).has_scratch_databases:
        check.error(path, f"the {engine_key} engine has no scratch databases; remove the sandbox")
    return sandbox


def _storage_refs(check: _Validator, table: dict[str, Any], path: str, known: set[str]) -> list[str]:
    names = check.string_list(table, "storages", path)
    for name in names:
        if name not in known:
            check.error(f"{path}.storages", f"no storage named {name!r}{_suggest(name, known)}")
    return names


def _validate_storage(check: _Validator, name: str, table: dict[str, Any]) -> dict[str, Any]:
    """A ``[storages.NAME]`` table: ``kind``, ``prefix``, ``required`` and the kind's options."""
    path = f"storages.{name}"
    kind, cls = _plugin_class(check, table, path, "storage", STORAGE_KINDS, storage_class)
    options = _plugin_options(check, table, path, cls, STORAGE_KEYS) if cls is not None else {}
    prefix = check.string(table, "prefix", path)
    if ".." in prefix.split("/"):
        check.error(f"{path}.prefix", "must not contain '..'")
    required = check.boolean(table, "required", path, True)
    fields = {"kind": kind, "options": options, "prefix": prefix.strip("/"), "required": required}
    if check.probe and cls is not None and not check.errors:
        try:
            with build_storage(name, kind, secrets.resolve_values(options), prefix.strip("/")) as storage:
                storage.check_writable()
        except (StorageError, secrets.SecretError) as exc:
            check.error(path, str(exc).removeprefix(f"{name}: "))
    return fields


def _plugin_class(
    check: _Validator,
    table: dict[str, Any],
    path: str,
    family: str,
    kinds: Sequence[str],
    load: Callable[[str], Any],
) -> tuple[str, Any]:
    """A storage or notifier table's ``kind`` and its class (None, with the error reported,
    when it is missing, unknown or cannot be loaded)."""
    kind = check.string(table, "kind", path)
    if not kind:
        check.error(f"{path}.kind", f"required: one of {', '.join(kinds)}")
    elif kind not in kinds:
        check.error(
            f"{path}.kind",
            f"unknown {family} kind {kind!r}{_suggest(kind, kinds)}; use one of {', '.join(kinds)}",
        )
    else:
        try:
            return kind, load(kind)
        except (StorageError, NotifierError, ImportError) as exc:
            check.error(f"{path}.kind", f"{family} kind {kind!r} cannot be loaded: {exc}")
    return kind, None


def _plugin_options(
    check: _Validator, table: dict[str, Any], path: str, cls: Any, own_keys: set[str]
) -> dict[str, Any]:
    """The options of a storage or notifier table, checked against its kind's ``OPTIONS``:
    secrets only as references, paths made absolute, every problem reported with its key."""
    check.unknown_keys(table, own_keys | set(cls.OPTIONS), path)
    options: dict[str, Any] = {}
    for key, spec in cls.OPTIONS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, str) and (spec.secret or secrets.references(value)):
            check.reference(value, f"{path}.{key}", must_be_reference=spec.secret)
        elif isinstance(value, str) and spec.path and value:
            value = check.path_value(value)
        options[key] = value
    for key, message in cls.validate_options(options):
        check.error(f"{path}.{key}", message)
    return options


def _validate_notifier(check: _Validator, name: str, table: dict[str, Any]) -> dict[str, Any]:
    """A ``[notifiers.NAME]`` table: ``kind``, ``events``, ``default``, ``is_active`` and the
    kind's options (secrets, webhook URLs among them, only as references)."""
    path = f"notifiers.{name}"
    kind, cls = _plugin_class(check, table, path, "notifier", NOTIFIER_KINDS, notifier_class)
    options = _plugin_options(check, table, path, cls, NOTIFIER_KEYS) if cls is not None else {}
    events = check.string_list(table, "events", path) if "events" in table else default_notifier_events()
    for event in events:
        if event not in Event.values:
            check.error(
                f"{path}.events",
                f"unknown event {event!r}{_suggest(event, Event.values)}; events are {', '.join(Event.values)}",
            )
    fields = {
        "kind": kind,
        "options": options,
        "events": events,
        "is_default": check.boolean(table, "default", path, False),
        "is_active": check.boolean(table, "is_active", path, True),
    }
    if check.probe and cls is not None and not check.errors:
        try:
            build_notifier(name, kind, secrets.resolve_values(options)).check()
        except (NotifierError, secrets.SecretError) as exc:
            check.error(path, str(exc).removeprefix(f"{name}: "))
    return fields


def _validate_target(check: _Validator, name: str, table: dict[str, Any]) -> dict[str, Any]:
    path = f"targets.{name}"
    check.unknown_keys(table, TARGET_KEYS, path)
    engine_key = check.string(table, "engine", path)
    available = engine_keys()
    if not engine_key:
        check.error(f"{path}.engine", f"required: one of {', '.join(available)}")
    elif engine_key not in available:
        check.error(
            f"{path}.engine",
            f"unknown engine {engine_key!r}{_suggest(engine_key, available)}; available: {', '.join(available)}",
        )
    options = table.get("options", {})
    if not isinstance(options, dict):
        check.error(f"{path}.options", "must be a table")
        options = {}
    database = check.string(table, "database", path)
    if engine_key == "sqlite" and database:
        database = check.path_value(database)
    fields: dict[str, Any] = {
        "engine": engine_key,
        "host": check.string(table, "host", path),
        "port": check.whole_number(table, "port", path, 1, 65535),
        "database": database,
        "user": check.string(table, "user", path),
        "password": check.string(table, "password", path),
        "options": options,
        "include_tables": check.string_list(table, "include_tables", path),
        "exclude_tables": check.string_list(table, "exclude_tables", path),
        "paths": [check.path_value(p) for p in check.string_list(table, "paths", path)],
        "config_paths": _config_paths(check, table, path),
        "timezone": check.timezone(table, path),
        "compression": check.compression(table, path, "gzip"),
        "retention": _validate_retention(check, table, path),
        "is_active": check.boolean(table, "is_active", path, True),
        "skip_unchanged": check.boolean(table, "skip_unchanged", path, False),
    }
    if fields["password"]:
        check.reference(fields["password"], f"{path}.password", must_be_reference=True)
    for key, value in options.items():
        if isinstance(value, str) and secrets.references(value):
            check.reference(value, f"{path}.options.{key}", any(word in key for word in SECRET_OPTION_WORDS))
    if engine_key in available:
        _check_engine(check, engine_key, name, fields, path)
    return fields


def _config_paths(check: _Validator, table: dict[str, Any], path: str) -> list[str]:
    paths = [check.path_value(p) for p in check.string_list(table, "config_paths", path)]
    for message in path_problems(paths):
        check.error(f"{path}.config_paths", message)
    if check.probe and table.get("is_active", True):
        for raw in paths:
            if not os.path.lexists(raw):
                check.error(f"{path}.config_paths", f"{raw} does not exist on this host")
    return paths


def _check_engine(check: _Validator, engine_key: str, name: str, fields: dict[str, Any], path: str) -> None:
    engine = get_engine(engine_key)
    before = len(check.errors)
    try:
        password = secrets.resolve(fields["password"])
        options = secrets.resolve_values(fields["options"])
    except secrets.SecretError:
        password, options = "", fields["options"]  # already reported with its key path; no probe
        before = -1
    connection = Connection(
        name=name,
        engine=engine_key,
        host=fields["host"],
        port=fields["port"],
        database=fields["database"],
        user=fields["user"],
        password=password,
        options=options,
        include_tables=tuple(fields["include_tables"]),
        exclude_tables=tuple(fields["exclude_tables"]),
        paths=tuple(fields["paths"]),
    )
    for key, message in engine.validate(connection):
        check.error(f"{path}.{key}", message)
    if check.probe and len(check.errors) == before and fields["is_active"]:
        try:
            engine.probe(connection)
        except EngineError as exc:
            where = {"files": f"{path}.paths", "sqlite": f"{path}.database"}.get(engine_key, path)
            check.error(where, str(exc))


def _validate_retention(check: _Validator, table: dict[str, Any], path: str) -> dict[str, Any]:
    retention = table.get("retention", {})
    try:
        Policy.from_mapping(retention)  # the timezone is checked on its own key
    except PolicyError as exc:
        where = f"{path}.retention" if exc.field == "retention" else f"{path}.retention.{exc.field}"
        check.error(where, exc.message)
        return {}
    return dict(retention)


def _validate_schedule(
    check: _Validator, name: str, table: dict[str, Any], targets: dict[str, str], with_config: set[str]
) -> dict[str, Any]:
    path = f"schedules.{name}"
    check.unknown_keys(table, SCHEDULE_KEYS, path)
    target = check.string(table, "target", path)
    if not target:
        check.error(f"{path}.target", "required: the name of a target")
    elif target not in targets:
        check.error(f"{path}.target", f"no target named {target!r}{_suggest(target, targets)}")
    backup_type = check.string(table, "backup_type", path, BackupType.FULL)
    if backup_type not in BackupType.values:
        check.error(f"{path}.backup_type", f"must be one of {', '.join(BackupType.values)}")
    elif backup_type == BackupType.CONFIGURATION:
        if target in targets and target not in with_config:
            check.error(
                f"{path}.backup_type",
                f"target {target!r} lists no config_paths; add targets.{target}.config_paths "
                "(the configuration files to back up)",
            )
    elif (
        targets.get(target) in engine_keys()
        and backup_type not in get_engine(targets[target]).supported_types
    ):
        engine = get_engine(targets[target])
        check.error(
            f"{path}.backup_type",
            f"the {engine.key} engine makes {', '.join(engine.supported_types)} backups only"
            + ("; incremental backups are made by the files engine" if backup_type == "incremental" else ""),
        )
    from .cron import cron_problem

    cron = check.string(table, "cron", path)
    if not cron:
        check.error(f"{path}.cron", "required: five fields 'minute hour day-of-month month day-of-week'")
    else:
        problem = cron_problem(cron)
        if problem:
            check.error(f"{path}.cron", problem)
    encryption = check.string(table, "encryption", path, "none")
    if encryption != "none":
        check.error(f"{path}.encryption", "encryption is not available in this version; use 'none'")
    notify = check.string_list(table, "notify", path)
    return {
        "target": target,
        "backup_type": backup_type,
        "cron_expression": cron,
        "timezone": check.timezone(table, path),
        "compression": check.compression(table, path, "gzip"),
        "encryption": encryption,
        "retention": _validate_retention(check, table, path),
        "retention_days": check.whole_number(table, "retention_days", path, 1, 100000),
        "notification_email": check.string(table, "notification_email", path),
        "storage_path": check.string(table, "storage_path", path).strip("/"),
        "include_tables": check.string_list(table, "include_tables", path),
        "exclude_tables": check.string_list(table, "exclude_tables", path),
        "include_files": check.string_list(table, "include_files", path),
        "notify_channels": notify,
        "is_active": check.boolean(table, "is_active", path, True),
        "verify": _verify_mode(check, table, path),
        "grace_minutes": check.whole_number(table, "grace_minutes", path, 1, 525600),
    }


def _verify_mode(check: _Validator, table: dict[str, Any], path: str) -> str:
    mode = check.string(table, "verify", path, "never")
    if mode not in VERIFY_MODES:
        check.error(f"{path}.verify", f"must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    return mode


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
