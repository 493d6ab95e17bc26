"""``make screenshots``: docs/screenshots/*.png of the admin in headless Chromium, 1400x1000.

Builds a demo catalog in a throwaway BACKUPSITE_HOME: ``migrate``, ``backupsite_demo`` (the
``admin`` user, password from BACKUPSITE_ADMIN_PASSWORD), examples/demo.toml re-pointed at that
home (``backupsite_demo`` applies it only under ./var) and two rounds of ``backup_create``. Then
serves it with ``manage.py runserver`` on a free loopback port, logs in through the real form
and writes:

- dashboard.png: the admin index, /admin/
- backup.png: a successful backup's change page, /admin/backups/backup/<id>/change/
- restore.png: that backup's restore confirmation page, /restores/backups/<id>/restore/
  (a 404 there is reported and still captured, while the page is being built)

Run from the repository root: ``.venv/bin/python -m tests.browser.screenshots [OUTPUT_DIR]``.
Exit 0 when every screenshot is written, 1 with the reason on stderr otherwise. The server, the
browser and the throwaway home are removed either way.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from selenium import webdriver
from selenium.common.exceptions import WebDriverException

from tests.browser.helpers import (
    LoginRefused,
    login,
    missing_browser,
    png_size,
    save_screenshot,
    start_chromium,
)
from tests.servers import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "examples" / "demo.toml"
OUTPUT_DIR = REPO / "docs" / "screenshots"
ADMIN_USERNAME = "admin"  # backups.demo.ADMIN_USERNAME
STEP_TIMEOUT = 300  # seconds for one manage.py command


class ScreenshotFailed(Exception):
    pass


@dataclass
class Page:
    name: str
    path: str
    may_be_missing: bool = False  # still being built: a 404 is reported, not a failure


def main(argv: list[str]) -> int:
    output_dir = Path(argv[0]).resolve() if argv else OUTPUT_DIR
    # make's Ctrl-C sends SIGINT; a plain kill sends SIGTERM: both must clean up.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    reason = missing_browser()
    if reason:
        print(f"make screenshots: {reason}", file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="backupsite-screenshots-"))
    server: subprocess.Popen[bytes] | None = None
    browser: webdriver.Chrome | None = None
    try:
        password = secrets.token_urlsafe(16)
        env = _environment(home, password)
        backup_id = _build_catalog(home, env)
        request_id = _restore_request(env, backup_id)
        port = free_port()
        server = _start_server(home, env, port)
        base_url = f"http://127.0.0.1:{port}"
        browser = start_chromium(home / "chromium-profile")
        _log_in(browser, base_url, password)
        pages = [
            Page("dashboard", "/admin/"),
            Page("backup", f"/admin/backups/backup/{backup_id}/change/"),
            Page("restore", f"/restores/backups/{backup_id}/restore/", may_be_missing=True),
            Page("restore-request", f"/restores/requests/{request_id}/"),
        ]
        for page in pages:
            _capture(browser, base_url, page, output_dir)
    except (ScreenshotFailed, WebDriverException, OSError) as exc:
        message = exc.msg if isinstance(exc, WebDriverException) else str(exc)
        print(f"make screenshots: {type(exc).__name__}: {message}", file=sys.stderr)
        if server is not None:
            _print_log_tail(home / "runserver.log")
        return 1
    finally:
        if browser is not None:
            browser.quit()
        if server is not None:
            stop_process(server)
        shutil.rmtree(home, ignore_errors=True)
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _environment(home: Path, password: str) -> dict[str, str]:
    env = {
        **os.environ,
        "BACKUPSITE_HOME": str(home),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        "BACKUPSITE_ADMIN_PASSWORD": password,
        "DEBUG": "false",
    }
    env.pop("DATABASE_URL", None)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, str(REPO / "manage.py"), *args]
    try:
        result = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ScreenshotFailed(f"manage.py {' '.join(args)}: no answer in {STEP_TIMEOUT} s") from None
    if result.returncode != 0:
        raise ScreenshotFailed(
            f"manage.py {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def _build_catalog(home: Path, env: dict[str, str]) -> int:
    """The demo catalog under ``home``; returns the id of a successful backup to show."""
    _manage(env, "migrate", "--noinput", "-v0")
    _manage(env, "backupsite_demo")
    _demo_files(home / "demo-files")
    config = DEMO_CONFIG.read_text().replace("../var", str(home))
    if "../" in config:
        raise ScreenshotFailed(f"{DEMO_CONFIG} has a relative path this script does not re-point")
    (home / "demo.toml").write_text(config)
    _manage(env, "backup_config", "apply", str(home / "demo.toml"))
    records: list[dict[str, object]] = []
    for _ in range(2):
        records += json.loads(_manage(env, "backup_create", "--json"))
    succeeded = [record for record in records if record["status"] == "success"]
    if not succeeded:
        raise ScreenshotFailed(f"no demo backup succeeded: {records}")
    print(f"Demo catalog: {len(records)} backups in {home}")
    return int(str(succeeded[-1]["id"]))


def _restore_request(env: dict[str, str], backup_id: int) -> int:
    """A four-eyes request by another person to restore ``backup_id`` into its own target, now
    protected (the admin sees it as the approver would); returns its id."""
    code = (
        "from backups.models import Backup\n"
        "from restores import approvals\n"
        "from restores.refusals import confirmation_word\n"
        f"backup = Backup.objects.select_related('target').get(pk={backup_id})\n"
        "target = backup.target\n"
        "target.protected = True\n"
        "target.save()\n"
        "log = approvals.request_approval(backup, target, typed=confirmation_word(target)[0], by='web:alice',\n"
        "    reason='INC-42: the orders table was dropped at 09:12; restore last night\\'s backup')\n"
        "print(log.pk)\n"
    )
    return int(_manage(env, "shell", "-c", code).strip().splitlines()[-1])


def _demo_files(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "README.txt").write_text("Demo files backed up by Backupsite.\n")
    (root / "docs" / "notes.md").write_text("# Notes\n\nScreenshots for the documentation.\n")
    (root / "docs" / "data.csv").write_text("".join(f"{i},{i * i}\n" for i in range(1000)))
    (root / "scratch.tmp").write_text("excluded by the demo's exclude glob\n")


def _start_server(home: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = (home / "runserver.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    def answers() -> bool:
        if server.poll() is not None:
            raise ScreenshotFailed(f"runserver exited {server.returncode} before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(answers, f"runserver on 127.0.0.1:{port}", timeout=60)
    except (RuntimeError, ScreenshotFailed) as exc:
        stop_process(server)
        _print_log_tail(home / "runserver.log")
        raise ScreenshotFailed(str(exc)) from None
    return server


def _log_in(browser: webdriver.Chrome, base_url: str, password: str) -> None:
    try:
        login(browser, base_url, ADMIN_USERNAME, password)
    except LoginRefused as exc:
        raise ScreenshotFailed(f"the admin refused {ADMIN_USERNAME!r}: {exc}") from None


def _capture(browser: webdriver.Chrome, base_url: str, page: Page, output_dir: Path) -> None:
    url = f"{base_url}{page.path}"
    status = _status(browser, url)
    browser.get(url)
    if "/admin/login/" in browser.current_url:
        raise ScreenshotFailed(f"{page.path}: redirected to the login page")
    path = save_screenshot(browser, output_dir / f"{page.name}.png")
    width, height = png_size(path)
    print(
        f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {page.path} -> HTTP {status}, "
        f"{width}x{height}, title {browser.title!r}"
    )
    if status == 200:
        return
    if status == 404 and page.may_be_missing:
        print(f"WARNING: {page.path} answered 404 (not built yet?); {path.name} shows that page")
        return
    raise ScreenshotFailed(f"{page.path} answered HTTP {status}; see {path}")


def _status(browser: webdriver.Chrome, url: str) -> int:
    """The HTTP status of a GET of ``url`` with the browser's session (WebDriver hides it)."""
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin', redirect: 'manual'})"
        ".then(response => done(response.type === 'opaqueredirect' ? 302 : response.status),"
        " error => done(String(error)));",
        url,
    )
    if not isinstance(status, int):
        raise ScreenshotFailed(f"GET {url} failed in the browser: {status}")
    return status


def _print_log_tail(log: Path, lines: int = 30) -> None:
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print("runserver's last lines:\n  " + "\n  ".join(tail), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
