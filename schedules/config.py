"""The ``[schedules.NAME]`` section of the TOML file, registered with the backups loader (which
never imports this app): each table checked, then written with its storages in the apply's
transaction; after an apply Celery beat is brought in step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backups import services as backup_services
from backups.models import BackupType
from backups.services import Declared, Known, Validator, Written, suggest

from .cron import cron_problem
from .models import BackupSchedule, VerifyMode

SCHEDULE_KEYS = {
    "target", "backup_type", "cron", "timezone", "storages", "compression", "encryption", "escrow",
    "retention", "retention_days", "notification_email", "storage_path", "include_tables",
    "exclude_tables", "include_files", "is_active", "notify", "verify", "grace_minutes",
}  # fmt: skip


@dataclass(frozen=True)
class SchedulePlan:
    fields: dict[str, Any]
    storages: list[str]


def validate_schedule(check: Validator, name: str, table: dict[str, Any], known: Known) -> SchedulePlan:
    path = f"schedules.{name}"
    targets = known.targets
    check.unknown_keys(table, SCHEDULE_KEYS, path)
    target = check.string(table, "target", path)
    if not target:
        check.error(f"{path}.target", "required: the name of a target")
    elif target not in targets:
        check.error(f"{path}.target", f"no target named {target!r}{suggest(target, targets)}")
    backup_type = check.string(table, "backup_type", path, BackupType.FULL)
    _check_type(check, path, target, backup_type, known)
    cron = check.string(table, "cron", path)
    if not cron:
        check.error(f"{path}.cron", "required: five fields 'minute hour day-of-month month day-of-week'")
    else:
        problem = cron_problem(cron)
        if problem:
            check.error(f"{path}.cron", problem)
    encryption = _encryption(check, table, path, target, known)
    escrow = check.string_list(table, "escrow", path)
    known.keys.refs(check, path, encryption, escrow, inherited=known.target_keys.get(target, ""))
    notify = check.string_list(table, "notify", path)
    fields = {
        "target": target,
        "backup_type": backup_type,
        "cron_expression": cron,
        "timezone": check.timezone(table, path),
        "compression": check.compression(table, path, "gzip"),
        "encryption": encryption,
        "escrow": escrow,
        "retention": backup_services.retention_rules(check, table, path),
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
    storages = backup_services.storage_refs(check, table, path, known.storages)
    for channel in notify:
        if channel not in known.notifiers:
            check.error(f"{path}.notify", f"no notifier named {channel!r}{suggest(channel, known.notifiers)}")
    return SchedulePlan(fields=fields, storages=storages)


def _encryption(check: Validator, table: dict[str, Any], path: str, target: str, known: Known) -> str:
    """The key the schedule's backups are encrypted to; "" for the target's. Files written before
    keys existed say ``encryption = "none"``: still read as "" while the target encrypts nothing."""
    encryption = check.string(table, "encryption", path)
    if encryption != "none":
        return encryption
    target_key = known.target_keys.get(target, "")
    if target_key:
        check.error(
            f"{path}.encryption",
            f'"none", but target {target} encrypts to key {target_key}; remove the line (the schedule '
            "uses the target's key) or name another key",
        )
    return ""


def _check_type(check: Validator, path: str, target: str, backup_type: str, known: Known) -> None:
    targets = known.targets
    if backup_type not in BackupType.values:
        check.error(f"{path}.backup_type", f"must be one of {', '.join(BackupType.values)}")
    elif backup_type == BackupType.CONFIGURATION:
        if target in targets and target not in known.targets_with_config:
            check.error(
                f"{path}.backup_type",
                f"target {target!r} lists no config_paths; add targets.{target}.config_paths "
                "(the configuration files to back up)",
            )
    elif targets.get(target) in backup_services.engine_keys() and not (
        backup_services.get_engine(targets[target]).supported_types
    ):
        check.error(
            f"{path}.target",
            f"target {target!r} is external: another tool writes its backups and Backupsite adopts "
            "them, so it cannot be scheduled here (docs/EXTERNAL.md); set its expect instead",
        )
    elif (
        targets.get(target) in backup_services.engine_keys()
        and backup_type not in backup_services.get_engine(targets[target]).supported_types
    ):
        engine = backup_services.get_engine(targets[target])
        check.error(
            f"{path}.backup_type",
            f"the {engine.key} engine makes {', '.join(engine.supported_types)} backups only"
            + ("; incremental backups are made by the files engine" if backup_type == "incremental" else ""),
        )


def _verify_mode(check: Validator, table: dict[str, Any], path: str) -> str:
    mode = check.string(table, "verify", path, "never")
    if mode not in VerifyMode.values:
        check.error(f"{path}.verify", f"must be one of {', '.join(VerifyMode.values)}, got {mode!r}")
    return mode


def apply_schedule(name: str, plan: SchedulePlan, written: Written) -> None:
    fields = {**plan.fields, "target": written.target(plan.fields["target"])}
    schedule = backup_services.upsert(
        BackupSchedule, name, written.marked(fields), written.report, "schedule"
    )
    backup_services.set_storages(
        schedule, [written.storages[s] for s in plan.storages], written.report, f"schedule {name}"
    )


def declared_schedule(plan: SchedulePlan) -> Declared:
    """The row a plan declares, for ``backup_config diff``: its target by name, as planned."""
    return Declared(fields=plan.fields, storages=plan.storages)
