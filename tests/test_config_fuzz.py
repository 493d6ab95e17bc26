"""The TOML loader against generated documents (issue 18, case 10): random sections, names, keys,
values and nesting, names with quotes, spaces, newlines, leading dashes, ``..`` and unicode.
``backup_config check`` never fails with a traceback, only with problems each under a key path;
an ``apply`` that fails changes nothing."""

from __future__ import annotations

import datetime
import io
import math
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backups.models import Notifier, Storage, Target
from schedules.models import BackupSchedule

pytestmark = pytest.mark.django_db

SECTIONS = ("storages", "targets", "schedules", "notifiers")
KEYS = (
    "kind", "path", "prefix", "required", "engine", "host", "port", "database", "user", "password",
    "options", "paths", "timezone", "storages", "compression", "retention", "sandbox", "config_paths",
    "tags", "protected", "is_active", "target", "backup_type", "cron", "retention_days", "grace_minutes",
    "verify", "notify", "events", "url", "keep_daily", "keep_within", "tiers", "rules", "max_backups",
)  # fmt: skip
NAMES = ("app-db", "local", "APP-DB", "-lead", "..", "a b", 'q"uote', "new\nline", "ünï", "x" * 101, "")
TEXTS = (
    "${}", "${file:}", "${A-B}", "${APP_PW}", "${file:rel.pass}", "${file:/etc/shadow}", "${SECRET_KEY}",
    "15min:24h", "3.1", "2d", "101y", "0 3 * * *", "sqlite", "files", "local", "s3", "webhook", "gzip",
    "UTC", "Europe", "../..", "/", "https://example.invalid/hook",
)  # fmt: skip

text = st.text(st.characters(codec="utf-8"), max_size=12)  # a TOML file is UTF-8
names = st.one_of(st.sampled_from(NAMES), text)
keys = st.one_of(st.sampled_from(KEYS), text)
leaves = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 65535, 65536, 36500, 36501, 2**63 - 1, 2**63]),
    st.floats(),
    st.booleans(),
    st.sampled_from(TEXTS),
    text,
    st.dates(),
)
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
# Tables close to valid ones, with random keys mixed in, reach the checks past the first error.
nearly_valid = st.sampled_from(
    [
        {"kind": "local", "path": "backups"},
        {"engine": "sqlite", "database": "app.sqlite3", "storages": ["local"]},
        {"engine": "files", "paths": ["media"], "storages": ["local"], "retention": {"keep_daily": 7}},
        {"target": "app-db", "cron": "0 3 * * *", "storages": ["local"]},
        {"kind": "webhook", "url": "${HOOK_URL}", "events": ["backup_failed"]},
    ]
)
tables = st.one_of(
    st.dictionaries(keys, values, max_size=8),
    st.builds(lambda base, extra: {**base, **extra}, nearly_valid, st.dictionaries(keys, values, max_size=3)),
)
random_documents = st.dictionaries(
    st.one_of(st.sampled_from(SECTIONS), text),
    st.one_of(st.dictionaries(names, tables, max_size=3), values),
    max_size=4,
)
VALID: dict[str, dict[str, dict[str, Any]]] = {
    "storages": {"local": {"kind": "local", "path": "backups"}},
    "targets": {
        "app-db": {"engine": "sqlite", "database": "app.sqlite3", "storages": ["local"]},
        "media": {
            "engine": "files",
            "paths": ["media"],
            "storages": ["local"],
            "retention": {"keep_daily": 7},
        },
    },
    "schedules": {"nightly": {"target": "app-db", "cron": "0 3 * * *", "storages": ["local"]}},
    "notifiers": {"hook": {"kind": "webhook", "url": "${HOOK_URL}", "events": ["backup_failed"]}},
}
TABLES = [(section, name) for section, entries in VALID.items() for name in entries]


def changed(where: tuple[str, str], extra: dict[str, Any], retention: dict[str, Any]) -> dict[str, Any]:
    """A copy of VALID with one table's keys replaced or added (none: VALID itself, applied)."""
    section, name = where
    document = {key: {n: dict(table) for n, table in entries.items()} for key, entries in VALID.items()}
    document[section][name].update(extra)
    if retention:
        document["targets"]["app-db"]["retention"] = retention
    return document


# A valid file with a few keys changed: applies sometimes, else fails deep in the checks.
changed_documents = st.builds(
    changed,
    st.sampled_from(TABLES),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=2),
    st.dictionaries(st.sampled_from((*KEYS[-6:], "retention_days", "min_keep")), values, max_size=2),
)
documents = st.one_of(random_documents, changed_documents)


def toml_string(value: str) -> str:
    escaped = "".join(
        "\\\\" if char == "\\" else '\\"' if char == '"' else f"\\u{ord(char):04x}"
        if ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in value
    )  # fmt: skip
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    """Scalars and arrays at the top, then one ``[section."name"]`` table per name."""
    tables = {key: value for key, value in document.items() if isinstance(value, dict)}
    lines = [
        f"{toml_string(key)} = {toml_value(value)}" for key, value in document.items() if key not in tables
    ]
    for section, entries in tables.items():
        scalars = {name: value for name, value in entries.items() if not isinstance(value, dict)}
        if scalars or not entries:  # one [section] table, before its sub-tables: declared once
            lines.append(f"[{toml_string(section)}]")
            lines += [f"{toml_string(name)} = {toml_value(value)}" for name, value in scalars.items()]
        for name, table in entries.items():
            if name not in scalars:
                lines.append(f"[{toml_string(section)}.{toml_string(name)}]")
                lines += [f"{toml_string(key)} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def counts() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Target, Storage, Notifier, BackupSchedule))


def problems_of(action: str, path: Path) -> list[str] | None:
    """The problems ``backup_config ACTION`` lists (exit 2), or None when it succeeds. Anything
    else it raises (a traceback) fails the test."""
    try:
        call_command("backup_config", action, str(path), "--skip-probes", stdout=io.StringIO())
    except CommandError as exc:
        assert exc.returncode == 2, exc
        return str(exc).split("\n  ")[1:]
    return None


def assert_each_names_a_key(problems: list[str], path: Path, document: dict[str, Any]) -> None:
    roots = [str(path), *document, *(key.replace("\0", "\\0") for key in document)]
    for problem in problems:
        assert any(problem.startswith(root) for root in roots), problem
        assert ": " in problem, problem


@pytest.fixture
def config_dir() -> Any:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_it_never_fails_with_a_traceback_and_a_failed_apply_changes_nothing(
    document: dict[str, Any], config_dir: Path
) -> None:
    text = toml_document(document)
    assert tomllib.loads(text).keys() == document.keys()  # the generator writes valid TOML
    path = config_dir / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    checked = problems_of("check", path)
    if checked is not None:
        assert checked, "a failed check lists its problems"
        assert_each_names_a_key(checked, path, document)
    before = counts()
    applied = problems_of("apply", path)
    if applied is not None:
        assert counts() == before
    assert (checked is None) == (applied is None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.text(st.characters(codec="utf-8"), max_size=200))
def test_it_reads_any_text_without_a_traceback(raw: str, config_dir: Path) -> None:
    path = config_dir / "raw.toml"
    path.write_text(raw, encoding="utf-8")
    before = counts()
    if problems_of("apply", path) is not None:
        assert counts() == before
