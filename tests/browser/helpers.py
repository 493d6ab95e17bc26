"""Start Debian's Chromium under Selenium, log in through the admin's form, save screenshots.

Browsers cannot be downloaded here, so Selenium Manager must never run: the driver's path is
given to the Service and the browser's to the options, and ``SE_AVOID_STATS`` stops Selenium's
usage statistics from reaching for the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_django.live_server_helper import LiveServer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = (1400, 1000)
PAGE_TIMEOUT = 30  # seconds for a page load or a form's answer
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STAFF_PASSWORD = "browser-test-password"  # staff_user's default, in a throwaway test database


class LoginRefused(AssertionError):
    """The admin answered the login form with an error (the message is the page's error note)."""


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when Chromium and its driver are installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; `make test` does)"
    )


def start_chromium(user_data_dir: Path) -> webdriver.Chrome:
    """A headless Chromium with a fresh profile in ``user_data_dir`` and a 1400x1000 window."""
    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--disable-background-networking",
        "--no-first-run",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    # Headless Chromium still takes its toolbars' height from the window: grow the window so the
    # page itself (and so each screenshot) is exactly WINDOW_SIZE.
    inner_width, inner_height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    driver.set_window_size(
        WINDOW_SIZE[0] + outer["width"] - inner_width, WINDOW_SIZE[1] + outer["height"] - inner_height
    )
    return driver


def login(browser: webdriver.Chrome, live_server: LiveServer | str, username: str, password: str) -> None:
    """Log in through the real form at /admin/login/ of ``live_server`` (the fixture or a base
    URL). Returns on the page the admin redirects to; raises LoginRefused with the error note."""
    base_url = live_server.url if isinstance(live_server, LiveServer) else live_server.rstrip("/")
    browser.get(f"{base_url}/admin/login/")
    if not browser.find_elements(By.ID, "id_username"):
        # A session from an earlier login: the admin skips its form for a logged-in user.
        browser.delete_all_cookies()
        browser.get(f"{base_url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda driver: (
            "/admin/login/" not in driver.current_url or driver.find_elements(By.CSS_SELECTOR, ".errornote")
        )
    )
    errors = browser.find_elements(By.CSS_SELECTOR, ".errornote")
    if errors:
        raise LoginRefused(errors[0].text)


def save_screenshot(browser: webdriver.Chrome, path: Path) -> Path:
    """The visible page as a PNG at ``path``; raises if Chromium wrote nothing usable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(browser.get_screenshot_as_png())
    if not path.read_bytes().startswith(PNG_SIGNATURE):
        raise RuntimeError(f"{path}: Chromium did not write a PNG")
    return path


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")
