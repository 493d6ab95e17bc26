"""Operations from the browser: run a target now, verify a backup (quick and deep). Each is a
CSRF-checked POST that queues a Celery task, each needs its permission, and each records who
asked. The tasks run eagerly here (Celery's own in-process mode: the real task, the real run);
the last test queues them on the embedded filesystem broker of ``backupsite_run`` (what
``make run`` serves) and waits for its worker."""

from __future__ import annotations

import http.cookiejar
import re
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from backups import services
from backups.models import Backup, BackupStep
from tests.celery_site import migrated_site
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers import free_port
from tests.test_celery_processes import Site, wait_until, wait_until_up

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password=f"pw-{username}", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="backups", codename__in=codenames)
    )
    return user


@pytest.fixture
def alice(client):
    """A staff user who may see targets and backups, run backups and verify them."""
    user = staff(
        "alice",
        "view_target",
        "view_backup",
        "view_backupstep",
        "view_backupcopy",
        "run_backup",
        "verify_backup",
    )
    client.force_login(user)
    return user


@pytest.fixture
def viewer(client):
    """A staff user who may only look."""
    user = staff("viewer", "view_target", "view_backup")
    client.force_login(user)
    return user


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_it_runs_a_target_now_and_records_who_asked(client, alice, sqlite_target):
    back_to = "/admin/backups/target/?engine__exact=sqlite"
    response = client.post(f"/backups/targets/{sqlite_target.pk}/run/", {"next": back_to})
    assert response.status_code == 302 and response["Location"] == back_to
    backup = Backup.objects.get()
    assert (backup.target, backup.status, backup.initiated_by) == (sqlite_target, "success", "web:alice")
    assert [step.name for step in backup.steps.all()][:2] == ["validate", "dump"]  # the run recorded itself
    assert messages_of(client.get(back_to)) == [f"Backup {backup.pk} of app-db queued"]


def test_it_goes_back_to_the_admin_index_without_a_safe_next(client, alice, sqlite_target):
    url = f"/backups/targets/{sqlite_target.pk}/run/"
    for unsafe in ("https://evil.example/admin/", "//evil.example/", "javascript:alert(1)", ""):
        response = client.post(url, {"next": unsafe})
        assert response.status_code == 302 and response["Location"] == "/admin/", unsafe
    assert Backup.objects.count() == 4


def test_it_verifies_a_backup_quick_and_deep(client, alice, sqlite_target):
    backup = services.run_backup(sqlite_target)
    Backup.objects.filter(pk=backup.pk).update(verified=False, verified_at=None)
    page = f"/admin/backups/backup/{backup.pk}/change/"

    response = client.post(f"/backups/{backup.pk}/verify/", {"deep": "0", "next": page})
    assert response.status_code == 302 and response["Location"] == page
    backup.refresh_from_db()
    assert backup.verified and backup.verified_at is not None
    quick = BackupStep.objects.filter(backup=backup, name="verify").latest("id")
    assert quick.status == "success" and "bytes decompressed" in quick.message, quick.message

    response = client.post(f"/backups/{backup.pk}/verify/", {"deep": "1"}, follow=True)
    assert response.redirect_chain == [(page, 302)]  # no next: the backup's own page
    deep = BackupStep.objects.filter(backup=backup, name="verify").latest("id")
    assert deep.pk != quick.pk and deep.status == "success", deep.message
    assert "integrity_check ok" in deep.message  # SQLite's trial restore, not only the bytes
    assert messages_of(response)[-1] == f"Deep verification of {backup} queued"
    # The result shows on the backup's page: the steps and the verified state.
    compact = re.sub(r"\s+", "", response.content.decode())
    assert compact.count('<tdclass="field-name"><p>verify</p></td>') == 3  # the run's own, quick, deep
    assert re.search(r"Verifiedat:</label><divclass=\"readonly\"><timedatetime=", compact)


def test_it_marks_a_backup_whose_copy_changed_corrupt(client, alice, sqlite_target, storage_dir):
    backup = services.run_backup(sqlite_target)
    stored = storage_dir / backup.copies.get().path
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    client.post(f"/backups/{backup.pk}/verify/", {"deep": "0"})
    backup.refresh_from_db()
    assert backup.status == "corrupt" and not backup.verified
    step = BackupStep.objects.filter(backup=backup, name="verify").latest("id")
    assert step.status == "failed" and "checksum mismatch" in step.message


def test_it_refuses_each_operation_without_its_permission(client, viewer, sqlite_target):
    backup = services.run_backup(sqlite_target)
    steps = BackupStep.objects.count()
    assert client.post(f"/backups/targets/{sqlite_target.pk}/run/").status_code == 403
    assert client.post(f"/backups/{backup.pk}/verify/", {"deep": "1"}).status_code == 403
    assert Backup.objects.count() == 1 and BackupStep.objects.count() == steps
    # One permission does not open the other operation.
    viewer.user_permissions.add(Permission.objects.get(codename="run_backup"))
    client.force_login(User.objects.get(pk=viewer.pk))
    assert client.post(f"/backups/{backup.pk}/verify/").status_code == 403
    assert client.post(f"/backups/targets/{sqlite_target.pk}/run/").status_code == 302
    assert Backup.objects.count() == 2


def test_it_sends_anonymous_visitors_to_log_in_and_refuses_get(client, sqlite_target):
    backup = services.run_backup(sqlite_target)
    for url in (f"/backups/targets/{sqlite_target.pk}/run/", f"/backups/{backup.pk}/verify/"):
        response = client.post(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="pw-root"))
    assert admin.get(f"/backups/targets/{sqlite_target.pk}/run/").status_code == 405
    assert admin.get(f"/backups/{backup.pk}/verify/").status_code == 405
    assert admin.post("/backups/targets/999/run/").status_code == 404
    assert admin.post("/backups/999/verify/").status_code == 404
    assert Backup.objects.count() == 1


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def test_it_needs_the_csrf_token_of_the_page(alice, sqlite_target):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    url = f"/backups/targets/{sqlite_target.pk}/run/"
    assert browser.post(url).status_code == 403
    assert not Backup.objects.exists()
    page = browser.get(f"/admin/backups/target/{sqlite_target.pk}/change/").content.decode()
    assert browser.post(url, {"csrfmiddlewaretoken": csrf_token(page)}).status_code == 302
    assert Backup.objects.get().initiated_by == "web:alice"


def test_it_shows_the_buttons_only_to_users_with_the_permission(client, alice, sqlite_target):
    backup = services.run_backup(sqlite_target)
    run_form = f'action="/backups/targets/{sqlite_target.pk}/run/"'
    run_button = f'formaction="/backups/targets/{sqlite_target.pk}/run/"'
    verify_form = f'action="/backups/{backup.pk}/verify/"'
    download = f'href="/backups/{backup.pk}/download/"'
    retention = f'href="/admin/backups/target/{sqlite_target.pk}/change/#retention-preview"'

    target_page = client.get(f"/admin/backups/target/{sqlite_target.pk}/change/").content.decode()
    assert run_form in target_page and ">Run now</button>" in target_page
    targets = client.get("/admin/backups/target/").content.decode()
    assert run_button in targets and 'name="next" value="/admin/backups/target/"' in targets
    backup_page = client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert verify_form in backup_page
    assert (
        '<button type="submit" name="deep" value="0"' in backup_page
        and ">Deep verify</button>" in backup_page
    )
    assert retention in backup_page
    assert download not in backup_page  # alice may not download

    viewer = staff("viewer", "view_target", "view_backup", "download_backup")
    client.force_login(viewer)
    target_page = client.get(f"/admin/backups/target/{sqlite_target.pk}/change/").content.decode()
    assert run_form not in target_page and "Run now" not in target_page
    assert run_button not in client.get("/admin/backups/target/").content.decode()
    backup_page = client.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert verify_form not in backup_page and "Deep verify" not in backup_page
    assert download in backup_page and retention in backup_page


def test_it_offers_verify_only_for_backups_that_can_be_verified(client, alice, sqlite_target, sqlite_source):
    good = services.run_backup(sqlite_target)
    sqlite_source.unlink()
    failed = services.run_backup(sqlite_target)
    assert "Deep verify" not in client.get(f"/admin/backups/backup/{failed.pk}/change/").content.decode()
    Backup.objects.filter(pk=good.pk).update(deleted_at=good.started_at)
    assert "Deep verify" not in client.get(f"/admin/backups/backup/{good.pk}/change/").content.decode()
    # Asked anyway (a stale page): refused by the verification itself, nothing recorded.
    steps = BackupStep.objects.count()
    assert client.post(f"/backups/{failed.pk}/verify/").status_code == 302
    assert BackupStep.objects.count() == steps
    assert Backup.objects.get(pk=failed.pk).status == "failed"


# -- under backupsite_run, with the embedded filesystem broker ---------------------------------


class Browser:
    """A logged-in browser session against a real server: cookies, CSRF tokens, redirects."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict[str, str], page: str) -> str:
        """Submit ``fields`` with the CSRF token of ``page`` (as the page's form does)."""
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf_token(page), **fields}).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})
        with self.opener.open(request, timeout=30) as response:
            return response.read().decode()


def catalog_row(site: Site, query: str, *args: object) -> tuple | None:
    with sqlite3.connect(site.catalog, timeout=30) as db:
        row = db.execute(query, args).fetchone()
    db.close()
    return row


@pytest.fixture
def served_site(tmp_path: Path):
    """``backupsite_run`` (web, worker, beat) on the filesystem broker, one SQLite target and
    the superuser alice."""
    site = migrated_site(tmp_path / "home", "filesystem://")
    write_config(
        tmp_path / "site.toml",
        storage_dir=tmp_path / "backups",
        targets={
            "app-db": {
                "engine": "sqlite",
                "database": fill_sqlite(tmp_path / "app.sqlite3", rows=50),
                "storages": ["local"],
            }
        },
    )
    site.manage("backup_config", "apply", str(tmp_path / "site.toml"))
    created = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "createsuperuser", "--noinput", "--username", "alice", "--email", "alice@example.com"],
        cwd=REPO, env={**site.env, "DJANGO_SUPERUSER_PASSWORD": "pw-alice"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    site.web_port = free_port()
    try:
        site.backupsite_run("--bind", f"127.0.0.1:{site.web_port}")
        wait_until_up(site)
        yield site
    finally:
        site.stop_all()


@pytest.mark.slow
def test_it_runs_and_verifies_through_the_worker_of_backupsite_run(served_site):
    site = served_site
    (target_id,) = catalog_row(site, "SELECT id FROM backups_target WHERE name = 'app-db'") or (None,)
    browser = Browser(f"http://127.0.0.1:{site.web_port}")
    wait_until(lambda: _answers(browser), "the web server", 30)
    login = browser.get("/admin/login/")
    browser.post("/admin/login/", {"username": "alice", "password": "pw-alice", "next": "/admin/"}, login)

    page_path = f"/admin/backups/target/{target_id}/change/"
    page = browser.get(page_path)
    after = browser.post(f"/backups/targets/{target_id}/run/", {"next": page_path}, page)
    assert re.search(r"Backup \d+ of app-db queued", after)

    def finished_backup() -> tuple | None:
        row = catalog_row(
            site, "SELECT id, status FROM backup_history WHERE initiated_by = 'web:alice' ORDER BY id DESC"
        )
        return row if row and row[1] not in ("pending", "running") else None

    backup_id, status = wait_until(finished_backup, "the queued backup to finish in the worker", 60)
    assert status == "success", site.log("backupsite_run")

    backup_page = f"/admin/backups/backup/{backup_id}/change/"
    page = browser.get(backup_page)
    after = browser.post(f"/backups/{backup_id}/verify/", {"deep": "1", "next": backup_page}, page)
    assert "Deep verification of" in after

    def verify_steps() -> int | None:
        (count,) = catalog_row(
            site,
            "SELECT count(*) FROM backups_backupstep WHERE backup_id = ? AND name = 'verify' AND status = 'success'",
            backup_id,
        ) or (0,)
        return count if count >= 2 else None  # the run's own verify step, then the deep one

    wait_until(verify_steps, "the queued deep verification to finish in the worker", 60)

    def verified() -> bool | None:  # saved just after its step ends: read it once it lands
        return (
            catalog_row(site, "SELECT verified FROM backup_history WHERE id = ?", backup_id) == (1,) or None
        )

    wait_until(verified, "the deep verification to mark the backup verified", 10)


def _answers(browser: Browser) -> bool:
    try:
        browser.get("/admin/login/")
    except OSError:
        return False
    return True
