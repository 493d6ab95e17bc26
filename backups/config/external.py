"""A ``[targets.NAME]`` table with ``engine = "external"``: a storage and a folder another tool
writes backups into, which the watch adopts (``backups.watching``). Its keys are checked by the
watch's own rules (the admin's too) and each problem is reported under its key path."""

from __future__ import annotations

from typing import Any

from backups.config.checks import Validator, suggest
from backups.models import tag_problem
from backups.queues import queue_problem
from backups.watching.settings import KEYS, problems

#: The keys an external target takes; a run's keys (host, paths, compression ...) mean nothing here.
EXTERNAL_KEYS = {"engine", "storage", *KEYS, "timezone", "retention", "is_active", "tags", "queue"}


def external_target_fields(
    check: Validator, name: str, table: dict[str, Any], retention: dict[str, Any]
) -> dict[str, Any]:
    """The Target fields of an external target's table: the watch settings in ``options``,
    every connection field empty (the storage is set from ``storage`` by :func:`storage_name`);
    ``retention``: its rules, already checked."""
    path = f"targets.{name}"
    for key in table:
        if key == "storages":
            check.error(f"{path}.storages", 'an external target watches one storage: write storage = "NAME"')
        elif key not in EXTERNAL_KEYS:
            check.error(
                f"{path}.{key}",
                f'not a setting of an external target (engine = "external" is watched, not run); '
                f"it takes {', '.join(sorted(EXTERNAL_KEYS))}",
            )
    if not check.string(table, "storage", path):
        check.error(
            f"{path}.storage", 'required: the storage the other tool writes into, e.g. storage = "offsite"'
        )
    options = {key: table[key] for key in KEYS if key in table}
    for key, message in problems(options):
        check.error(f"{path}.{key}", message)
    if isinstance(options.get("prefix"), str):
        options["prefix"] = options["prefix"].strip("/")
    fields: dict[str, Any] = {
        "engine": "external",
        "host": "",
        "port": None,
        "database": "",
        "user": "",
        "password": "",
        "options": options,
        "include_tables": [],
        "exclude_tables": [],
        "paths": [],
        "config_paths": [],
        "timezone": check.timezone(table, path),
        "compression": "none",
        "retention": retention,
        "is_active": check.boolean(table, "is_active", path, True),
        "skip_unchanged": False,
        "tags": check.string_list(table, "tags", path),
        "protected": False,
        "encryption": "",
        "escrow": [],
        "queue": check.string(table, "queue", path),
        "drill": "",
        "drill_checks": [],
        "drill_from_last": 1,
    }
    problem = tag_problem(fields["tags"])
    if problem:
        check.error(f"{path}.tags", problem)
    problem = queue_problem(fields["queue"]) if fields["queue"] else ""
    if problem:
        check.error(f"{path}.queue", problem)
    return fields


def storage_name(check: Validator, table: dict[str, Any], path: str, known: set[str]) -> list[str]:
    """The one storage an external target's table names, as the target's ``storages``."""
    name = table.get("storage")
    if not isinstance(name, str) or not name:
        return []  # reported with the target's other keys
    if name not in known:
        check.error(
            f"{path}.storage", f"no storage named {name!r}{suggest(name, known)}; declare [storages.{name}]"
        )
        return []
    return [name]
