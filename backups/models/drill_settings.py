"""A target's restore-drill settings (``drill``, ``drill_checks``, ``drill_from_last``), checked
by the same rules in the configuration file and the admin. The cron is checked by the app
that runs it (schedules registers its check: see requests.register_cron_check)."""

from __future__ import annotations

from typing import Any

from backups.engines import engine_keys, get_engine
from backups.requests import cron_problem

MAX_CHECK_CHARS = 10_000
MAX_FROM_LAST = 1000
EXAMPLE = '"0 4 * * 0" (Sundays at 04:00 in the target\'s timezone)'


def drill_problems(
    drill: str, checks: Any, from_last: Any, engine_key: str, has_sandbox: bool
) -> list[tuple[str, str]]:
    """The problems with these settings, as ``(field, message)``: the cron, each check (a
    non-empty string of at most MAX_CHECK_CHARS), ``from_last`` (1 to MAX_FROM_LAST), and a drill
    of an engine that restores into scratch databases without a sandbox to hold them."""
    problems: list[tuple[str, str]] = []
    if drill.strip():
        problem = cron_problem(drill.strip())
        if problem:
            problems.append(("drill", f"{problem}; e.g. {EXAMPLE}"))
        scratch = engine_key in engine_keys() and get_engine(engine_key).has_scratch_databases
        if scratch and not has_sandbox:
            problems.append(
                (
                    "sandbox",
                    f"a drill of a {engine_key} target restores into a scratch database on a sandbox: "
                    f"set sandbox to another {engine_key} target (a test server), or remove drill",
                )
            )
    if not isinstance(checks, list) or not all(isinstance(sql, str) for sql in checks):
        problems.append(("drill_checks", 'a list of SQL strings, e.g. ["select count(*) > 0 from orders"]'))
    else:
        for index, sql in enumerate(checks, start=1):
            if not sql.strip():
                problems.append(("drill_checks", f"check {index} is empty; remove it or write the SQL"))
            elif len(sql) > MAX_CHECK_CHARS:
                problems.append(
                    ("drill_checks", f"check {index} is {len(sql)} characters; at most {MAX_CHECK_CHARS}")
                )
    if isinstance(from_last, bool) or not isinstance(from_last, int) or not 1 <= from_last <= MAX_FROM_LAST:
        problems.append(("drill_from_last", f"must be 1-{MAX_FROM_LAST} (1: the newest backup)"))
    return problems
