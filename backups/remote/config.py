"""Where the site is and which token to present.

- The site: ``--url`` or ``BACKUPCTL_URL``, the address people open in a browser
  (``https://backups.example.net``); ``/api/v1/`` is appended (and tolerated if already there).
- The token: ``--token-file PATH``, else ``BACKUPCTL_TOKEN``, else ``BACKUPCTL_TOKEN_FILE``. There
  is deliberately no ``--token`` option: argv is visible to every user of the machine (``ps``).
  A token file that group or others may read is used, with a warning.

The token is kept out of ``repr`` and out of every message built here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from backups.remote.errors import CtlError

URL_ENV = "BACKUPCTL_URL"
TOKEN_ENV = "BACKUPCTL_TOKEN"  # noqa: S105  (the variable's name, not a secret)
TOKEN_FILE_ENV = "BACKUPCTL_TOKEN_FILE"  # noqa: S105
API_PATH = "/api/v1/"
# What an HTTP header value may hold; a token is printable ASCII without spaces.
_TOKEN_SHAPE = re.compile(r"[\x21-\x7e]+")

NO_TOKEN = (
    f"no API token: set {TOKEN_ENV}, or {TOKEN_FILE_ENV} to a file holding it (or pass --token-file); "
    "create one in the admin (API tokens) or with `manage.py api_token create --user YOU --expires 90d`"
)


@dataclass(frozen=True)
class Settings:
    api_url: str  # ends with /api/v1/
    token: str | None = field(repr=False)
    token_source: str = ""  # where the token came from, to name it in messages
    warnings: tuple[str, ...] = ()


def load(url: str | None, token_file: str | None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the flags (``None`` when not given) and the environment."""
    env = os.environ if environ is None else environ
    source = "--url" if url else URL_ENV
    api_url = api_root(url or env.get(URL_ENV, ""), source)
    warnings: list[str] = []
    token, token_source = _token(token_file, env, warnings)
    if token is not None and _plain_http_elsewhere(api_url):
        host = urllib.parse.urlsplit(api_url).hostname
        warnings.append(
            f"the token goes to {host} over plain http: anyone on the way can read it; use https://"
        )
    return Settings(api_url=api_url, token=token, token_source=token_source, warnings=tuple(warnings))


def api_root(text: str, source: str = URL_ENV) -> str:
    """``http://host:8000`` -> ``http://host:8000/api/v1/``; a usage error naming ``source``
    for anything that is not an http(s) address of a site."""
    text = text.strip()
    if not text:
        raise CtlError(
            f"{URL_ENV} is not set: set it to the site's address, e.g. https://backups.example.net "
            "(or pass --url)"
        )
    parts = urllib.parse.urlsplit(text)
    if parts.username or parts.password:  # not echoed: it holds a password
        raise CtlError(
            f"{source}: the address holds a user or password; leave them out and put the token in {TOKEN_ENV}"
        )
    shown = text if len(text) <= 80 else text[:77] + "..."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CtlError(
            f"{source}: {shown!r} is not an http:// or https:// address, e.g. https://backups.example.net"
        )
    if parts.query or parts.fragment:
        raise CtlError(f"{source}: {shown!r} has a query or fragment; give the site's address only")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError:
        raise CtlError(f"{source}: {shown!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH.rstrip("/")):
        path = path[: -len(API_PATH.rstrip("/"))]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + API_PATH, "", ""))


def site_root(api_url: str) -> str:
    return api_url[: -len(API_PATH)] + "/"


def _token(token_file: str | None, env: Mapping[str, str], warnings: list[str]) -> tuple[str | None, str]:
    if token_file:
        return _read_token_file(token_file, "--token-file", warnings), "--token-file"
    if env.get(TOKEN_ENV):
        return _checked(env[TOKEN_ENV].strip(), TOKEN_ENV), TOKEN_ENV
    if env.get(TOKEN_FILE_ENV):
        return _read_token_file(env[TOKEN_FILE_ENV], TOKEN_FILE_ENV, warnings), TOKEN_FILE_ENV
    return None, ""


def _read_token_file(path: str, source: str, warnings: list[str]) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read(4096)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CtlError(f"{source}: cannot read the token file {path}: {reason}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(
            f"the token file {path} may be read by group or others (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )
    return _checked(text.strip(), f"{source} ({path})")


def _checked(token: str, source: str) -> str:
    if not token:
        raise CtlError(
            f"{source}: the token is empty; put the token printed by `manage.py api_token create` there"
        )
    if not _TOKEN_SHAPE.fullmatch(token):  # not echoed: it may be a real token with a stray byte
        raise CtlError(
            f"{source}: the token holds spaces, control or non-ASCII characters; a token looks like bks_<id>_<secret>"
        )
    return token


def _plain_http_elsewhere(api_url: str) -> bool:
    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
