"""Browser fixtures: one headless Chromium for the session, the live server's URL, staff users.

- ``browser``: a session-scoped ``selenium.webdriver.Chrome`` (headless, 1400x1000); cookies are
  cleared before each test that uses it. Skipped only where Chromium or chromedriver is missing.
- ``live_url``: the base URL (``http://localhost:<port>``) of pytest-django's ``live_server``,
  with a transactional test database the server thread sees.
- ``staff_user(perms=[...], username=..., password=...)``: a staff user holding the permissions
  that exist among ``"app_label.codename"`` names (missing ones are skipped with a warning).
- Log in with ``tests.browser.helpers.login(browser, live_server, username, password)``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator

import pytest
from django.contrib.auth.models import Permission, User
from pytest_django.live_server_helper import LiveServer
from selenium import webdriver

from tests.browser.helpers import STAFF_PASSWORD, missing_browser, start_chromium
from tests.browser.worker import celery_worker  # noqa: F401  (a fixture: a real Celery worker in a thread)

_usernames = (f"staff{number}" for number in itertools.count(1))


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _fresh_cookies(request: pytest.FixtureRequest) -> None:
    """Each test starts logged out, although the browser lives for the whole session."""
    if "browser" in request.fixturenames:
        driver: webdriver.Chrome = request.getfixturevalue("browser")
        driver.execute_cdp_cmd("Network.clearBrowserCookies", {})


@pytest.fixture
def live_url(live_server: LiveServer, transactional_db: None) -> str:
    return live_server.url


@pytest.fixture
def staff_user(db: None) -> Callable[..., User]:
    def create(perms: Iterable[str] = (), *, username: str = "", password: str = STAFF_PASSWORD) -> User:
        user = User.objects.create_user(username or next(_usernames), password=password, is_staff=True)
        for name in perms:
            app_label, _, codename = name.partition(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is None:
                warnings.warn(f"staff_user: no permission {name!r} yet; skipped", stacklevel=2)
                continue
            user.user_permissions.add(permission)
        return user

    return create
