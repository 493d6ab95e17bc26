"""The HTTP API at /api/v1/: each endpoint, its errors (one JSON shape, never a 500 for bad
input), the role-by-endpoint matrix with a tag-scoped grant and a scoped token, refused actions
audited and changing nothing, the rate limit, and cursor pages."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from backups import services
from backups.access import tokens
from backups.access.proxies import parse_networks
from backups.models import AuditEvent, Backup, BackupDownload, BackupStatus, Role, RoleGrant, Storage, Target
from backups.tasks import run_target_backup
from restores.models import RestoreLog
from schedules.models import BackupSchedule
from tests.conftest import digest, sqlite_rows

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]
API = "/api/v1"


@dataclass
class World:
    target: Target
    destination: Target
    backup: Backup
    storage: Storage
    schedule: BackupSchedule


@pytest.fixture
def world(sqlite_target: Target, copy_target: Target, local_storage: Storage, settings: Any) -> World:
    schedule = BackupSchedule.objects.create(
        name="nightly", target=sqlite_target, cron_expression="0 3 * * *"
    )
    return World(sqlite_target, copy_target, services.run_backup(sqlite_target), local_storage, schedule)


def person(name: str, role: str = "") -> User:
    user = User.objects.create_user(name, password="x", is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


class ApiClient:
    """A test client with a token: posts JSON, and no body at all when given none (as
    ``curl -X POST`` does)."""

    def __init__(self, token: str) -> None:
        self.client = Client(headers={"Authorization": f"Bearer {token}"})

    def get(self, path: str, data: Any = None) -> Any:
        return self.client.get(path, data)

    def post(self, path: str, data: Any = None, content_type: str = "application/json") -> Any:
        return self.client.post(path, "" if data is None else data, content_type=content_type)


def bearer(user: User, scope: str = "") -> ApiClient:
    _row, clear = tokens.create_token(user, scope=scope)
    return ApiClient(clear)


def error_of(response: Any, status: int, code: str, field: str | None = None) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"code", "message", "field"}
    assert (body["code"], body["field"]) == (code, field), body
    return str(body["message"])


def test_it_answers_health_without_a_token():
    response = Client().get(f"{API}/health")
    assert response.status_code == 200 and response.json() == {"status": "ok", "version": "0.1.0"}


def test_it_says_why_a_token_is_refused_without_echoing_it(world):
    user = person("ann", "Viewer")
    row, clear = tokens.create_token(user)
    assert "missing" in error_of(Client().get(f"{API}/targets"), 401, "unauthenticated")
    forged = f"bks_{row.key_id}_" + "x" * 43
    message = error_of(
        Client(headers={"Authorization": f"Bearer {forged}"}).get(f"{API}/targets"), 401, "unauthenticated"
    )
    assert "unknown" in message and forged not in message
    tokens.revoke(row)
    message = error_of(
        Client(headers={"Authorization": f"Bearer {clear}"}).get(f"{API}/targets"), 401, "unauthenticated"
    )
    assert "revoked" in message and clear not in message


def test_it_records_when_and_from_where_a_token_was_used(world, settings):
    settings.BACKUPSITE_TRUSTED_PROXIES = parse_networks("127.0.0.1")  # the test client's address
    row, clear = tokens.create_token(person("vic", "Viewer"))
    client = Client(headers={"Authorization": f"Bearer {clear}", "X-Forwarded-For": "203.0.113.9"})
    assert client.get(f"{API}/targets").status_code == 200
    row.refresh_from_db()
    assert row.last_used_address == "203.0.113.9" and row.last_used_at is not None
    first = row.last_used_at
    client.get(f"{API}/targets")
    row.refresh_from_db()
    assert row.last_used_at == first  # written at most once a minute


def test_it_lists_targets_with_the_dashboard_status(world):
    items = bearer(person("vic", "Viewer")).get(f"{API}/targets").json()["items"]
    by_name = {item["name"]: item for item in items}
    shown = by_name["app-db"]
    assert shown["status"] == "OK" and shown["last_backup_id"] == world.backup.pk
    assert shown["runnable"] is True and shown["stored_bytes"] == world.backup.file_size
    assert by_name["app-db-copy"]["status"] == "NEVER RUN"
    assert bearer(person("vic2", "Viewer")).get(f"{API}/targets/app-db").json() == shown
    error_of(bearer(person("vic3", "Viewer")).get(f"{API}/targets/no-such"), 404, "not_found")


def test_it_runs_a_backup_now_and_names_it(world, eager_tasks):
    client = bearer(person("olga", "Operator"))
    response = client.post(
        f"{API}/targets/app-db/run", {"backup_type": "full"}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["url"] == f"{API}/backups/{answer['backup_id']}" and answer["status"] == "SUCCESS"  # eager
    detail = client.get(answer["url"]).json()
    assert detail["status"] == "SUCCESS" and detail["progress"] is None and detail["encrypted"] is False
    assert [copy["storage"] for copy in detail["copies"]] == ["local"]
    assert {step["name"] for step in detail["steps"]} >= {"dump"}
    assert Backup.objects.get(pk=answer["backup_id"]).initiated_by == "web:olga"
    error_of(
        client.post(
            f"{API}/targets/app-db/run", {"backup_type": "incremental"}, content_type="application/json"
        ),
        422,
        "invalid",
        "backup_type",
    )


def test_it_names_a_queued_run_at_once_and_the_worker_runs_that_row(world, settings):
    """No worker yet (tasks go to the broker, which nobody reads here): the answer still names
    the run, PENDING; the task the worker will get carries that row's id and fills it."""
    client = bearer(person("olga", "Operator"))
    before = Backup.objects.count()

    answer = client.post(f"{API}/targets/app-db/run").json()

    assert answer["status"] == "PENDING" and answer["url"] == f"{API}/backups/{answer['backup_id']}"
    assert client.get(answer["url"]).json()["status"] == "PENDING"
    assert Backup.objects.count() == before + 1
    assert (
        run_target_backup(world.target.pk, initiated_by="web:olga", backup_id=answer["backup_id"])
        == (answer["backup_id"])
    )
    assert Backup.objects.count() == before + 1  # the worker ran the queued row, made no other
    assert client.get(answer["url"]).json()["status"] == "SUCCESS"


def test_it_ends_a_queued_run_that_no_worker_took_and_skips_it_if_the_right_is_withdrawn(world, settings):
    olga = person("olga", "Operator")
    stale = services.queue_backup(world.target, initiated_by="web:olga")
    Backup.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(hours=25))

    [ended] = services.reap_stale_runs()

    stale.refresh_from_db()
    assert ended.pk == stale.pk and stale.status == BackupStatus.FAILED and stale.alert_pending
    assert stale.error_message.startswith("never started: no worker took it within 24 h")
    assert run_target_backup(world.target.pk, initiated_by="web:olga", backup_id=stale.pk) == stale.pk
    stale.refresh_from_db()
    assert stale.status == BackupStatus.FAILED  # a late worker leaves the ended row alone

    queued = services.queue_backup(world.target, initiated_by="web:olga")
    olga.groups.clear()
    assert run_target_backup(world.target.pk, initiated_by="web:olga", backup_id=queued.pk) is None
    queued.refresh_from_db()
    assert queued.status == BackupStatus.SKIPPED and "may no longer run backups" in queued.notes


def test_it_verifies_only_a_successful_backup(world, eager_tasks):
    client = bearer(person("olga", "Operator"))
    assert client.post(f"{API}/backups/{world.backup.pk}/verify").json() == {
        "backup_id": world.backup.pk,
        "queued": True,
    }
    world.backup.refresh_from_db()
    assert world.backup.verified_at is not None
    failed = Backup.objects.create(target=world.target, backup_name="x", status="failed")
    assert "FAILED" in error_of(client.post(f"{API}/backups/{failed.pk}/verify"), 409, "conflict")


def test_it_previews_retention(world):
    preview = bearer(person("vic", "Viewer")).get(f"{API}/targets/app-db/retention-preview").json()
    assert [kept["id"] for kept in preview["keep"]] == [world.backup.pk] and preview["delete"] == []


def test_it_pages_backups_newest_first_with_a_cursor(world):
    for number in range(4):
        Backup.objects.create(target=world.destination, backup_name=f"b{number}", status="failed")
    expected = list(Backup.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    client = bearer(person("vic", "Viewer"))
    seen, cursor = [], None
    while True:
        page = client.get(f"{API}/backups", {"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    ok = client.get(f"{API}/backups", {"status": "success", "target": "app-db"}).json()["items"]
    assert [item["id"] for item in ok] == [world.backup.pk] and ok[0]["sha256"] == world.backup.checksum


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "BOGUS"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"target": "a\x00b"}, "target"),  # PostgreSQL stores no NUL: refused before the query
    ],
)
def test_it_answers_bad_input_with_the_field_at_fault(world, query, field):
    error_of(bearer(person("vic", "Viewer")).get(f"{API}/backups", query), 422, "invalid", field)


def test_it_answers_every_failure_as_json(world):
    client = bearer(person("olga", "Operator"))
    error_of(client.get(f"{API}/backups/not-a-number"), 422, "invalid", "backup_id")
    error_of(client.get(f"{API}/backups/{2**70}"), 422, "invalid", "backup_id")
    error_of(client.get(f"{API}/backups/999999"), 404, "not_found")
    error_of(client.get(f"{API}/no/such/endpoint"), 404, "not_found")
    error_of(client.get(f"{API}/"), 404, "not_found")
    wrong = client.get(f"{API}/targets/app-db/run")
    error_of(wrong, 405, "method_not_allowed")
    assert wrong["Allow"] == "POST"
    broken = client.post(f"{API}/targets/app-db/run", "{not json", content_type="application/json")
    assert broken.status_code in (400, 422) and broken.json()["code"] == "invalid"


def test_it_streams_a_download_through_a_short_lived_link(world, settings):
    client = bearer(person("rita", "Restorer"))
    answer = client.post(f"{API}/backups/{world.backup.pk}/download-url").json()
    assert answer["url"].startswith(f"{API}/downloads/")
    fetched = Client().get(answer["url"])  # the link itself is the permission: no token needed
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.getvalue()).hexdigest() == world.backup.checksum
    assert BackupDownload.objects.filter(backup=world.backup, username="rita").count() == 1
    error_of(Client().get(answer["url"] + "x"), 404, "not_found")
    settings.BACKUPSITE_DOWNLOAD_URL_SECONDS = -1  # every link already expired
    error_of(Client().get(answer["url"]), 404, "not_found")


def test_it_restores_into_another_target_and_reports_it(
    world, eager_tasks, django_capture_on_commit_callbacks
):
    client = bearer(person("rita", "Restorer"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"{API}/backups/{world.backup.pk}/restore", {"to": "app-db-copy"}, content_type="application/json"
        )
    assert response.status_code == 202, response.content
    status = client.get(response.json()["url"]).json()
    assert (status["status"], status["to"], status["backup_id"]) == (
        "SUCCESS",
        "app-db-copy",
        world.backup.pk,
    )
    assert sqlite_rows(Path(world.destination.database)) == sqlite_rows(Path(world.target.database))
    url = f"{API}/backups/{world.backup.pk}/restore"
    mistyped = client.post(url, {"to": "app-db-copy", "database": "x"}, content_type="application/json")
    error_of(mistyped, 422, "invalid", "database")
    error_of(client.post(url, {"to": "nope"}, content_type="application/json"), 422, "invalid", "to")


def test_it_asks_a_second_person_for_a_protected_destination(world, django_capture_on_commit_callbacks):
    world.destination.protected = True
    world.destination.save()
    with django_capture_on_commit_callbacks() as queued:
        response = bearer(person("rita", "Restorer")).post(
            f"{API}/backups/{world.backup.pk}/restore", {"to": "app-db-copy"}, content_type="application/json"
        )
    assert response.status_code == 202 and response.json()["status"] == "AWAITING"
    assert not queued  # nothing runs before the approval
    assert RestoreLog.objects.get().reason.startswith("asked through the API")


def test_it_lists_pauses_and_resumes_schedules(world):
    client = bearer(person("ada", "Administrator"))
    assert [item["name"] for item in client.get(f"{API}/schedules").json()["items"]] == ["nightly"]
    paused = client.post(f"{API}/schedules/{world.schedule.pk}/pause").json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    assert client.post(f"{API}/schedules/{world.schedule.pk}/resume").json()["enabled"] is True
    BackupSchedule.objects.filter(pk=world.schedule.pk).update(managed_by="/etc/backupsite.toml")
    assert "/etc/backupsite.toml" in error_of(
        client.post(f"{API}/schedules/{world.schedule.pk}/pause"), 409, "conflict"
    )


@pytest.fixture(params=["file", "redis"])
def shared_cache(request: pytest.FixtureRequest, settings: Any) -> Any:
    """The cache the rate limit counts in: the default directory, or a real Redis (production)."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        redis = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url(3)}
        settings.CACHES = {"default": redis}
        return server
    return None


def test_it_limits_each_token_to_its_rate(world, settings, shared_cache):
    settings.BACKUPSITE_API_RATE_LIMIT = 3
    client, other = bearer(person("vic", "Viewer")), bearer(person("vic2", "Viewer"))
    assert [client.get(f"{API}/targets").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get(f"{API}/targets")
    error_of(refused, 429, "rate_limited")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert other.get(f"{API}/targets").status_code == 200  # per token
    if shared_cache is not None:  # counted in Redis, where every web process of every host looks
        assert any(b"api-rate" in key for key in shared_cache.client(3).keys("*"))


def test_it_serves_the_schema_to_anyone_and_the_docs_to_staff(world):
    schema = Client().get(f"{API}/openapi.json").json()
    assert {"/api/v1/targets", "/api/v1/restores/{restore_id}", "/api/v1/schedules"} <= set(schema["paths"])
    assert Client().get(f"{API}/docs").status_code == 302  # to the login page
    staff = Client()
    staff.force_login(person("vic", "Viewer"))
    docs = staff.get(f"{API}/docs").content.decode()
    assert "/static/ninja/" in docs and "cdn" not in docs.lower()
    bundle = re.search(r'src="(/static/ninja/[^"]+\.js)"', docs)
    assert bundle is not None and staff.get(bundle.group(1)).status_code == 200  # served here


def test_it_refuses_to_run_or_restore_a_watched_target(world):
    Target.objects.create(name="uploads", engine="external")
    client = bearer(person("ada", "Administrator"))
    by_name = {item["name"]: item for item in client.get(f"{API}/targets").json()["items"]}
    assert by_name["uploads"]["runnable"] is False and by_name["app-db"]["runnable"] is True
    assert "external" in error_of(client.post(f"{API}/targets/uploads/run"), 409, "conflict")
    assert not Backup.objects.filter(target__name="uploads").exists()


# -- the role-by-endpoint matrix -------------------------------------------------------------

ROLES = ("none", "Viewer", "Operator", "Restorer", "Administrator")
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any] | None, int]] = {
    # name: (method, path, body, status when allowed); {backup} and {schedule} are filled in
    "view": ("get", "/targets/app-db", None, 200),
    "retention": ("get", "/targets/app-db/retention-preview", None, 200),
    "backup": ("get", "/backups/{backup}", None, 200),
    "run": ("post", "/targets/app-db/run", {}, 202),
    "verify": ("post", "/backups/{backup}/verify", None, 202),
    "download": ("post", "/backups/{backup}/download-url", None, 200),
    "restore": ("post", "/backups/{backup}/restore", {"to": "app-db-copy"}, 202),
    "pause": ("post", "/schedules/{schedule}/pause", None, 200),
}
LEAST_ROLE = {
    "view": "Viewer",
    "retention": "Viewer",
    "backup": "Viewer",
    "run": "Operator",
    "verify": "Operator",
    "download": "Restorer",
    "restore": "Restorer",
    "pause": "Administrator",
}
AUDITED = {"run": "backup.run", "verify": "backup.verify", "download": "backup.download"}
AUDITED |= {"restore": "restore.start", "pause": "config.change"}


def call(client: ApiClient, world: World, endpoint: str) -> Any:
    method, path, body, _ = ENDPOINTS[endpoint]
    url = API + path.format(backup=world.backup.pk, schedule=world.schedule.pk)
    if method == "get":
        return client.get(url)
    return client.post(url, body or {})


def snapshot(world: World) -> tuple[Any, ...]:
    return (
        Backup.objects.count(),
        Backup.objects.get(pk=world.backup.pk).verified_at,
        RestoreLog.objects.count(),
        BackupDownload.objects.count(),
        BackupSchedule.objects.get(pk=world.schedule.pk).is_active,
        digest(Path(world.destination.database)),
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_it_lets_each_role_use_exactly_its_endpoints(role, endpoint, world, eager_tasks):
    client = bearer(person("someone", role if role != "none" else ""))
    before = snapshot(world)
    response = call(client, world, endpoint)
    rank = ROLES.index(role)
    if rank >= ROLES.index(LEAST_ROLE[endpoint]):
        assert response.status_code == ENDPOINTS[endpoint][3], (role, endpoint, response.content)
        return
    expected = 404 if role == "none" else 403  # what one may not see does not exist for them
    error_of(response, expected, "not_found" if expected == 404 else "forbidden")
    assert snapshot(world) == before, (role, endpoint)
    if expected == 403 and endpoint in AUDITED:
        assert AuditEvent.objects.filter(
            action=AUDITED[endpoint], outcome="refused", username="someone", auth_method="token"
        ).exists()


def test_it_scopes_a_tag_grant_and_a_scoped_token(world, eager_tasks):
    world.target.tags = ["shop"]
    world.target.save()
    granted = person("sam")
    RoleGrant.objects.create(user=granted, role=Role.OPERATOR, tag="shop")
    client = bearer(granted)
    assert [item["name"] for item in client.get(f"{API}/targets").json()["items"]] == ["app-db"]
    assert client.post(f"{API}/targets/app-db/run").status_code == 202
    error_of(client.post(f"{API}/targets/app-db-copy/run"), 404, "not_found")
    error_of(client.post(f"{API}/backups/{world.backup.pk}/download-url"), 403, "forbidden")
    admin_scoped = bearer(person("ada", "Administrator"), scope="shop")
    assert [item["name"] for item in admin_scoped.get(f"{API}/targets").json()["items"]] == ["app-db"]
    other = services.run_backup(world.destination)
    error_of(admin_scoped.get(f"{API}/backups/{other.pk}"), 404, "not_found")
    assert other.pk not in [item["id"] for item in admin_scoped.get(f"{API}/backups").json()["items"]]
