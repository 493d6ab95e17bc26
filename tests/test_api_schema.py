"""The API against its own OpenAPI schema: schemathesis generates requests for every operation
and sends them, with a real token, to a live site (gunicorn with two workers on a migrated
catalog holding a target, a schedule and a successful backup); no answer may be a 500, and each
answer's status, content type and body must be what the schema says. A bounded number of
examples per operation keeps the run under a minute."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.celery_site import Site, migrated_site, wait_until
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers import free_port

pytestmark = pytest.mark.slow
TOKEN = re.compile(r"bks_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class LiveApi:
    site: Site
    url: str
    token: str

    def serve(self, workers: int) -> str:
        """Start gunicorn with ``workers`` processes on a free port; its URL once it answers."""
        port = free_port()
        self.site.start(
            f"web-{port}",
            [str(Path(sys.executable).parent / "gunicorn"), "backupsite.wsgi:application", "--bind",
             f"127.0.0.1:{port}", "--workers", str(workers), "--access-logfile", "-", "--no-control-socket"],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/api/v1/health"), "the site to answer /api/v1/health", 60)
        return url


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The site (gunicorn, two workers) and an Administrator's token."""
    tmp = tmp_path_factory.mktemp("api-schema")
    site = migrated_site(tmp / "home", "filesystem://")
    site.extra_env.update(BACKUPSITE_API_RATE_LIMIT="0", BACKUPSITE_API_RUN_WAIT_SECONDS="0")
    try:
        config = write_config(
            tmp / "site.toml",
            storage_dir=tmp / "backups",
            targets={"app-db": {"engine": "sqlite", "database": fill_sqlite(tmp / "app.sqlite3", rows=20),
                                "storages": ["local"], "tags": ["shop"]}},
            schedules={"nightly": {"target": "app-db", "cron": "0 3 * * *"}},
        )  # fmt: skip
        site.manage("backup_config", "apply", str(config))
        site.manage("backup_create", "--target", "app-db")
        created = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "createsuperuser", "--noinput", "--username", "ops",
             "--email", "ops@example.net"],
            cwd=REPO, env={**site.env, "DJANGO_SUPERUSER_PASSWORD": "not-used-here-1"}, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        token = TOKEN.search(site.manage("api_token", "create", "--user", "ops", "--expires", "1d"))
        assert token is not None
        live = LiveApi(site, "", token.group())
        live.url = live.serve(workers=2)
        yield live
    finally:
        site.stop_all()


@pytest.fixture(scope="module")
def api_schema(live_api: LiveApi) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api.url}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_it_answers_every_generated_request_as_its_schema_says(case, live_api):
    case.call_and_validate(
        base_url=live_api.url,
        headers={"Authorization": f"Bearer {live_api.token}"},
        checks=CHECKS,
        timeout=30,
    )


def test_it_counts_a_tokens_rate_across_every_web_process(live_api):
    """Three gunicorn workers, a limit of 5 a minute: the sixth request is refused whichever
    process answers it (a count kept in each process would let up to 15 through)."""
    live_api.site.extra_env["BACKUPSITE_API_RATE_LIMIT"] = "5"
    url = live_api.serve(workers=3)
    if time.time() % 60 > 50:  # the count starts again each minute: not while the loop runs
        time.sleep(61 - time.time() % 60)
    statuses, retry_after = [], ""
    for _ in range(12):
        request = urllib.request.Request(
            f"{url}/api/v1/targets", headers={"Authorization": f"Bearer {live_api.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as refused:
            statuses.append(refused.code)
            retry_after = refused.headers["Retry-After"]
    assert statuses == [200] * 5 + [429] * 7, statuses
    assert 1 <= int(retry_after) <= 60
