"""The TOML loader's checks of single values, each problem reported under its key path
(``targets.app-db.port: must be 1-65535``); :mod:`.config_sections` checks whole tables."""

from __future__ import annotations

import difflib
import os
import re
import zoneinfo
from typing import TYPE_CHECKING, Any

from backups import secrets
from backups.streaming.codecs import COMPRESSIONS

if TYPE_CHECKING:
    from backups.config.loader import Config

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
SECTIONS = ("storages", "keys", "targets", "schedules", "notifiers")
PLAINTEXT_REFUSED = "write secrets as ${ENV_VAR} or ${file:/path}; plaintext secrets are refused"
MALFORMED = (
    "malformed reference {text}: write ${{NAME}} (letters, digits and '_', not starting with a "
    "digit) or ${{file:/path}}"
)


def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def secret_problems(value: str, *, must_be_reference: bool) -> list[str]:
    """What stops ``value`` from being stored where a secret may be: a malformed reference,
    plaintext where only references are allowed, or references the secret rules refuse (nothing
    is read)."""
    malformed = secrets.malformed(value)
    if malformed:
        return [MALFORMED.format(text=_shortened(text)) for text in malformed]
    if must_be_reference and not secrets.is_reference_only(value):
        return [PLAINTEXT_REFUSED]
    return secrets.refusals(value)


def _shortened(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


class Validator:
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
                self.error(f"{path}.{key}", f"unknown key{suggest(key, allowed)}")

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

    def reference(self, value: str, path: str, must_be_reference: bool) -> str:
        """Check a value that holds (or, a secret, must be) references; return it as stored: each
        relative ``${file:...}`` made absolute against the TOML file's directory, as paths are."""
        value = secrets.absolute_file_references(value, str(self.config.base_dir))
        refused = secret_problems(value, must_be_reference=must_be_reference)
        for message in refused:
            self.error(path, message)
        if refused:
            return value
        # Whether the reference resolves *here* is a fact about this host: a probe.
        problem = secrets.check_resolvable(value) if self.probe else None
        if problem:
            self.error(path, problem)
        return value

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
