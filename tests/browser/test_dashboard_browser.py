"""The dashboard in Chromium against a live server: badges, Run now with a live progress bar and
the row turning to a fresh success without a reload, and a user without the permission."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from backups import services
from backups.models import Backup, BackupStatus, Storage, Target
from tests.browser.helpers import STAFF_PASSWORD, login

pytestmark = pytest.mark.slow
OPERATOR = ("backups.view_target", "backups.view_backup", "backups.run_backup", "backups.verify_backup")


def big_sqlite(path: Path, megabytes: int) -> Path:
    """A database of incompressible rows, so the backup takes long enough to watch."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    db.executemany("INSERT INTO blobs (data) VALUES (randomblob(1048576))", [()] * megabytes)
    db.commit()
    db.close()
    return path


@pytest.fixture
def targets(live_url: str, tmp_path: Path) -> dict[str, Target]:
    storage = Storage.objects.create(name="local", kind="local", options={"path": str(tmp_path / "store")})
    made = {}
    for name, size in (("big-db", 120), ("small-db", 1)):
        target = Target.objects.create(
            name=name, engine="sqlite", database=str(big_sqlite(tmp_path / f"{name}.sqlite3", size))
        )
        target.storages.add(storage)
        made[name] = target
    gone = Target.objects.create(name="gone-db", engine="sqlite", database=str(tmp_path / "missing.sqlite3"))
    gone.storages.add(storage)
    made["gone-db"] = gone
    return made


def row_status(browser, target: Target) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'tr[data-target="{target.pk}"]').get_attribute(
        "data-status"
    )


def test_it_lists_the_targets_with_their_badges(browser, live_url, targets, staff_user):
    assert services.run_backup(targets["small-db"]).status == BackupStatus.SUCCESS
    assert services.run_backup(targets["gone-db"]).status == BackupStatus.FAILED
    user = staff_user(OPERATOR)
    login(browser, live_url, user.username, STAFF_PASSWORD)
    browser.get(f"{live_url}/admin/")

    assert row_status(browser, targets["small-db"]) == "OK"
    assert row_status(browser, targets["gone-db"]) == "FAILING"
    assert row_status(browser, targets["big-db"]) == "NEVER RUN"
    badges = [badge.text for badge in browser.find_elements(By.CSS_SELECTOR, "#targets .badge")]
    assert sorted(badges) == ["FAILING", "NEVER RUN", "OK"]
    assert (
        "does not exist"
        in browser.find_element(By.CSS_SELECTOR, f'tr[data-target="{targets["gone-db"].pk}"]').text
    )


def test_it_runs_a_backup_with_a_live_progress_bar(browser, live_url, targets, staff_user, celery_worker):
    user = staff_user(OPERATOR)
    login(browser, live_url, user.username, STAFF_PASSWORD)
    browser.get(f"{live_url}/admin/")
    big = targets["big-db"]
    row = f'tr[data-target="{big.pk}"]'
    browser.find_element(By.CSS_SELECTOR, f"{row} button[type=submit]").click()

    # The progress box and the table are redrawn by the page's script every 1.5 s: read what an
    # element says in the same step that finds it, and look again when it was just replaced.
    stale = (StaleElementReferenceException,)

    def progress(driver):
        bars = driver.find_elements(By.CSS_SELECTOR, '#running [data-key^="backup-"] progress')
        texts = driver.find_elements(By.CSS_SELECTOR, "#running .progress-text")
        return bars and texts and (bars[0].get_attribute("aria-label"), texts[0].text)

    label, text = WebDriverWait(browser, 60, ignored_exceptions=stale).until(progress)
    assert label == "full backup of big-db" and "elapsed" in text
    WebDriverWait(browser, 120, ignored_exceptions=stale).until(
        lambda driver: row_status(driver, big) == "OK"
    )
    cells = WebDriverWait(browser, 10, ignored_exceptions=stale).until(
        lambda driver: len(driver.find_elements(By.CSS_SELECTOR, f"{row} .strip i.success")) or None
    )
    assert cells == 1  # the fresh success, drawn without a manual reload
    backup = Backup.objects.get(target=big)
    assert backup.status == BackupStatus.SUCCESS and backup.initiated_by == f"web:{user.username}"
    assert (backup.raw_size or 0) > 100 * 1024 * 1024


def test_it_shows_no_run_button_without_the_permission_and_refuses_the_post(
    browser, live_url, targets, staff_user
):
    user = staff_user(("backups.view_target", "backups.view_backup"))
    login(browser, live_url, user.username, STAFF_PASSWORD)
    browser.get(f"{live_url}/admin/")
    small = targets["small-db"]
    assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-target="{small.pk}"]')
    assert not browser.find_elements(By.XPATH, "//button[normalize-space()='Run now']")

    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const token = document.cookie.split("; ").find(c => c.startsWith("csrftoken=")).split("=")[1];
        fetch(arguments[0], {method: "POST", headers: {"X-CSRFToken": token}, credentials: "same-origin"})
          .then(r => done(r.status));
        """,
        f"{live_url}/backups/targets/{small.pk}/run/",
    )
    assert status == 403
    assert not Backup.objects.filter(target=small).exists()


def test_it_verifies_a_backup_from_its_page(browser, live_url, targets, staff_user, celery_worker):
    backup = services.run_backup(targets["small-db"])
    assert backup.status == BackupStatus.SUCCESS and not backup.verified
    user = staff_user(OPERATOR)
    login(browser, live_url, user.username, STAFF_PASSWORD)
    browser.get(f"{live_url}/admin/backups/backup/{backup.pk}/change/")
    browser.find_element(By.XPATH, "//button[normalize-space()='Deep verify']").click()
    WebDriverWait(browser, 30).until(lambda driver: "queued" in driver.page_source)

    def verified(_: object) -> bool:
        backup.refresh_from_db()
        return backup.verified

    WebDriverWait(browser, 120, poll_frequency=0.5).until(verified)
    browser.refresh()
    steps = browser.find_element(By.ID, "content-main").text
    assert "verify" in steps.lower() and backup.verified_at is not None
