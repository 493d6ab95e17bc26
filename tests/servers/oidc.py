"""A real OpenID Connect provider (django-oauth-toolkit, ``tests/servers/oidc_provider/``) on a
free loopback port, and what Backupsite needs to use it.

Everything lives in a temp directory: the provider's SQLite database, its RSA signing key, its
Django secret key, the client secret file Backupsite reads and the server's log. The issuer is
``http://127.0.0.1:<port>/o``; Backupsite's live server runs on ``localhost``, so the browser
keeps the two sites' cookies apart.

The provider's users (``USERS``, each with a random password in ``passwords``)::

    rita   groups backup-restorers, staff       vera  group staff
    olga   group team-shop                      nora  group marketing
    admin  group backup-admins  (shares its name with a local account in the tests that need it)

One confidential client (``CLIENT_ID``, secret in ``client_secret_file``) with the
authorization-code grant, PKCE required, RS256 ID tokens, a consent page, and the redirect URIs
``http://localhost/oidc/callback/`` (any port, RFC 8252), the same on 127.0.0.1, and
``http://testserver/oidc/callback/`` (Django's test client).

``oidc_provider`` is a session fixture (import ``oidc_provider_fixture`` into a test module;
each module that does starts its own provider); ``use_oidc`` turns the oidc login mode on in a
test's settings; :meth:`OIDCProvider.sign_in` plays the browser's part at the provider with
``requests`` (login form, consent) for tests without Chromium.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
PROVIDER_SETTINGS = "tests.servers.oidc_provider.settings"
CLIENT_URLS = "tests.servers.oidc_provider.client_urls"
LOGIN_CONTEXT = "backups.access.oidc.views.login_context"
CLIENT_ID = "backupsite"
PROVIDER_NAME = "Test provider"
REDIRECT_URIS = [
    "http://localhost/oidc/callback/",
    "http://127.0.0.1/oidc/callback/",
    "http://testserver/oidc/callback/",
]
USERS = {  # username -> (given name, family name, groups)
    "rita": ("Rita", "Restorer", ["backup-restorers", "staff"]),
    "vera": ("Vera", "Viewer", ["staff"]),
    "olga": ("Olga", "Operator", ["team-shop"]),
    "nora": ("Nora", "Nobody", ["marketing"]),
    "admin": ("Provider", "Admin", ["backup-admins"]),
}
# The role map the tests use with these groups.
ROLE_MAP = {
    "backup-restorers": "Restorer",
    "staff": "Viewer",
    "team-shop": "Operator@shop",
    "backup-admins": "Administrator",
}


def install_problem() -> str | None:
    """Why the provider cannot run here, or None."""
    for module, package in (
        ("oauth2_provider", "django-oauth-toolkit"),
        ("mozilla_django_oidc", "mozilla-django-oidc"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class OIDCProvider:
    base: Path
    port: int
    host: str = "127.0.0.1"
    passwords: dict[str, str] = field(default_factory=dict)  # username -> password
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/o"

    @property
    def client_secret_file(self) -> Path:
        return self.base / "client-secret"

    @property
    def client_secret(self) -> str:
        return self.client_secret_file.read_text().strip()

    @property
    def log(self) -> Path:
        return self.base / "provider.log"

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The OIDC_* variables that point Backupsite at this provider (None drops one)."""
        values: dict[str, str | None] = {
            "OIDC_ISSUER": self.issuer,
            "OIDC_RP_CLIENT_ID": CLIENT_ID,
            "OIDC_RP_CLIENT_SECRET_FILE": str(self.client_secret_file),
            "OIDC_PROVIDER_NAME": PROVIDER_NAME,
            **overrides,
        }
        return {name: value for name, value in values.items() if value is not None}

    def _process_env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "OIDC_"))}
        env.update(
            DJANGO_SETTINGS_MODULE=PROVIDER_SETTINGS,
            OIDC_PROVIDER_HOME=str(self.base),
            OIDC_PROVIDER_ISSUER=self.issuer,
            PYTHONPATH=str(REPO),
        )
        return env

    def _django(self, *arguments: str, stdin: str | None = None) -> None:
        result = subprocess.run(
            [sys.executable, "-m", *arguments],
            cwd=REPO,
            env=self._process_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"test provider: {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")

    def start(self) -> None:
        (self.base / "secret_key").write_text(secrets.token_urlsafe(50))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.base / "signing-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        client_secret = secrets.token_urlsafe(32)
        self.client_secret_file.write_text(client_secret + "\n")
        self.passwords = {name: f"{name}-{secrets.token_urlsafe(9)}" for name in USERS}
        seed = {
            "client": {
                "name": "Backupsite",
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "redirect_uris": REDIRECT_URIS,
            },
            "users": [
                {
                    "username": name,
                    "password": self.passwords[name],
                    "email": f"{name}@example.org",
                    "first_name": given,
                    "last_name": family,
                    "groups": groups,
                }
                for name, (given, family, groups) in USERS.items()
            ],
        }
        self._django("django", "migrate", "--noinput")
        self._django("tests.servers.oidc_provider.seed", stdin=json.dumps(seed))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", "runserver", "--noreload", f"{self.host}:{self.port}"],
                cwd=REPO,
                env=self._process_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, "the test OpenID Connect provider", timeout=60)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"test provider exited ({self.process.returncode}):\n{self.log_text()[-3000:]}"
            )
        try:
            return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sign_in(
        self, authorize_url: str, username: str, password: str | None = None, allow: bool = True
    ) -> str:
        """What a browser does at the provider: follow ``authorize_url`` to the login form, sign
        in as ``username``, answer the consent page (Authorize, or Cancel unless ``allow``).
        Returns where the provider sends the browser back: the redirect URI with the code."""
        session = requests.Session()
        page = session.get(authorize_url, timeout=30)
        page.raise_for_status()
        next_url = parse_qs(urlsplit(page.url).query)["next"][0]
        answer = session.post(
            page.url,
            data={
                "username": username,
                "password": self.passwords[username] if password is None else password,
                "next": next_url,
                "csrfmiddlewaretoken": session.cookies["provider_csrftoken"],
            },
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 302:
            raise AssertionError(f"the provider refused {username}'s password")
        consent = session.get(
            urljoin(page.url, answer.headers["Location"]), allow_redirects=False, timeout=30
        )
        consent.raise_for_status()
        fields = hidden_inputs(consent.text)
        if allow:
            fields["allow"] = "Authorize"
        back = session.post(consent.url, data=fields, allow_redirects=False, timeout=30)
        assert back.status_code == 302, back.text[:500]
        return str(back.headers["Location"])


class _HiddenInputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "input" and attributes.get("type") == "hidden" and attributes.get("name"):
            self.values[str(attributes["name"])] = attributes.get("value") or ""


def hidden_inputs(html: str) -> dict[str, str]:
    """The hidden inputs of a page's forms, by name (the consent form's, with its CSRF token)."""
    parser = _HiddenInputs()
    parser.feed(html)
    return parser.values


@pytest.fixture(scope="session", name="oidc_provider")
def oidc_provider_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The test OpenID Connect provider, for the whole session."""
    problem = install_problem()
    if problem:
        pytest.skip(problem)
    provider = OIDCProvider(tmp_path_factory.mktemp("oidc-provider"), free_port())
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


def use_oidc(
    settings: Any, env: dict[str, str], modes: str = "oidc,local", role_map: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Turn the oidc login mode on in the test's ``settings`` (pytest-django's fixture) as
    BACKUPSITE_AUTH=``modes`` and the OIDC_* variables ``env`` would at start-up: the OIDC
    settings, the backends, the login page's context and the /oidc/ URLs. Returns the OIDC
    settings."""
    from backups.access import modes as login_modes
    from backups.access.oidc import provider, settings_from_env
    from backups.access.rolemap import parse_role_map

    values = settings_from_env(env)
    for name, value in values.items():
        setattr(settings, name, value)
    settings.BACKUPSITE_AUTH = login_modes.parse_modes(modes)
    # Backends of no mode (the login throttle) stay where they are, before the modes' own.
    of_modes = {path for paths in login_modes.BACKENDS.values() for path in paths}
    others = [path for path in settings.AUTHENTICATION_BACKENDS if path not in of_modes]
    settings.AUTHENTICATION_BACKENDS = [*others, *login_modes.backends_for(settings.BACKUPSITE_AUTH)]
    settings.BACKUPSITE_ROLE_MAP = parse_role_map(json.dumps(ROLE_MAP if role_map is None else role_map))
    templates = copy.deepcopy(settings.TEMPLATES)
    templates[0]["OPTIONS"]["context_processors"].append(LOGIN_CONTEXT)
    settings.TEMPLATES = templates
    settings.ROOT_URLCONF = CLIENT_URLS
    provider.forget()  # each test discovers its own provider
    return values
