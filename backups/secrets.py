"""Secret references: ``${ENV_VAR}`` and ``${file:/path}``, resolved only right before use.

Configuration and the database only ever hold references. Whoever may edit a target, storage
or notifier chooses what a run reads and where it sends it, so a reference may point only at
secrets meant for them (:func:`refusals`, checked when a row is saved and again here, when it
is resolved):

* ``${file:/path}``: a regular file of at most 64 KiB inside ``BACKUPSITE_SECRETS_DIRS``, with
  symlinks and ``..`` resolved before the check; it is opened without blocking and checked with
  ``fstat`` before it is read, so a FIFO or a device never hangs a worker.
* ``${NAME}``: never one of the application's own secrets (:data:`APP_SECRETS`); when
  ``BACKUPSITE_SECRET_ENV`` is set, only a name matching one of its glob patterns.

The secret is the whole file (UTF-8, without its trailing newlines) or the whole variable. A
``${`` that starts no reference (``${}``, ``${file:}``, ``${A-B}``) is :func:`malformed`: the
configuration checks refuse it rather than store it as text.

Resolved values are remembered in this process so that :class:`RedactingFilter` can scrub them
from any log record, and :func:`redact` from any message that is about to be shown or stored.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
import threading
from typing import Any

from django.conf import settings

REFERENCE = re.compile(r"\$\{(?:file:(?P<file>[^}]+)|(?P<env>[A-Za-z_][A-Za-z0-9_]*))\}")
OPENING = re.compile(r"\$\{[^}]*\}?")  # what a reader takes for a reference: ${ up to the next }
#: The application's own secrets, as names or glob patterns (the env_secret() settings, the
#: URLs that embed passwords, the role map, Django's own variables). No reference ever reads
#: them, whatever BACKUPSITE_SECRET_ENV says: whoever can edit a target could otherwise send
#: SECRET_KEY to a server or webhook of their choosing. Add every new secret setting here.
APP_SECRETS = (
    "SECRET_KEY",
    "DATABASE_URL",
    "DATABASE_PASSWORD",
    "DATABASE_PASSWORD_FILE",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "AUTH_LDAP_BIND_PASSWORD",
    "AUTH_LDAP_BIND_PASSWORD_FILE",
    "OIDC_RP_CLIENT_SECRET",
    "OIDC_RP_CLIENT_SECRET_FILE",
    "EMAIL_HOST_PASSWORD",
    "BACKUPSITE_ROLE_MAP",
    "BACKUPSITE_METRICS_TOKEN",
    "BACKUPSITE_METRICS_TOKEN_FILE",
    "BACKUPSITE_CACHE_URL",
    "DJANGO_*",
)
MAX_FILE_BYTES = 64 * 1024
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


def mentions_reference(value: str) -> bool:
    """Whether ``value`` holds a reference, or a ``${`` meant as one."""
    return "${" in value


def malformed(value: str) -> list[str]:
    """The ``${...}`` in ``value`` that are not references, e.g. ``["${A-B}"]`` (an unclosed one
    runs to the end): left alone by :func:`resolve`, so a typo would be sent as the secret."""
    return [match.group(0) for match in OPENING.finditer(value) if not REFERENCE.fullmatch(match.group(0))]


def absolute_file_references(value: str, base: str) -> str:
    """``value`` with each relative ``${file:path}`` made absolute against the directory
    ``base`` (the TOML loader reads relative paths against its file's directory)."""

    def absolute(match: re.Match[str]) -> str:
        path = match.group("file")
        if path is None or os.path.isabs(path):
            return match.group(0)
        joined = os.path.normpath(os.path.join(base, path))
        return f"${{file:{joined}}}" if "}" not in joined else match.group(0)

    return REFERENCE.sub(absolute, value)


def refusals(value: str) -> list[str]:
    """Why the references in ``value`` may not be resolved (each message names the rule and
    the fix); empty when every one may. Reads no secret, so it is safe wherever rows are saved."""
    found = (_refusal(match) for match in REFERENCE.finditer(value))
    return [message for message in found if message is not None]


def _refusal(match: re.Match[str]) -> str | None:
    if match.group("env"):
        return _env_refusal(match.group("env"))
    return _file_refusal(match.group("file"), _real_path(match.group("file")))


def _env_refusal(name: str) -> str | None:
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in APP_SECRETS):
        return (
            f"${{{name}}} is one of Backupsite's own secrets, which references never read; "
            "put the value in a variable of its own"
        )
    allowed: list[str] = settings.BACKUPSITE_SECRET_ENV
    if allowed and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
        return (
            f"${{{name}}} matches none of the BACKUPSITE_SECRET_ENV patterns ({', '.join(allowed)}); "
            "use a variable that matches one or add a pattern"
        )
    return None


def _file_refusal(path: str, real: str) -> str | None:
    """Why ``path`` may not be read; ``real`` is its real path (symlinks and ``..`` resolved),
    the one that is checked and, when allowed, opened."""
    directories = ", ".join(settings.BACKUPSITE_SECRETS_DIRS) or "none"
    if not real:
        return (
            f"${{file:{path}}} is not an absolute path; write the full path of a file in one of "
            f"the secret directories ({directories})"
        )
    if not any(_inside(real, directory) for directory in _secret_dirs()):
        via = f" (which resolves to {real})" if real != os.path.normpath(path) else ""
        return (
            f"${{file:{path}}}{via} is outside the secret directories ({directories}); "
            "put the file in one of them or set BACKUPSITE_SECRETS_DIRS"
        )
    if _is_app_secret_file(real):
        return (
            f"${{file:{path}}} is a file Backupsite reads one of its own secrets from (a *_FILE "
            "variable names it), which references never read; put the target's secret in a file of its own"
        )
    return None


def _is_app_secret_file(real: str) -> bool:
    """Whether ``real`` is (or is a hard link to) a file named by the ``NAME_FILE`` variable of
    one of the application's own secrets (``SECRET_KEY_FILE``, ``DATABASE_PASSWORD_FILE``...):
    with those mounted in a secret directory (``/run/secrets``), a target's reference could
    otherwise read them and send them to a server its editor chose."""
    try:
        wanted = os.stat(real)
    except OSError:
        wanted = None
    for name, value in os.environ.items():
        if not (name.endswith("_FILE") and value and os.path.isabs(value)):
            continue
        if not any(fnmatch.fnmatchcase(name[: -len("_FILE")], pattern) for pattern in APP_SECRETS):
            continue
        if os.path.realpath(value) == real:
            return True
        if wanted is not None:
            try:
                if os.path.samestat(os.stat(value), wanted):
                    return True
            except OSError:
                continue
    return False


def _real_path(path: str) -> str:
    """``path`` with symlinks and ``..`` resolved; empty for a path that is not absolute (or
    holds a NUL byte), which is refused."""
    return os.path.realpath(path) if os.path.isabs(path) and "\0" not in path else ""


def _secret_dirs() -> list[str]:
    return [os.path.realpath(directory) for directory in settings.BACKUPSITE_SECRETS_DIRS if directory]


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def resolve(value: str, field: str = "") -> str:
    """Expand every reference in ``value``; raise :class:`SecretError` naming a missing or
    refused one (a refusal prefixed with ``field``, e.g. ``"password"``, when given)."""

    def expand(match: re.Match[str]) -> str:
        name, path = match.group("env"), match.group("file")
        real = "" if name else _real_path(path)
        refusal = _env_refusal(name) if name else _file_refusal(path, real)
        if refusal is not None:
            raise SecretError(f"{field}: {refusal}" if field else refusal)
        if name:
            if name not in os.environ:
                raise SecretError(f"environment variable {name} is not set")
            secret = os.environ[name]
            if not _is_text(secret):
                raise SecretError(f"environment variable {name} is not UTF-8 text")
        else:
            secret = _read_secret_file(path, real)
        remember(secret)
        return secret

    return REFERENCE.sub(expand, value)


def _read_secret_file(path: str, real: str) -> str:
    """The text of the regular file ``path``, all of it (a key or a certificate spans lines)
    without its trailing newlines. ``real``, the real path found inside the secret directories,
    is what is opened, not following a symlink swapped in since; without blocking, so a FIFO
    opens at once and is refused by ``fstat``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(real, flags)
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise SecretError(f"secret file {path} cannot be read: {exc.strerror}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise SecretError(
                f"secret file {path} is {_file_kind(mode)}, not a regular file; "
                "point the reference at a file that holds only the secret"
            )
        data = _read_at_most(descriptor, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"secret file {path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_FILE_BYTES:
        raise SecretError(
            f"secret file {path} is larger than {MAX_FILE_BYTES // 1024} KiB; "
            "a secret file holds only the secret"
        )
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not UTF-8 text") from None


def _is_text(value: str) -> bool:
    """False for a value holding bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_at_most(descriptor: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(descriptor, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def resolve_values(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the references in its string values resolved (other values as they
    are); a refusal names the option."""
    return {
        key: resolve(value, field=key) if isinstance(value, str) else value for key, value in options.items()
    }


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
