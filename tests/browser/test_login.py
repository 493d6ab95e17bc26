"""Logging into the admin in a real browser."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser.helpers import (
    STAFF_PASSWORD,
    WINDOW_SIZE,
    LoginRefused,
    login,
    png_size,
    save_screenshot,
)

pytestmark = pytest.mark.slow


def test_it_logs_in_and_shows_the_admin_index(
    browser: webdriver.Chrome, live_url: str, staff_user: Callable[..., User], tmp_path: Path
) -> None:
    user = staff_user(["backups.view_backup"])

    login(browser, live_url, user.username, STAFF_PASSWORD)

    assert browser.current_url == f"{live_url}/admin/"
    assert "Backupsite" in browser.title
    assert user.username in browser.find_element(By.ID, "user-tools").text.lower()
    assert browser.find_elements(By.CSS_SELECTOR, 'a[href="/admin/backups/backup/"]')
    shot = save_screenshot(browser, tmp_path / "admin-index.png")
    assert shot.stat().st_size > 0
    assert png_size(shot) == WINDOW_SIZE


def test_it_refuses_a_wrong_password(
    browser: webdriver.Chrome, live_url: str, staff_user: Callable[..., User]
) -> None:
    user = staff_user()

    with pytest.raises(LoginRefused, match="correct username and password"):
        login(browser, live_url, user.username, "not-the-password")

    browser.get(f"{live_url}/admin/")
    assert "/admin/login/" in browser.current_url
