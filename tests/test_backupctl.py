"""backupctl, the remote client (backups/remote/), run as its own process against a live site:
gunicorn serving /api/v1/ and a real Celery worker on the embedded filesystem broker, each a
process of one BACKUPSITE_HOME (tests/celery_site.py). No HTTP is mocked; every call of the
client is checked for the token appearing in its output."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.celery_site import Site, migrated_site, wait_until
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers import free_port, silent_listener

TOKEN_SHAPE = re.compile(r"bks_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
CLIENT = [sys.executable, "-m", "backups.remote.backupctl"]
ADMIN = "ops"


@dataclass
class LiveSite:
    site: Site
    url: str
    token: str
    tmp: Path
    viewer_token: str  # a Viewer of the targets tagged prod (app-db): may look, not act

    def env(self, **overrides: str) -> dict[str, str]:
        return client_env(self.url, self.token, **overrides)


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def client_env(url: str, token: str, **overrides: str) -> dict[str, str]:
    """The client's environment: the site and the token, nothing of the server's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BACKUPCTL_", "DJANGO_", "BACKUPSITE_", "DATABASE_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(BACKUPCTL_URL=url, BACKUPCTL_TOKEN=token, PYTHONUNBUFFERED="1")
    env.update(overrides)
    return {key: value for key, value in env.items() if value != ""}


def run_client(env: dict[str, str], *args: str, timeout: float = 120) -> Ran:
    """Run backupctl (stdin not a terminal); every run also proves the token was printed nowhere."""
    result = subprocess.run(
        [*CLIENT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    token = env.get("BACKUPCTL_TOKEN")
    if token:
        assert token not in result.stdout + result.stderr
    return Ran(result.returncode, result.stdout, result.stderr)


def ctl(live: LiveSite, *args: str, timeout: float = 120, **env: str) -> Ran:
    ran = run_client(live.env(**env), *args, timeout=timeout)
    assert live.token not in ran.out + ran.err
    return ran


def _api_token(site: Site, user: str = ADMIN) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "api_token", "create", "--user", user, "--expires", "1d"],
        cwd=REPO, env=site.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0 and "Unknown command" in result.stderr:
        pytest.skip("the server API of issue 23 is not there yet: manage.py has no api_token command")
    assert result.returncode == 0, result.stdout + result.stderr
    found = TOKEN_SHAPE.search(result.stdout)
    assert found, f"no token in the output of api_token create:\n{result.stdout}"
    return found.group()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    tmp = tmp_path_factory.mktemp("backupctl")
    site = migrated_site(tmp / "home", "filesystem://")
    # The tests poll every half second with one token; the default 120 a minute would make the
    # later ones wait out the window (the client's handling of 429 is tested on its own above).
    site.extra_env["BACKUPSITE_API_RATE_LIMIT"] = "1000"
    try:
        broken = fill_sqlite(tmp / "broken.sqlite3", rows=5)
        config = write_config(
            tmp / "site.toml",
            storage_dir=tmp / "backups",
            targets={
                "app-db": {"engine": "sqlite", "database": fill_sqlite(tmp / "app.sqlite3", rows=50), "storages": ["local"],
                           "tags": ["prod"]},
                "broken-db": {"engine": "sqlite", "database": broken, "storages": ["local"]},
                "slow-db": {"engine": "sqlite", "database": fill_sqlite(tmp / "slow.sqlite3", rows=5), "storages": ["local"]},
                "scratch-db": {"engine": "sqlite", "database": fill_sqlite(tmp / "scratch.sqlite3", rows=3), "storages": ["local"]},
            },
            schedules={"nightly": {"target": "app-db", "cron": "0 3 * * *"}},
        )  # fmt: skip
        site.manage("backup_config", "apply", str(config))
        broken.unlink()  # its backups fail: the file is gone
        created = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "createsuperuser", "--noinput", "--username", ADMIN,
             "--email", "ops@example.net"],
            cwd=REPO, env={**site.env, "DJANGO_SUPERUSER_PASSWORD": "not-used-here-1"}, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        token = _api_token(site)
        site.manage(
            "shell", "-c",
            "from backups.models import Target; from schedules.models import BackupSchedule; "
            "BackupSchedule.objects.create(name='adhoc', target=Target.objects.get(name='app-db'), "
            "cron_expression='30 4 * * *'); "
            "from django.contrib.auth.models import User; from backups.models import RoleGrant; "
            "RoleGrant.objects.create(user=User.objects.create_user('viewer'), role='Viewer', tag='prod')",
        )  # fmt: skip
        viewer_token = _api_token(site, "viewer")
        port = free_port()
        site.start(
            "web",
            [str(Path(sys.executable).parent / "gunicorn"), "backupsite.wsgi:application", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread", "--threads", "4",
             "--access-logfile", "-", "--no-control-socket"],
        )  # fmt: skip
        site.worker(concurrency=1)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/api/v1/health"), "the site to answer /api/v1/health", 60)
        yield LiveSite(site=site, url=url, token=token, tmp=tmp, viewer_token=viewer_token)
    finally:
        site.stop_all()


# -- configuration and failures before any answer -------------------------------------------------


def test_it_needs_no_django_to_run():
    code = "import sys, backups.remote.backupctl; sys.exit(any(m.split('.')[0] in ('django', 'ninja', 'pydantic') for m in sys.modules))"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=60).returncode == 0


def test_it_refuses_to_work_without_a_token_and_says_how_to_get_one(live):
    ran = ctl(live, "targets", BACKUPCTL_TOKEN="")
    assert ran.code == 2
    assert "no API token: set BACKUPCTL_TOKEN" in ran.err
    assert "api_token create" in ran.err
    assert ran.out == ""


def test_it_exits_3_naming_the_url_and_why_when_the_server_cannot_be_reached(live):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ran = ctl(live, "targets", BACKUPCTL_URL=nowhere)
    assert ran.code == 3
    assert f"cannot reach {nowhere}/api/v1/targets: connection refused" in ran.err
    assert len(ran.err.strip().splitlines()) == 1  # one readable line, no traceback


def test_it_rejects_an_address_that_is_not_http_with_exit_2(live):
    ran = ctl(live, "targets", BACKUPCTL_URL="ftp://backups.example.net")
    assert ran.code == 2
    assert "is not an http:// or https:// address" in ran.err


def test_it_exits_2_with_the_apis_message_for_an_unknown_token(live):
    forged = "bks_00000000_" + "A" * 43
    ran = ctl(live, "targets", BACKUPCTL_TOKEN=forged)
    assert ran.code == 2
    assert ran.err.startswith("backupctl: unauthenticated: ")
    assert "HTTP 401" in ran.err
    assert forged not in ran.err


def test_it_reads_the_token_from_a_file_and_warns_when_others_may_read_it(live, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(live.token + "\n")
    token_file.chmod(0o600)
    quiet = ctl(live, "targets", "--token-file", str(token_file), BACKUPCTL_TOKEN="")
    assert quiet.code == 0, quiet.err
    assert "warning" not in quiet.err
    token_file.chmod(0o644)
    warned = ctl(live, "targets", BACKUPCTL_TOKEN="", BACKUPCTL_TOKEN_FILE=str(token_file))
    assert warned.code == 0, warned.err
    assert f"may be read by group or others (mode 0644): chmod 600 {token_file}" in warned.err


def test_it_answers_health_without_a_token(live):
    ran = ctl(live, "health", BACKUPCTL_TOKEN="")
    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"ok: {live.url}/api/v1/ answers")


def test_it_exits_2_for_usage_errors(live):
    assert ctl(live, "run").code == 2  # no target
    assert ctl(live, "show", "x").code == 2
    assert ctl(live, "backups", "--limit", "500").code == 2


# -- against a scripted HTTP server: redirects, rate limits, odd answers, silence --------------------

FAKE_TOKEN = "bks_0123abcd_" + "s3cr3t-" * 6 + "x"
Answer = tuple[int, dict[str, str], bytes]


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next of the server's ``answers`` (the last one repeats)."""

    server: _ScriptedServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        answers = self.server.answers
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ScriptedServer(http.server.ThreadingHTTPServer):
    answers: list[Answer]
    seen: list[tuple[str, str, str | None]]


@contextlib.contextmanager
def scripted(*answers: Answer) -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    """A real HTTP server on a loopback port that answers as told; yields its URL and the
    requests it saw (method, path, Authorization)."""
    server = _ScriptedServer(("127.0.0.1", 0), _Scripted)
    server.answers, server.seen = list(answers), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.shutdown()
        server.server_close()


def error(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "field": None}).encode()


def test_it_never_follows_a_redirect_so_the_token_stays_home():
    with scripted((200, {}, b'{"items": []}')) as (elsewhere, seen_elsewhere):
        moved = (302, {"Location": f"{elsewhere}/api/v1/targets"}, b"")
        with scripted(moved) as (url, seen):
            ran = run_client(client_env(url, FAKE_TOKEN), "targets")
    assert ran.code == 2
    assert f"redirects to {elsewhere}/api/v1/targets" in ran.err
    assert seen == [("GET", "/api/v1/targets", f"Bearer {FAKE_TOKEN}")]
    assert seen_elsewhere == []


def test_it_retries_a_get_after_429_but_sends_a_post_once():
    limited = (429, {"Retry-After": "0"}, error("rate_limited", "too many requests for this token"))
    with scripted(limited, (200, {}, b'{"items": []}')) as (url, seen):
        ran = run_client(client_env(url, FAKE_TOKEN), "targets")
    assert ran.code == 0, ran.err
    assert len(seen) == 2
    with scripted(limited) as (url, seen):
        ran = run_client(client_env(url, FAKE_TOKEN), "run", "app-db")
    assert ran.code == 2
    assert ran.err.strip() == (
        f"backupctl: rate_limited: too many requests for this token (retry after 0 s) "
        f"[HTTP 429 from {url}/api/v1/targets/app-db/run]"
    )
    assert [method for method, _, _ in seen] == ["POST"]


def test_it_names_the_field_of_an_invalid_request():
    invalid = json.dumps({"code": "invalid", "message": "unknown status 'sucess'", "field": "status"})
    with scripted((422, {}, invalid.encode())) as (url, _):
        ran = run_client(client_env(url, FAKE_TOKEN), "backups", "--status", "sucess")
    assert ran.code == 2
    assert "invalid: unknown status 'sucess' (field status) [HTTP 422" in ran.err


def test_it_says_when_the_address_is_not_a_backupsite():
    with scripted((404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>")) as (url, _):
        ran = run_client(client_env(url, FAKE_TOKEN), "targets")
    assert ran.code == 2
    assert (
        "answered HTTP 404 with text/html, not a JSON error: is BACKUPCTL_URL the Backupsite's address"
        in ran.err
    )


def test_it_exits_3_when_the_server_fails():
    with scripted((500, {"Content-Type": "text/html"}, b"<h1>Server Error</h1>")) as (url, seen):
        ran = run_client(client_env(url, FAKE_TOKEN), "targets")
    assert ran.code == 3
    assert f"the server failed to answer {url}/api/v1/targets: HTTP 500" in ran.err
    assert len(seen) == 1  # an answer, even a 500, is not retried


def test_it_times_out_on_a_silent_server_with_exit_3():
    with silent_listener() as port:
        started = time.monotonic()
        ran = run_client(client_env(f"http://127.0.0.1:{port}", FAKE_TOKEN), "targets", "--timeout", "0.5")
        posted = run_client(
            client_env(f"http://127.0.0.1:{port}", FAKE_TOKEN), "run", "app-db", "--timeout", "0.5"
        )
    assert ran.code == 3
    assert "no answer within 0.5 s" in ran.err
    assert time.monotonic() - started < 20
    # A POST is sent once, and the person is told it may have been carried out all the same.
    assert posted.code == 3
    assert "the request may have been carried out: check before sending it again" in posted.err


def test_it_warns_before_sending_the_token_over_plain_http_to_another_host():
    ran = run_client(client_env("http://192.0.2.1:9", FAKE_TOKEN), "targets", "--timeout", "0.2")
    assert "warning: the token goes to 192.0.2.1 over plain http" in ran.err


def ok(payload: object) -> Answer:
    return (200, {}, json.dumps(payload).encode())


def detail(backup_id: int, status: str) -> dict[str, object]:
    return {"id": backup_id, "target": "app-db", "status": status, "size_bytes": 2048, "steps": [], "copies": [],
            "progress": {"bytes_done": 1024, "phase": "dump"} if status == "RUNNING" else None,
            "started_at": "2026-12-07T20:00:00Z", "completed_at": "2026-12-07T20:00:03Z", "error_message": ""}  # fmt: skip


def test_it_gives_up_waiting_after_the_wait_timeout_with_exit_4():
    answers: list[Answer] = [
        (202, {}, json.dumps({"backup_id": 5, "status": "PENDING", "url": "/api/v1/backups/5"}).encode())
    ]
    with scripted(*answers, ok(detail(5, "RUNNING"))) as (url, seen):
        args = ("run", "app-db", "--wait", "--interval", "0.1", "--wait-timeout", "0.5")
        ran = run_client(client_env(url, FAKE_TOKEN), *args)
    assert ran.code == 4
    assert "backup 5 of app-db: running, dump, 1.0 KiB" in ran.err  # plain progress: not a terminal
    assert "gave up waiting after " in ran.err and "follow it with `backupctl show 5`" in ran.err
    assert [path for _, path, _ in seen[:2]] == ["/api/v1/targets/app-db/run", "/api/v1/backups/5"]


def test_it_says_so_when_the_server_names_no_backup_for_the_run():
    with scripted((202, {}, json.dumps({"backup_id": None, "status": "QUEUED"}).encode())) as (url, _):
        ran = run_client(client_env(url, FAKE_TOKEN), "run", "app-db", "--wait")
    assert ran.code == 3
    assert "names no backup (None)" in ran.err and "API version may differ" in ran.err


# -- reading ----------------------------------------------------------------------------------------


def test_it_lists_targets_in_aligned_columns(live):
    ran = ctl(live, "targets")
    assert ran.code == 0, ran.err
    header, *rows = ran.out.splitlines()
    assert header.split()[:3] == ["NAME", "ENGINE", "STATUS"]
    names = [row.split()[0] for row in rows]
    assert {"app-db", "broken-db", "scratch-db"} <= set(names)
    engine_column = header.index("ENGINE")
    assert all(row[engine_column:].startswith("sqlite") for row in rows)


def test_it_prints_the_apis_json_with_json_before_or_after_the_command(live):
    after, before = ctl(live, "targets", "--json"), ctl(live, "--json", "targets")
    assert after.code == before.code == 0
    items = after.json()["items"]
    assert {item["name"] for item in items} >= {"app-db", "broken-db"}
    assert before.json() == after.json()


def test_it_lists_pauses_and_resumes_schedules(live):
    listed = ctl(live, "schedules", "--json")
    assert listed.code == 0, listed.err
    by_name = {schedule["name"]: schedule for schedule in listed.json()["items"]}
    paused = ctl(live, "pause", str(by_name["adhoc"]["id"]), "--json")
    assert paused.code == 0, paused.err
    assert paused.json()["enabled"] is False
    table = ctl(live, "schedules")
    assert re.search(r"adhoc\s+app-db\s+30 4 \* \* \*\s+UTC\s+paused", table.out), table.out
    resumed = ctl(live, "resume", str(by_name["adhoc"]["id"]))
    assert resumed.code == 0, resumed.err
    assert f"schedule {by_name['adhoc']['id']} (adhoc, target app-db) resumed; next run " in resumed.out
    # One the configuration file defines is paused there, not here: the API's conflict, exit 2.
    refused = ctl(live, "pause", str(by_name["nightly"]["id"]))
    assert refused.code == 2
    assert refused.err.startswith("backupctl: conflict: schedule nightly is defined by ")


# -- run, wait, verify, restore ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_backup(live) -> int:
    """``backupctl run app-db --wait --json`` end to end: the worker took the backup."""
    ran = ctl(live, "run", "app-db", "--wait", "--interval", "0.5", "--json")
    assert ran.code == 0, ran.err
    backup = ran.json()
    assert backup["status"].lower() == "success"
    assert backup["copies"] and backup["sha256"]
    return int(backup["id"])


@pytest.mark.slow
def test_it_runs_a_backup_and_waits_for_its_success_with_exit_0(live, good_backup):
    ran = ctl(live, "run", "app-db", "--wait", "--interval", "0.5")
    assert ran.code == 0, ran.err
    assert re.fullmatch(r"backup \d+ of app-db: success, [\d.]+ \S+ in .+\n", ran.out), ran.out
    # Not a terminal: plain progress lines on stderr, one per state, none rewritten.
    assert "\r" not in ran.err
    assert "waiting for it to finish" in ran.err


@pytest.mark.slow
def test_it_exits_1_with_the_reason_when_the_backup_fails(live):
    ran = ctl(live, "run", "broken-db", "--wait", "--interval", "0.5")
    assert ran.code == 1, ran.out + ran.err
    last = ran.err.strip().splitlines()[-1]
    assert re.match(r"backupctl: backup \d+ of broken-db ended failed: .+", last), ran.err
    backups = ctl(live, "backups", "--target", "broken-db", "--json")
    assert [b["status"].lower() for b in backups.json()["items"]] == ["failed"]


@pytest.mark.slow
def test_it_shows_live_progress_on_one_rewritten_line_on_a_terminal(live):
    # The source held locked: the dump waits for it (as on a busy database), so the run stays
    # RUNNING long enough to be watched, until the lock goes.
    lock = sqlite3.connect(live.tmp / "slow.sqlite3", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    main, child = pty.openpty()
    process = subprocess.Popen(
        [*CLIENT, "run", "slow-db", "--wait", "--interval", "0.2"],
        cwd=REPO, env=live.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child,
    )  # fmt: skip
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
            # A queued run shows "pending" until a worker takes it: hold the lock until it runs.
            if lock.in_transaction and b": running" in seen and seen.count(b"\r\x1b[2K") >= 3:
                lock.rollback()  # watched enough: let the backup finish
    finally:
        if lock.in_transaction:
            lock.rollback()
        lock.close()
    out = process.communicate(timeout=30)[0].decode()
    os.close(main)
    assert process.returncode == 0, seen
    assert b"\r\x1b[2Kbackup " in seen  # the line rewritten in place
    assert re.search(rb"backup \d+ of slow-db: running, [^\r\n]*0:00:0\d", seen), seen
    assert b"\n" not in seen.split(b"waiting for it to finish\r\n", 1)[1]  # one line, never scrolled
    assert live.token.encode() not in seen
    assert re.fullmatch(r"backup \d+ of slow-db: success, .+\n", out), out


@pytest.mark.slow
def test_it_lists_backups_follows_cursors_and_shows_one(live, good_backup):
    ctl(live, "run", "app-db", "--wait", "--interval", "0.5")
    paged = ctl(live, "backups", "--target", "app-db", "--limit", "1", "--all", "--json")
    assert paged.code == 0, paged.err
    ids = [b["id"] for b in paged.json()["items"]]
    assert len(ids) >= 2 and ids == sorted(ids, reverse=True) and good_backup in ids
    one_page = ctl(live, "backups", "--target", "app-db", "--limit", "1")
    assert "pass --all to list them all" in one_page.err
    assert one_page.out.splitlines()[0].split()[:3] == ["ID", "TARGET", "STATUS"]
    shown = ctl(live, "show", str(good_backup))
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"backup {good_backup} of app-db: ")
    assert "copies:" in shown.out and "local" in shown.out


@pytest.mark.slow
def test_it_verifies_a_backup_and_waits_for_the_result(live, good_backup):
    ran = ctl(live, "verify", str(good_backup), "--wait", "--interval", "0.5")
    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"backup {good_backup} verified: ")


@pytest.mark.slow
def test_it_gives_a_download_url_on_the_site(live, good_backup):
    ran = ctl(live, "url", str(good_backup))
    assert ran.code == 0, ran.err
    (link,) = ran.out.split()
    assert link.startswith(live.url + "/")


def test_it_refuses_a_restore_without_a_terminal_and_without_yes(live):
    ran = ctl(live, "restore", "1", "--to", "scratch-db")
    assert ran.code == 2
    assert "pass --yes" in ran.err


@pytest.mark.slow
def test_it_restores_after_the_typed_confirmation_on_a_terminal(live, good_backup):
    main, child = pty.openpty()
    process = subprocess.Popen(
        [*CLIENT, "restore", str(good_backup), "--to", "scratch-db", "--wait", "--interval", "0.5"],
        cwd=REPO, env=live.env(), stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 120
    typed = False
    while process.poll() is None and time.monotonic() < deadline:
        if select.select([main], [], [], 0.2)[0]:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
        if not typed and b"to go ahead: " in seen:
            os.write(main, b"scratch-db\n")
            typed = True
    process.wait(timeout=30)
    os.close(main)
    assert typed, seen
    assert process.returncode == 0, seen
    assert b"into scratch-db: success" in seen
    with contextlib.closing(sqlite3.connect(live.tmp / "scratch.sqlite3")) as restored:
        assert restored.execute("SELECT count(*) FROM people").fetchone() == (50,)


@pytest.mark.slow
def test_it_reports_a_restore_status(live, good_backup):
    ran = ctl(live, "restore", str(good_backup), "--to", "scratch-db", "--yes", "--json")
    assert ran.code == 0, ran.err
    restore_id = ran.json()["restore_id"]
    status = ctl(live, "restore-status", str(restore_id))
    assert status.code == 0, status.err
    assert status.out.startswith(f"restore {restore_id} of backup {good_backup} into scratch-db: ")


def test_it_exits_2_with_the_apis_refusal_when_the_tokens_user_may_not(live):
    seen = ctl(live, "targets", "--json", BACKUPCTL_TOKEN=live.viewer_token)
    assert seen.code == 0, seen.err
    assert [target["name"] for target in seen.json()["items"]] == ["app-db"]
    refused = ctl(live, "run", "app-db", BACKUPCTL_TOKEN=live.viewer_token)
    assert refused.code == 2
    assert refused.err == (
        f"backupctl: forbidden: you may not run backups of app-db [HTTP 403 from {live.url}/api/v1/targets/app-db/run]\n"
    )
    assert live.viewer_token not in refused.out + refused.err


def test_it_exits_2_with_the_apis_error_for_an_unknown_target(live):
    ran = ctl(live, "run", "no-such-target")
    assert ran.code == 2
    assert ran.err.startswith("backupctl: not_found: ")
    assert "HTTP 404" in ran.err


def test_it_never_leaves_the_token_in_the_servers_logs(live, good_backup):
    for name in ("web", "worker"):
        assert live.token not in live.site.log(name)


def test_it_is_installed_as_a_console_script():
    script = Path(sys.executable).parent / "backupctl"
    if not script.exists():
        pytest.skip("backupctl is not installed in this venv: run `pip install -e .`")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("backupctl ")
