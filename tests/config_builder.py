"""The tests' one TOML-config builder: sections as Python dicts in, a ``backup_config`` file out.

``toml_text(storage_dir=path, targets={"app-db": {"engine": "sqlite", ...}})`` is the TOML text
(a local storage named ``local`` at ``path`` first), ``write_config`` writes it to a file. Tables are
written in the order given, one ``[section.name]`` table each; nested dicts are inline tables,
paths are strings. The ``toml_config`` fixture in conftest.py is ``write_config`` into tmp_path.
Tests that need invalid TOML write their raw text themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Sections = Mapping[str, Mapping[str, Any]]


def write_config(path: Path, *, storage_dir: Path | str | None = None, **sections: Sections) -> Path:
    """Write ``toml_text(storage_dir=..., **sections)`` to ``path``."""
    path.write_text(toml_text(storage_dir=storage_dir, **sections))
    return path


def toml_text(*, storage_dir: Path | str | None = None, **sections: Sections) -> str:
    """The TOML text of ``sections`` (``storages=``, ``notifiers=``, ``targets=``, ``schedules=``):
    one ``[section.name]`` table per entry, in order, after the storage ``local`` (kind local at
    ``storage_dir``) when it is given."""
    if storage_dir is not None:
        local = {"local": {"kind": "local", "path": storage_dir}}
        sections = {"storages": {**local, **sections.pop("storages", {})}, **sections}
    tables = []
    for section, entries in sections.items():
        for name, values in entries.items():
            lines = [f"[{section}.{_key(name)}]"]
            lines += [f"{_key(key)} = {_value(value)}" for key, value in values.items()]
            tables.append("\n".join(lines) + "\n")
    return "\n".join(tables)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(key)} = {_value(item)}" for key, item in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")
