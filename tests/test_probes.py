"""/healthz and /readyz: answered whatever the Host header, never redirected to HTTPS; readiness
checks the catalog, the broker, beat's heartbeat and every storage (a real local storage, a real
Redis, a real beat process), with details only for staff and metrics readers."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from backups import services
from backups.health import readiness
from backups.models import ProcessHeartbeat, Storage
from tests.celery_site import Site, migrated_site, wait_until
from tests.servers import free_port
from tests.servers.redis import RedisServer

POD_IP = "10.244.3.17"  # what a kubelet's probe sends as Host
_ANY_KEY = "SHA256:" + "A" * 43  # a pinned host key; the silent server never shows one


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    readiness.forget_storage_probes()
    yield
    readiness.forget_storage_probes()


@pytest.fixture
def beat_alive(db: None) -> None:
    services.touch_heartbeat("beat")


def _get(client, path: str, **extra):
    return client.get(path, HTTP_HOST=POD_IP, **extra)


def test_it_answers_healthz_for_any_host_without_touching_the_database(
    client, settings, db, django_assert_num_queries
):
    settings.ALLOWED_HOSTS = ["backups.example.net"]
    with django_assert_num_queries(0):
        response = _get(client, "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    # Anything else from that host is still refused by the host check.
    assert _get(client, "/admin/").status_code == 400


def test_it_never_redirects_the_probes_to_https(client, settings, beat_alive, local_storage):
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["backups.example.net"]
    assert _get(client, "/healthz").status_code == 200
    assert _get(client, "/readyz").status_code == 200
    assert _get(client, "/metrics").status_code == 403  # refused, not redirected
    redirected = client.get("/admin/", HTTP_HOST="backups.example.net")
    assert redirected.status_code == 301 and redirected["Location"].startswith("https://")


def test_it_answers_head_and_passes_other_methods_on(client):
    head = client.head("/healthz", HTTP_HOST=POD_IP)
    assert head.status_code == 200 and head.content == b""
    assert client.post("/healthz").status_code == 404  # not a probe: the URLconf has no such page
    assert client.get("/healthz/").status_code == 404  # exact paths only


@pytest.mark.catalog
def test_it_is_ready_with_a_catalog_a_broker_beat_and_writable_storages(client, beat_alive, local_storage):
    response = _get(client, "/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {
            "database": {"status": "ok"},
            "broker": {"status": "ok"},
            "beat": {"status": "ok"},
            "storage:local": {"status": "ok"},
        },
    }


def test_it_is_not_ready_when_beat_has_never_ticked(client, db):
    response = _get(client, "/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"] == {"status": "failed"}


@pytest.mark.catalog
def test_it_is_not_ready_when_beats_heartbeat_is_stale(client, settings, beat_alive, admin_client):
    settings.BACKUPSITE_BEAT_STALE_SECONDS = 180
    ProcessHeartbeat.objects.filter(role="beat").update(seen_at=timezone.now() - timedelta(seconds=181))
    response = _get(client, "/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    assert response.json()["checks"]["beat"] == {"status": "failed"}
    detail = _get(admin_client, "/readyz").json()["checks"]["beat"]["detail"]
    assert "BACKUPSITE_BEAT_STALE_SECONDS (180 s)" in detail and socket.gethostname() in detail


def test_it_is_not_ready_when_a_storage_cannot_be_written_and_tells_only_staff_why(
    client, admin_client, beat_alive, local_storage, tmp_path
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage's directory should be")
    Storage.objects.create(name="broken", kind="local", options={"path": str(blocker)})
    response = _get(client, "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["storage:broken"] == {"status": "failed"}
    assert body["checks"]["storage:local"] == {"status": "ok"}
    assert str(tmp_path) not in response.content.decode()  # no paths, hosts or errors for anyone

    staff = _get(admin_client, "/readyz").json()["checks"]
    assert "exists but is not a directory" in staff["storage:broken"]["detail"]
    assert staff["storage:local"]["detail"] == "local storage writable"
    assert staff["database"]["detail"].startswith("the catalog")


def test_it_caches_storage_probes_for_a_minute(client, beat_alive, local_storage, storage_dir):
    assert _get(client, "/readyz").status_code == 200
    storage_dir.rmdir()
    storage_dir.write_text("now a file")  # the storage breaks
    assert _get(client, "/readyz").status_code == 200  # the cached probe
    readiness.forget_storage_probes()  # a minute later
    assert _get(client, "/readyz").status_code == 503


def test_it_probes_an_edited_storage_afresh(client, beat_alive, local_storage, tmp_path):
    assert _get(client, "/readyz").status_code == 200
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    local_storage.options = {"path": str(blocker)}
    local_storage.save()
    assert _get(client, "/readyz").status_code == 503


def test_it_gives_details_to_a_metrics_reader(client, settings, beat_alive, local_storage):
    settings.BACKUPSITE_METRICS_TOKEN = "probe-token-0123456789"
    anonymous = _get(client, "/readyz").json()["checks"]["broker"]
    assert anonymous == {"status": "ok"}
    reader = _get(client, "/readyz", HTTP_AUTHORIZATION="Bearer probe-token-0123456789").json()
    assert reader["checks"]["broker"]["detail"].startswith("filesystem broker: ")


def test_it_checks_a_real_redis_broker_and_fails_fast_on_a_dead_one(
    client, admin_client, settings, beat_alive, redis_server: RedisServer
):
    settings.CELERY_BROKER_URL = redis_server.url(3)
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}
    assert _get(client, "/readyz").status_code == 200

    settings.CELERY_BROKER_URL = f"redis://:hunter2-broker-pw@127.0.0.1:{free_port()}/0"  # nobody listens
    started = time.monotonic()
    response = _get(admin_client, "/readyz")
    assert time.monotonic() - started < readiness.BROKER_TIMEOUT_SECONDS + 5
    assert response.status_code == 503
    detail = response.json()["checks"]["broker"]["detail"]
    assert detail.startswith("cannot connect to redis://127.0.0.1:")
    assert "hunter2" not in response.content.decode()


def test_it_reports_a_storage_that_does_not_answer_in_time_without_waiting_for_it(
    client, beat_alive, local_storage, monkeypatch
):
    # A storage whose server accepts the connection and then says nothing: an SFTP server on a
    # port where only a silent listener runs.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        Storage.objects.create(
            name="mute",
            kind="sftp",
            options={
                "host": "127.0.0.1",
                "port": port,
                "user": "nobody",
                "password": "x",
                "host_key_fingerprint": _ANY_KEY,
            },
        )
        monkeypatch.setattr(readiness, "STORAGE_TIMEOUT_SECONDS", 1.0)
        started = time.monotonic()
        response = _get(client, "/readyz")
        assert time.monotonic() - started < 8
    assert response.status_code == 503
    assert response.json()["checks"]["storage:mute"] == {"status": "failed"}


# -- a real beat process -----------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = migrated_site(tmp_path / "home", "filesystem://")
    try:
        yield site
    finally:
        site.stop_all()


def _beat_heartbeat(site: Site) -> tuple[str, str] | None:
    with sqlite3.connect(site.catalog) as catalog:
        row = catalog.execute(
            "SELECT host, seen_at FROM backup_process_heartbeat WHERE role = 'beat'"
        ).fetchone()
    return (row[0], row[1]) if row else None


@pytest.mark.slow
def test_it_records_beats_heartbeat_from_a_real_beat_process_and_survives_a_catalog_error(site: Site):
    # The heartbeat's table is gone when beat starts: every write fails with a database error,
    # which beat logs and carries on; once the table is back, the next write lands.
    with sqlite3.connect(site.catalog) as catalog:
        (create,) = catalog.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'backup_process_heartbeat'"
        ).fetchone()
        catalog.execute("DROP TABLE backup_process_heartbeat")
    beat = site.beat("beat")
    wait_until(
        lambda: "cannot record its heartbeat in the catalog" in site.log("beat"), "the logged error", 90
    )
    assert "no such table: backup_process_heartbeat" in site.log("beat")
    assert beat.poll() is None, site.log("beat")
    with sqlite3.connect(site.catalog) as catalog:
        catalog.execute(create)

    host, first = wait_until(lambda: _beat_heartbeat(site), "beat's heartbeat", 90)
    assert host == f"{socket.gethostname()}:{beat.pid}"
    # Written again from later ticks (every 15 s), not only once.
    wait_until(lambda: (_beat_heartbeat(site) or ("", first))[1] > first or None, "a later heartbeat", 90)
    assert beat.poll() is None, site.log("beat")
