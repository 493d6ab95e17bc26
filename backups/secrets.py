"""Secret references: ``${ENV_VAR}`` and ``${file:/path}``, resolved only right before use.

Configuration and the database only ever hold references. Resolved values are remembered in
this process so that :class:`RedactingFilter` can scrub them from any log record, and
:func:`redact` from any message that is about to be shown or stored.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

REFERENCE = re.compile(r"\$\{(?:file:(?P<file>[^}]+)|(?P<env>[A-Za-z_][A-Za-z0-9_]*))\}")
_MASK = "********"
_known_secrets: set[str] = set()
_lock = threading.Lock()


class SecretError(Exception):
    """A reference could not be resolved. The message names the reference, never a value."""


def references(value: str) -> list[str]:
    """The references written in ``value``, e.g. ``["${DB_PASSWORD}"]``."""
    return [match.group(0) for match in REFERENCE.finditer(value)]


def is_reference_only(value: str) -> bool:
    """True when ``value`` is empty or made only of references (no literal secret text)."""
    return REFERENCE.sub("", value).strip() == ""


def resolve(value: str) -> str:
    """Expand every reference in ``value``; raise :class:`SecretError` naming a missing one."""

    def expand(match: re.Match[str]) -> str:
        if match.group("env"):
            name = match.group("env")
            if name not in os.environ:
                raise SecretError(f"environment variable {name} is not set")
            secret = os.environ[name]
        else:
            path = Path(match.group("file"))
            try:
                secret = path.read_text().rstrip("\r\n")
            except FileNotFoundError:
                raise SecretError(f"secret file {path} does not exist") from None
            except OSError as exc:
                raise SecretError(f"secret file {path} cannot be read: {exc.strerror}") from None
        remember(secret)
        return secret

    return REFERENCE.sub(expand, value)


def resolve_values(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the references in its string values resolved (other values as they are)."""
    return {key: resolve(value) if isinstance(value, str) else value for key, value in options.items()}


def check_resolvable(value: str) -> str | None:
    """The problem with ``value``'s references, or None when each one can be resolved now."""
    try:
        resolve(value)
    except SecretError as exc:
        return str(exc)
    return None


def remember(secret: str) -> None:
    if len(secret) >= 4:  # masking very short strings would garble ordinary text
        with _lock:
            _known_secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with every secret resolved in this process replaced by a mask."""
    with _lock:
        known = sorted(_known_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class RedactingFilter(logging.Filter):
    """Logging filter that masks resolved secrets in messages and their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known_secrets:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info:
                # The traceback text is rendered here, masked, and cached where formatters look.
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            elif record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True
