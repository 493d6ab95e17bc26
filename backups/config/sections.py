"""The TOML loader's checks of whole tables (a storage, notifier, key or target), with
the engines', storages' and notifiers' own validation and, when probing, their environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db.models import Q, TextField
from django.db.models.functions import Cast

from backups import secrets
from backups.config.checks import Validator, secret_problems, suggest
from backups.config.external import external_target_fields, storage_name
from backups.engines import Connection, EngineError, engine_keys, get_engine
from backups.engines.configuration import path_problems
from backups.keys import KeyUnavailable, identity_of
from backups.models import Backup, EncryptionKey, Event, default_notifier_events, tag_problem
from backups.models.catalog import local_path_problem
from backups.notifiers import NOTIFIER_KINDS, NotifierError, build_notifier, notifier_class
from backups.plugins import Option
from backups.queues import queue_problem
from backups.retention.policy import Policy
from backups.storages import STORAGE_KINDS, StorageError, build_storage, storage_class
from backups.storages.base import prefix_problem
from backups.streaming.encryption import EncryptionError, parse_recipient
from backups.watching.settings import EXTERNAL
from backups.watching.settings import KEYS as WATCH_KEYS
from backups.watching.settings import problems as watch_problems

# An engine option holds a secret when its name ends with one of these words (the option
# declarations carry no flag); names with "key" (sslkey, tls_key_file) are paths to key files.
SECRET_OPTION_WORDS = ("password", "passphrase", "secret", "token", "credentials")

STORAGE_KEYS = {"kind", "prefix", "required"}  # plus the options of the storage's kind
NOTIFIER_KEYS = {"kind", "events", "default", "is_active"}  # plus the options of the notifier's kind
TARGET_KEYS = {
    "engine", "host", "port", "database", "user", "password", "options", "include_tables",
    "exclude_tables", "paths", "timezone", "is_active", "storages", "compression", "retention",
    "skip_unchanged", "sandbox", "config_paths", "tags", "protected", "encryption", "escrow", "queue",
    "drill", "drill_checks", "drill_from_last", "storage", *WATCH_KEYS,
}  # fmt: skip
KEY_KEYS = {"recipient", "identity"}


def sandbox_ref(check: Validator, name: str, table: dict[str, Any], known_targets: dict[str, str]) -> str:
    path = f"targets.{name}.sandbox"
    sandbox = check.string(table, "sandbox", f"targets.{name}")
    if not sandbox:
        return ""
    engine_key = known_targets.get(name, "")
    if sandbox not in known_targets:
        check.error(path, f"no target named {sandbox!r}{suggest(sandbox, known_targets)}")
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


def storage_refs(check: Validator, table: dict[str, Any], path: str, known: set[str]) -> list[str]:
    if table.get("engine") == EXTERNAL:
        return storage_name(check, table, path, known)
    names = check.string_list(table, "storages", path)
    for name in names:
        if name not in known:
            check.error(f"{path}.storages", f"no storage named {name!r}{suggest(name, known)}")
    return names


def validate_storage(check: Validator, name: str, table: dict[str, Any]) -> dict[str, Any]:
    """A ``[storages.NAME]`` table: ``kind``, ``prefix``, ``required`` and the kind's options."""
    path = f"storages.{name}"
    kind, cls = _plugin_class(check, table, path, "storage", STORAGE_KINDS, storage_class)
    options = _plugin_options(check, table, path, cls, STORAGE_KEYS) if cls is not None else {}
    prefix = check.string(table, "prefix", path)
    if prefix_problem(prefix):  # the admin's rule too (Storage.clean)
        check.error(f"{path}.prefix", prefix_problem(prefix))
    if kind == "local" and local_path_problem(options.get("path")):
        check.error(f"{path}.path", local_path_problem(options.get("path")))
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
    check: Validator,
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
            f"unknown {family} kind {kind!r}{suggest(kind, kinds)}; use one of {', '.join(kinds)}",
        )
    else:
        try:
            return kind, load(kind)
        except (StorageError, NotifierError, ImportError) as exc:
            check.error(f"{path}.kind", f"{family} kind {kind!r} cannot be loaded: {exc}")
    return kind, None


def _plugin_options(
    check: Validator, table: dict[str, Any], path: str, cls: Any, own_keys: set[str]
) -> dict[str, Any]:
    """The options of a storage or notifier table, checked against its kind's ``OPTIONS``:
    secrets only as references, paths made absolute, every problem reported with its key."""
    check.unknown_keys(table, own_keys | set(cls.OPTIONS), path)
    options: dict[str, Any] = {}
    for key, spec in cls.OPTIONS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, str) and (spec.secret or secrets.mentions_reference(value)):
            value = check.reference(value, f"{path}.{key}", must_be_reference=spec.secret)
        elif isinstance(value, str) and spec.path and value:
            value = check.path_value(value)
        options[key] = value
    for key, message in cls.validate_options(options):
        check.error(f"{path}.{key}", message)
    return options


def validate_notifier(check: Validator, name: str, table: dict[str, Any]) -> dict[str, Any]:
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
                f"unknown event {event!r}{suggest(event, Event.values)}; events are {', '.join(Event.values)}",
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


def validate_key(
    check: Validator, name: str, table: dict[str, Any], catalog: dict[str, EncryptionKey]
) -> dict[str, str]:
    """A ``[keys.NAME]`` table: ``recipient`` (age1..., required) and ``identity``, where this
    host finds the key file, as a reference only; when probing, it must resolve to the identity
    of that recipient. A recipient that backups are encrypted to never changes."""
    path = f"keys.{name}"
    check.unknown_keys(table, KEY_KEYS, path)
    if name == "none":
        check.error(path, 'invalid name: "none" means no key on a schedule; choose another name')
    recipient = check.string(table, "recipient", path).strip()
    if not recipient:
        check.error(
            f"{path}.recipient", "required: the key's public key, age1... (age-keygen -y KEYFILE prints it)"
        )
    else:
        try:
            parse_recipient(recipient)
        except EncryptionError as exc:
            check.error(f"{path}.recipient", f"{exc}; age-keygen -y KEYFILE prints a key file's recipient")
            recipient = ""
    if recipient:
        _catalog_problems(check, name, recipient, catalog)
    before = len(check.errors)
    identity = check.string(table, "identity", path)
    if identity and not secrets.mentions_reference(identity):
        check.error(
            f"{path}.identity",
            "write where this host finds the key file, as ${file:/run/secrets/KEY.key} or ${ENV_VAR}; "
            "an identity itself is never stored",
        )
    elif identity:
        identity = check.reference(identity, f"{path}.identity", must_be_reference=True)
    if check.probe and identity and recipient and len(check.errors) == before:
        try:
            identity_of(EncryptionKey(name=name, recipient=recipient, identity=identity))
        except KeyUnavailable as exc:
            check.error(f"{path}.identity", str(exc).removeprefix(f"{path}.identity: "))
    return {"recipient": recipient, "identity": identity}


def _catalog_problems(check: Validator, name: str, recipient: str, catalog: dict[str, EncryptionKey]) -> None:
    """What the catalog's keys forbid: another name in another case, another key's recipient,
    and a new recipient for a key backups are encrypted to (its old identity would be lost)."""
    path = f"keys.{name}"
    for other, key in catalog.items():
        if other != name and other.lower() == name.lower():
            check.error(path, f"the catalog has key {other!r}, a name that differs only in case; use it")
        elif other != name and key.recipient == recipient:
            check.error(
                f"{path}.recipient", f"key {other!r} in the catalog has this recipient; a key has one name"
            )
    existing = catalog.get(name)
    if existing is None or existing.recipient == recipient:
        return
    listed = Cast("encryption_recipients", TextField())
    used = (
        Backup.objects.filter(deleted_at__isnull=True)
        .annotate(listed=listed)
        .filter(Q(encryption_key_id=existing.fingerprint) | Q(listed__contains=existing.recipient))
        .count()
    )
    if used:
        check.error(
            f"{path}.recipient",
            f"{used} backup(s) are encrypted to key {name} (id {existing.fingerprint}, {existing.recipient}) "
            f"and a key is its recipient: give the new key a new name ([keys.{name}-2]) and point the "
            f"targets at it; keep [keys.{name}] as it was, the old backups need its identity",
        )


def validate_target(check: Validator, name: str, table: dict[str, Any]) -> dict[str, Any]:
    path = f"targets.{name}"
    if table.get("engine") == EXTERNAL:
        return external_target_fields(check, name, table, retention_rules(check, table, path))
    check.unknown_keys(table, TARGET_KEYS, path)
    engine_key = check.string(table, "engine", path)
    available = engine_keys()
    if not engine_key:
        check.error(f"{path}.engine", f"required: one of {', '.join(available)}")
    elif engine_key not in available:
        check.error(
            f"{path}.engine",
            f"unknown engine {engine_key!r}{suggest(engine_key, available)}; available: {', '.join(available)}",
        )
    for key in sorted({"storage", *WATCH_KEYS} & set(table)):
        check.error(f"{path}.{key}", 'a setting of external targets only (engine = "external"); remove it')
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
        "retention": retention_rules(check, table, path),
        "is_active": check.boolean(table, "is_active", path, True),
        "skip_unchanged": check.boolean(table, "skip_unchanged", path, False),
        "tags": check.string_list(table, "tags", path),
        "protected": check.boolean(table, "protected", path, False),
        "encryption": check.string(table, "encryption", path),  # the names: checked against [keys.*]
        "escrow": check.string_list(table, "escrow", path),
        "queue": check.string(table, "queue", path),  # empty: the default queue
        # Checked with the sandbox, once every target's is known (loader: drill_problems).
        "drill": check.string(table, "drill", path).strip(),
        "drill_checks": table.get("drill_checks", []),
        "drill_from_last": table.get("drill_from_last", 1),
    }
    problem = tag_problem(fields["tags"])
    if problem:
        check.error(f"{path}.tags", problem)
    problem = queue_problem(fields["queue"]) if fields["queue"] else ""
    if problem:
        check.error(f"{path}.queue", problem)
    if fields["password"]:
        fields["password"] = check.reference(fields["password"], f"{path}.password", must_be_reference=True)
    fields["options"] = {
        key: (
            check.reference(value, f"{path}.options.{key}", must_be_reference=is_secret_option(key))
            if isinstance(value, str) and (is_secret_option(key) or secrets.mentions_reference(value))
            else value
        )
        for key, value in options.items()
    }
    if engine_key in available:
        _check_engine(check, engine_key, name, fields, path)
    return fields


def is_secret_option(name: str) -> bool:
    """Whether the engine option ``name`` holds a secret (so only a reference is accepted)."""
    return name.endswith(SECRET_OPTION_WORDS)


#: The connection field naming files on this host, per engine: the admin checks it as the TOML
#: file does (e.g. a SQLite database that is a device, a files path ending in "/..").
FILE_FIELDS = {"sqlite": "database", "files": "paths"}


def engine_option_problems(connection: Connection) -> list[tuple[str, str]]:
    """A target's ``options`` as the admin checks them before saving, as ``("options.NAME",
    message)``: the engine's own option rules (:meth:`Engine.validate`, given the references
    unresolved: the web host need not hold the workers' secrets), secret options only as
    references, and every reference within the secret rules. Also the engine's problems with
    its :data:`FILE_FIELDS` field, as ``("database" or "paths", message)``."""
    if connection.engine == EXTERNAL:  # the watch settings, as the TOML file checks them
        return [(f"options.{key}", message) for key, message in watch_problems(connection.options)]
    problems = [
        (key, message)
        for key, message in get_engine(connection.engine).validate(connection)
        if key == "options" or key.startswith("options.") or key == FILE_FIELDS.get(connection.engine)
    ]
    for key, value in connection.options.items():
        if isinstance(value, str):
            secret = is_secret_option(key)
            problems += [
                (f"options.{key}", message) for message in secret_problems(value, must_be_reference=secret)
            ]
    return problems


def _config_paths(check: Validator, table: dict[str, Any], path: str) -> list[str]:
    paths = [check.path_value(p) for p in check.string_list(table, "config_paths", path)]
    for message in path_problems(paths):
        check.error(f"{path}.config_paths", message)
    if check.probe and table.get("is_active", True):
        for raw in paths:
            if not os.path.lexists(raw):
                check.error(f"{path}.config_paths", f"{raw} does not exist on this host")
    return paths


def _check_engine(check: Validator, engine_key: str, name: str, fields: dict[str, Any], path: str) -> None:
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


def retention_rules(check: Validator, table: dict[str, Any], path: str) -> dict[str, Any]:
    """A table's ``retention`` policy, every problem reported under its rule's key."""
    retention = table.get("retention", {})
    problems = Policy.problems(retention)  # the timezone is checked on its own key
    for problem in problems:
        where = f"{path}.retention" if problem.field == "retention" else f"{path}.retention.{problem.field}"
        check.error(where, problem.message)
    return {} if problems else dict(retention)


def option_problems(cls: Any, options: dict[str, Any]) -> list[tuple[str, str]]:
    """A storage or notifier kind's own option rules (:func:`backups.plugins.validate_options`
    and the kind's ``check_options``), plus: secrets only as references, every reference within
    the secret rules."""
    problems: list[tuple[str, str]] = cls.validate_options(options)
    known: Mapping[str, Option] = cls.OPTIONS
    for key, value in options.items():
        spec = known.get(key)
        if isinstance(value, str) and spec is not None:
            problems += [(key, message) for message in secret_problems(value, must_be_reference=spec.secret)]
    return problems
