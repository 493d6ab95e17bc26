"""An external target's watch settings: one set of rules for the TOML file, the admin and the scan.

They live in ``Target.options`` (the storage is the target's one entry in ``storages``):

- ``prefix``: the folder inside the storage where the other tool writes (required);
- ``pattern``: which file names are its backups: a glob on the name (``*.sql.gz``), or a
  regular expression written ``re:...`` that must match the whole name; empty: every file;
- ``expect``: when a new file should appear, as cron in the target's timezone; empty: no
  expectation, so no "missed" alert;
- ``grace``: how long after ``expect`` a file may still come (``2h``; default
  BACKUPSITE_MISSED_GRACE_MINUTES, the schedules' grace);
- ``time_from_name``: where the name carries the backup's time, as strftime directives
  (``%Y%m%d-%H%M%S``, read in the target's timezone); empty: the object's modified time.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from backups.requests import cron_problem
from backups.retention.durations import DurationError, parse_duration
from backups.storages.base import prefix_problem

if TYPE_CHECKING:
    from backups.models import Target

EXTERNAL = "external"  # the engine key of watched targets
KEYS = ("prefix", "pattern", "expect", "grace", "time_from_name")
REGEX_MARK = "re:"
# strftime directives time_from_name may use, and the digits each stands for.
DIRECTIVES = {"Y": r"\d{4}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}", "S": r"\d{2}"}
GRACE_UNITS = {"w", "d", "h", "min"}
EXAMPLES = {
    "prefix": '"postgres/nightly/" (the folder the other tool writes into)',
    "pattern": '"*.sql.gz" (a glob on the file name) or "re:app-\\d{8}\\.dump" (a regular expression)',
    "expect": '"0 3 * * *" (every day at 03:00 in the target\'s timezone)',
    "grace": '"2h" (units min, h, d, w)',
    "time_from_name": '"%Y%m%d-%H%M%S" for app-20261207-030000.sql.gz',
}


def run_refusal(target: Target) -> str:
    """Why Backupsite cannot back ``target`` up, schedule or restore it itself, or "" when it can."""
    if target.engine != EXTERNAL:
        return ""
    return (
        f"target {target.name} is external: another tool writes its backups and Backupsite adopts "
        "them (docs/EXTERNAL.md), so it cannot run, schedule or restore them here. Run that tool "
        "instead; the adopted files can be verified and downloaded"
    )


class WatchSettingsError(ValueError):
    """Settings that cannot be used; ``problems`` lists ``(key, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class WatchSettings:
    prefix: str
    pattern: str = ""
    expect: str = ""
    grace: timedelta | None = None  # None: the setting's default grace
    time_from_name: str = ""

    def matches(self, name: str) -> bool:
        """Whether the file ``name`` (no folder) is one of the other tool's backups. Hidden names
        (a leading dot: tools' temporary files) never are."""
        if name.startswith("."):
            return False
        if not self.pattern:
            return True
        if self.pattern.startswith(REGEX_MARK):
            return re.fullmatch(self.pattern[len(REGEX_MARK) :], name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)

    def time_in_name(self, name: str, tz: tzinfo) -> datetime | None:
        """The time ``time_from_name`` finds in ``name`` (in ``tz``), or None when it finds none."""
        if not self.time_from_name:
            return None
        found = _time_regex(self.time_from_name).search(name)
        if found is None:
            return None
        try:
            return datetime.strptime(found.group(0), self.time_from_name).replace(tzinfo=tz)
        except ValueError:  # 20261399: digits in the right places, but no such date
            return None


def parse(options: Mapping[str, Any]) -> WatchSettings:
    """The settings in a target's ``options``; raises :class:`WatchSettingsError`."""
    found = problems(options)
    if found:
        raise WatchSettingsError(found)
    grace = options.get("grace") or ""
    return WatchSettings(
        prefix=str(options["prefix"]).strip("/"),
        pattern=options.get("pattern") or "",
        expect=(options.get("expect") or "").strip(),
        grace=_grace(grace) if grace else None,
        time_from_name=options.get("time_from_name") or "",
    )


def problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem with a target's watch settings as ``(key, message)``, each message saying
    how to write it; empty when they are usable."""
    if not isinstance(options, Mapping):
        return [("options", "must be a table of the watch settings: prefix, pattern, expect, grace")]
    found: list[tuple[str, str]] = []
    unknown = sorted(set(options) - set(KEYS))
    for key in unknown:
        found.append((key, f"unknown watch setting; an external target takes {', '.join(KEYS)}"))
    for key in KEYS:
        value = options.get(key, "")
        if not isinstance(value, str):
            found.append((key, f"must be a string, e.g. {EXAMPLES[key]}"))
    if found:
        return found
    prefix = options.get("prefix", "").strip("/")
    if not prefix:
        found.append(("prefix", f"required: the folder inside the storage, e.g. {EXAMPLES['prefix']}"))
    elif prefix_problem(prefix):
        found.append(("prefix", prefix_problem(prefix)))
    pattern = options.get("pattern", "")
    if pattern:
        found += [("pattern", message) for message in [_pattern_problem(pattern)] if message]
    expect = options.get("expect", "").strip()
    if expect:
        problem = cron_problem(expect)
        if problem:
            found.append(("expect", f"{problem}; e.g. {EXAMPLES['expect']}"))
    grace = options.get("grace", "")
    if grace:
        try:
            _grace(grace)
        except DurationError as exc:
            found.append(("grace", str(exc)))
        else:
            if not expect:
                found.append(("grace", "a grace applies to expect: set expect too, or remove grace"))
    time_format = options.get("time_from_name", "")
    if time_format:
        found += [("time_from_name", message) for message in [_time_format_problem(time_format)] if message]
    return found


def _pattern_problem(pattern: str) -> str:
    if pattern.startswith(REGEX_MARK):
        try:
            re.compile(pattern[len(REGEX_MARK) :])
        except re.error as exc:
            return f"not a regular expression ({exc}); e.g. {EXAMPLES['pattern']}"
        return ""
    if "/" in pattern:
        return 'matches the file name only: put the folder in prefix, e.g. pattern = "*.sql.gz"'
    return ""


def _time_format_problem(time_format: str) -> str:
    directives = re.findall(r"%(.)", time_format)
    unknown = sorted({d for d in directives if d not in DIRECTIVES})
    if unknown:
        return f"%{unknown[0]} is not supported: use %Y %m %d %H %M %S, e.g. {EXAMPLES['time_from_name']}"
    if not {"Y", "m", "d"} <= set(directives):
        return f"needs at least %Y, %m and %d, e.g. {EXAMPLES['time_from_name']}"
    if len(directives) != len(set(directives)):
        return "names a directive twice"
    return ""


def _time_regex(time_format: str) -> re.Pattern[str]:
    parts = re.split(r"(%.)", time_format)
    return re.compile(
        "".join(DIRECTIVES[part[1]] if part.startswith("%") else re.escape(part) for part in parts)
    )


def _grace(text: str) -> timedelta:
    duration = parse_duration(text)
    if set(duration.units) - GRACE_UNITS:
        raise DurationError(f"{text!r}: months and years have no fixed length here; use {EXAMPLES['grace']}")
    return timedelta(weeks=duration.weeks, days=duration.days, hours=duration.hours, minutes=duration.minutes)
