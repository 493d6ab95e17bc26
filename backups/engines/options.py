"""The checks of engines' ``options`` tables: one check per known option, the same words everywhere.

An engine declares ``OPTIONS = {name: Option(help, check)}`` (:class:`backups.plugins.Option`);
:func:`option_problems` refuses unknown names (listing the known ones) and reports each bad value
as ``("options.NAME", message)``, the field names the TOML loader and the admin show. A check
returns ``None`` for a good value, else the message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from backups.plugins import Check, Option, validate_options

MAX_PATH = 1000  # a file path in an option (some tools read option-file lines into 4 KiB)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def option_problems(options: Mapping[str, Any], known: Mapping[str, Option]) -> list[tuple[str, str]]:
    """:func:`backups.plugins.validate_options` for a target's ``options`` table."""
    return validate_options(options, known, table="options")


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def seconds(low: int = 1, high: int = 3600) -> Check:
    def check(value: Any) -> str | None:
        if whole_number(value) and low <= value <= high:
            return None
        return f"must be a whole number of seconds from {low} to {high}, got {value!r}"

    return check


def pem_file(value: Any) -> str | None:
    """A file path that can go into an argument, a config file or an environment variable:
    text without control characters, not empty, not taken for an option (no leading ``-``)."""
    if (
        isinstance(value, str)
        and value
        and len(value) <= MAX_PATH
        and not _CONTROL.search(value)
        and not value.startswith("-")
        and encodable(value)
    ):
        return None
    return "must be the path of a PEM file"


def encodable(value: str) -> bool:
    """Whether ``value`` can be written out as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def one_of(choices: Collection[str], *, fold_case: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and (value.upper() if fold_case else value) in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {value!r}"

    return check
