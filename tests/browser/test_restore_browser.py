"""Restoring from the browser in Chromium: the confirmation page refuses a wrong typed name and
changes nothing; with the right one a real Celery worker restores into a second SQLite target,
and the restored data equals the source."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from backups import services
from backups.models import BackupStatus, Storage, Target
from restores.models import RestoreLog, RestoreStatus
from tests.browser.helpers import STAFF_PASSWORD, login
from tests.conftest import fill_sqlite, sqlite_rows

pytestmark = pytest.mark.slow
RESTORER = (
    "backups.view_target",
    "backups.view_backup",
    "restores.view_restorelog",
    "restores.restore_backup",
)


@pytest.fixture
def pair(live_url: str, tmp_path: Path) -> tuple[Target, Target]:
    storage = Storage.objects.create(name="local", kind="local", options={"path": str(tmp_path / "store")})
    source = Target.objects.create(
        name="app-db", engine="sqlite", database=str(fill_sqlite(tmp_path / "app.sqlite3", rows=500))
    )
    copy = Target.objects.create(name="app-db-copy", engine="sqlite", database=str(tmp_path / "copy.sqlite3"))
    for target in (source, copy):
        target.storages.add(storage)
    return source, copy


def open_restore_page(browser, live_url: str, backup_pk: int, destination: Target) -> None:
    browser.get(f"{live_url}/restores/backups/{backup_pk}/restore/")
    Select(browser.find_element(By.ID, "id_to")).select_by_value(str(destination.pk))
    WebDriverWait(browser, 30).until(
        lambda driver: (
            f"?to={destination.pk}" in driver.current_url or f"to={destination.pk}" in driver.current_url
        )
    )


def test_it_refuses_a_wrong_name_and_restores_with_the_right_one(
    browser, live_url, pair, staff_user, celery_worker
):
    source, copy = pair
    backup = services.run_backup(source)
    assert backup.status == BackupStatus.SUCCESS
    user = staff_user(RESTORER)
    login(browser, live_url, user.username, STAFF_PASSWORD)

    open_restore_page(browser, live_url, backup.pk, copy)
    assert "app-db-copy" in browser.find_element(By.CSS_SELECTOR, ".restore-warning").text
    browser.find_element(By.ID, "id_confirm").send_keys("app-db")  # the source's name, not the destination's
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value=Restore]").click()
    WebDriverWait(browser, 30).until(lambda driver: "nothing was restored" in driver.page_source)
    assert not RestoreLog.objects.exists() and not Path(copy.database).exists()

    open_restore_page(browser, live_url, backup.pk, copy)
    browser.find_element(By.ID, "id_confirm").send_keys("app-db-copy")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value=Restore]").click()
    WebDriverWait(browser, 30).until(lambda driver: "/admin/restores/restorelog/" in driver.current_url)
    log = RestoreLog.objects.get()
    assert log.confirmed_by == f"web:{user.username}" and log.destination == copy

    def finished(_: object) -> bool:
        log.refresh_from_db()
        return log.status != RestoreStatus.RUNNING

    WebDriverWait(browser, 120, poll_frequency=0.5).until(finished)
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert sqlite_rows(Path(copy.database)) == sqlite_rows(Path(source.database))


def test_it_refuses_the_restore_page_without_the_permission(browser, live_url, pair, staff_user):
    source, _ = pair
    backup = services.run_backup(source)
    user = staff_user(("backups.view_target", "backups.view_backup"))
    login(browser, live_url, user.username, STAFF_PASSWORD)
    browser.get(f"{live_url}/restores/backups/{backup.pk}/restore/")
    assert "403" in browser.title or "Forbidden" in browser.page_source
    assert not RestoreLog.objects.exists()


def test_it_links_the_restore_page_from_the_backup_page(browser, live_url, pair, staff_user):
    source, _ = pair
    backup = services.run_backup(source)
    user = staff_user(RESTORER)
    login(browser, live_url, user.username, STAFF_PASSWORD)
    browser.get(f"{live_url}/admin/backups/backup/{backup.pk}/change/")
    browser.find_element(
        By.CSS_SELECTOR, f'.object-tools a[href$="/restores/backups/{backup.pk}/restore/"]'
    ).click()
    WebDriverWait(browser, 30).until(
        lambda driver: f"/restores/backups/{backup.pk}/restore/" in driver.current_url
    )
    assert browser.find_element(By.ID, "id_confirm")
