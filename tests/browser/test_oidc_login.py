"""OpenID Connect login in Chromium: the admin's login page -> "Log in with Test provider" -> the
provider's login form -> its consent page -> back on the dashboard, with the roles the groups
claim gives through BACKUPSITE_ROLE_MAP. The provider is a real one (django-oauth-toolkit,
tests/servers/oidc.py), its users and groups are listed there."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from backups import services
from backups.models import AuditEvent, Backup, BackupStatus, Storage, Target
from tests.browser.helpers import PAGE_TIMEOUT
from tests.conftest import fill_sqlite
from tests.servers.oidc import (
    PROVIDER_NAME,
    OIDCProvider,
    oidc_provider_fixture,  # noqa: F401  (the oidc_provider fixture)
    use_oidc,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def site(live_url: str, oidc_provider: OIDCProvider, settings) -> str:
    """The live server's URL, with BACKUPSITE_AUTH=oidc,local pointed at the test provider."""
    use_oidc(settings, oidc_provider.env())
    return live_url


@pytest.fixture
def backup(live_url: str, tmp_path: Path) -> Backup:
    storage = Storage.objects.create(name="local", kind="local", options={"path": str(tmp_path / "store")})
    target = Target.objects.create(
        name="app-db", engine="sqlite", database=str(fill_sqlite(tmp_path / "app.sqlite3"))
    )
    target.storages.add(storage)
    done = services.run_backup(target)
    assert done.status == BackupStatus.SUCCESS
    return done


def restore_link(backup: Backup) -> tuple[str, str]:
    """The backup page's "Restore…" object tool (shown in capitals: found by its address)."""
    return By.CSS_SELECTOR, f'a[href="{reverse("restores:restore", args=[backup.pk])}"]'


def wait(browser: webdriver.Chrome, condition, what: str) -> None:
    WebDriverWait(browser, PAGE_TIMEOUT).until(condition, f"waiting for {what}")


def log_in_with_the_provider(
    browser: webdriver.Chrome, site: str, provider: OIDCProvider, username: str
) -> None:
    """From the admin's login page through the provider's login form and consent page, up to
    the moment the provider sends the browser back to Backupsite."""
    browser.get(f"{site}/admin/login/")
    button = browser.find_element(By.CSS_SELECTOR, "#oidc-login a")
    assert button.text == f"Log in with {PROVIDER_NAME}"
    button.click()

    wait(
        browser,
        lambda driver: driver.find_elements(By.ID, "provider-login-form"),
        "the provider's login form",
    )
    assert browser.current_url.startswith(f"{provider.url}/accounts/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(provider.passwords[username])
    browser.find_element(By.CSS_SELECTOR, "#provider-login-form [type=submit]").click()

    wait(browser, lambda driver: driver.find_elements(By.ID, "authorizationForm"), "the consent page")
    browser.find_element(By.CSS_SELECTOR, "#authorizationForm input[name=allow]").click()
    wait(browser, lambda driver: driver.current_url.startswith(site), "the way back to Backupsite")


def test_it_logs_a_restorer_in_through_the_provider_and_out_again(
    browser, site, oidc_provider, backup
) -> None:
    log_in_with_the_provider(browser, site, oidc_provider, "rita")

    wait(browser, lambda driver: driver.current_url == f"{site}/admin/", "the dashboard")
    assert "rita" in browser.find_element(By.ID, "user-tools").text.lower()
    browser.get(f"{site}/admin/backups/backup/{backup.pk}/change/")
    assert browser.find_elements(*restore_link(backup))  # the groups claim made rita a Restorer
    login = AuditEvent.objects.get(action="login.success")
    assert (login.username, login.auth_method, login.outcome) == ("rita", "oidc", "success")

    browser.find_element(By.CSS_SELECTOR, "#logout-form [type=submit]").click()
    wait(browser, lambda driver: "/admin/logout/" in driver.current_url, "the logged-out page")
    browser.get(f"{site}/admin/")
    assert "/admin/login/" in browser.current_url
    logout = AuditEvent.objects.get(action="logout")
    assert (logout.username, logout.auth_method) == ("rita", "oidc")


def test_it_shows_a_viewer_no_restore_link(browser, site, oidc_provider, backup) -> None:
    log_in_with_the_provider(browser, site, oidc_provider, "vera")

    wait(browser, lambda driver: driver.current_url == f"{site}/admin/", "the dashboard")
    browser.get(f"{site}/admin/backups/backup/{backup.pk}/change/")
    assert "app-db" in browser.find_element(By.ID, "content").text
    assert not browser.find_elements(*restore_link(backup))


def test_it_refuses_the_admin_to_a_user_whose_groups_give_no_role(browser, site, oidc_provider) -> None:
    log_in_with_the_provider(browser, site, oidc_provider, "nora")

    wait(browser, lambda driver: driver.current_url == f"{site}/admin/login/", "the login page")
    error = browser.find_element(By.CSS_SELECTOR, ".messagelist .error").text
    assert "as nora, but none of your groups gives a role in Backupsite" in error
    browser.get(f"{site}/admin/")
    assert "/admin/login/" in browser.current_url
    failure = AuditEvent.objects.get(action="login.failure")
    assert (failure.username, failure.outcome) == ("nora", "failure")
    assert not AuditEvent.objects.filter(action="login.success").exists()
