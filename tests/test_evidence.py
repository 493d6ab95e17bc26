"""backup_evidence against a known catalog: the JSON's counts, outages and proofs exactly, the CSV
rows, the HTML's sections and SVG charts (and in headless Chromium), no planted secret in any
format, --output written atomically with mode 0640, and usage errors (exit 2)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from backups import secrets, services
from backups.models import (
    AuditEvent,
    Backup,
    BackupCopy,
    BackupStatus,
    BackupStep,
    CopyStatus,
    Drill,
    DrillStatus,
    Proof,
    StepStatus,
    Storage,
    Target,
)
from restores.evidence import collect
from restores.models import RestoreLog, RestoreStatus
from schedules.models import BackupSchedule
from tests.browser.helpers import missing_browser, png_size, save_screenshot, start_chromium

PLANTED = "Pl4nted-evidence-S3cret"
SHA = "ab" * 32
DAY = 86400.0


@dataclass
class Catalog:
    now: datetime
    shop: Target
    media: Target
    app: Target
    real_backup: Backup


def _backup(target: Target, storage: Storage, at: datetime, status: str, **fields: Any) -> Backup:
    duration = fields.pop("duration", 60.0)
    backup = Backup.objects.create(
        target=target,
        backup_name=f"{target.name}-{at:%Y%m%d%H%M}",
        status=status,
        started_at=at,
        completed_at=at + timedelta(seconds=duration),
        duration_seconds=duration,
        **fields,
    )
    if status == BackupStatus.SUCCESS:
        BackupCopy.objects.create(
            backup=backup,
            storage=storage,
            path=f"{backup.backup_name}.gz",
            size=1234,
            status=CopyStatus.STORED,
        )
    return backup


@pytest.fixture
def catalog(sqlite_target: Target, local_storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setenv("EVIDENCE_SHOP_PASSWORD", PLANTED)
    secrets.remember(secrets.resolve("${EVIDENCE_SHOP_PASSWORD}"))  # as a run that connected would
    real = services.run_backup(sqlite_target, initiated_by="test")
    assert real.status == BackupStatus.SUCCESS
    now = timezone.now()
    shop = Target.objects.create(
        name="shop-db",
        engine="postgresql",
        host="db.internal",
        database="shop",
        user="backup",
        password="${EVIDENCE_SHOP_PASSWORD}",
        retention={"keep_daily": 7, "keep_weekly": 4},
        encryption="offsite",
        drill="0 4 * * 0",
    )
    shop.storages.add(local_storage)
    BackupSchedule.objects.create(name="shop-nightly", target=shop, cron_expression="0 2 * * *")
    first = _backup(
        shop, local_storage, now - timedelta(days=10), "success", file_size=1234, checksum=SHA,
        proof=Proof.DRILLED, proof_at=now - timedelta(days=6),
    )  # fmt: skip
    _backup(
        shop, local_storage, now - timedelta(days=9), "failed", error_message=f"password {PLANTED} refused"
    )
    _backup(shop, local_storage, now - timedelta(days=8), "failed")
    verified = _backup(
        shop, local_storage, now - timedelta(days=7), "success", duration=120.0, file_size=2048, checksum=SHA,
        proof=Proof.VERIFIED, proof_at=now - timedelta(days=5), verified=True, verified_at=now - timedelta(days=5),
    )  # fmt: skip
    BackupStep.objects.create(
        backup=verified, name="verify", status=StepStatus.SUCCESS, started_at=now - timedelta(days=5),
        completed_at=now - timedelta(days=5) + timedelta(seconds=3), message=f"local: ok ({PLANTED})",
    )  # fmt: skip
    BackupStep.objects.create(backup=verified, name="dump", status=StepStatus.SUCCESS, started_at=now)
    _backup(shop, local_storage, now - timedelta(days=2), "failed")  # still failing: an open outage
    Drill.objects.create(
        target=shop, backup=first, status=DrillStatus.PASSED, started_at=now - timedelta(days=6),
        restore_seconds=42.5, data_age_seconds=4 * DAY,
        checks=[{"name": "orders", "expected": "> 0", "actual": "17", "ok": True}],
    )  # fmt: skip
    Drill.objects.create(
        target=shop, backup=verified, status=DrillStatus.FAILED, started_at=now - timedelta(days=1),
        restore_seconds=50.0, data_age_seconds=6 * DAY, error_message="check failed",
        checks=[{"name": "select count(*) > 0 from orders", "expected": "true", "actual": "false", "ok": False}],
    )  # fmt: skip
    Drill.objects.create(
        target=shop, backup=first, status=DrillStatus.PASSED, started_at=now - timedelta(days=200)
    )
    RestoreLog.objects.create(
        backup=verified, destination=shop, status=RestoreStatus.SUCCESS, initiated_by="alice",
        confirmed_by="alice", decided_by="bob", started_at=now - timedelta(days=3),
        completed_at=now - timedelta(days=3) + timedelta(seconds=300),
    )  # fmt: skip
    media = Target.objects.create(name="media", engine="files", paths=["/srv/media"])
    media.storages.add(local_storage)
    _backup(media, local_storage, now - timedelta(days=100), "success")  # before the window
    _backup(media, local_storage, now - timedelta(days=95), "failed")  # the outage began here...
    _backup(media, local_storage, now - timedelta(days=5), "failed")
    _backup(media, local_storage, now - timedelta(days=4), "success", duration=30.0, proof=Proof.STORED)
    real.refresh_from_db()
    return Catalog(now, shop, media, sqlite_target, real)


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("backup_evidence", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _target(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(target for target in report["targets"] if target["name"] == name)


@pytest.mark.django_db
def test_it_reports_the_known_catalog_exactly_in_json(catalog: Catalog) -> None:
    report = json.loads(_run("--since", "90d", "--format", "json"))
    assert report["format"] == "backupsite-evidence/1"
    assert [target["name"] for target in report["targets"]] == ["app-db", "media", "shop-db"]
    assert report["generated_at"].endswith("Z") and report["since"].endswith("Z")
    shop = _target(report, "shop-db")
    assert shop["policy"] == {
        "engine": "postgresql",
        "host": "db.internal",
        "database": "shop",
        "retention": "keep_daily 7; keep_weekly 4",
        "schedules": [
            {
                "name": "shop-nightly",
                "cron": "0 2 * * *",
                "timezone": "UTC",
                "backup_type": "full",
                "active": True,
            }
        ],
        "encryption_key": "offsite",
        "escrow_keys": [],
        "storages": ["local"],
        "drill_schedule": "0 4 * * 0",
    }
    assert [b["status"] for b in shop["backups"]] == ["success", "failed", "failed", "success", "failed"]
    first, _, _, verified, _ = shop["backups"]
    assert (first["proof"], verified["proof"]) == ("drilled", "verified")
    assert (first["drills_passed"], first["drills_failed"]) == (1, 0)  # the 200-day-old drill is outside
    assert (verified["drills_passed"], verified["drills_failed"]) == (0, 1)
    assert first["copies"] == [{"storage": "local", "status": "stored", "size_bytes": 1234}]
    assert first["sha256"] == SHA and first["size_bytes"] == 1234 and first["duration_seconds"] == 60.0
    assert [(v["step"], v["status"], v["duration_seconds"]) for v in verified["verifications"]] == [
        ("verify", "success", 3.0)
    ]
    assert len(shop["drills"]) == 2
    assert [(d["status"], d["restore_seconds"]) for d in shop["drills"]] == [
        ("passed", 42.5),
        ("failed", 50.0),
    ]
    assert shop["drills"][1]["checks"] == [
        {"name": "select count(*) > 0 from orders", "expected": "true", "actual": "false", "ok": False}
    ]
    assert shop["restores"][0] | {"id": 0, "backup_id": 0, "started_at": "", "completed_at": ""} == {
        "id": 0, "backup_id": 0, "destination": "shop-db", "initiated_by": "alice", "confirmed_by": "alice",
        "approved_by": "bob", "status": "success", "started_at": "", "completed_at": "", "duration_seconds": 300.0,
        "error": "",
    }  # fmt: skip
    # Failed at -9 d and -8 d, fixed by the success of -7 d (completed 120 s later); failing since -2 d.
    closed, still_open = shop["outages"]
    assert (closed["failed_runs"], closed["duration_seconds"], closed["open"]) == (2, 2 * DAY + 120.0, False)
    assert (still_open["failed_runs"], still_open["open"], still_open["ended_at"]) == (1, True, None)
    assert still_open["duration_seconds"] == pytest.approx(2 * DAY, abs=120)
    assert shop["summary"] | {"last_drill_at": "", "newest_success_at": ""} == {
        "backups": 5, "successes": 2, "failures": 3, "longest_outage_seconds": 2 * DAY + 120.0,
        "open_outage": True, "last_drill": "failed", "last_drill_at": "", "newest_success_proof": "verified",
        "newest_success_at": "",
    }  # fmt: skip
    # media's outage began before the window (-95 d) and ended with the success of -4 d (+30 s).
    media = _target(report, "media")
    [outage] = media["outages"]
    assert (outage["failed_runs"], outage["duration_seconds"], outage["open"]) == (1, 91 * DAY + 30.0, False)
    assert media["summary"]["backups"] == 2
    app = _target(report, "app-db")
    [real] = app["backups"]
    assert real["id"] == catalog.real_backup.pk and real["sha256"] == catalog.real_backup.checksum
    assert real["proof"] == catalog.real_backup.proof == "stored"
    assert (
        real["copies"][0]["status"] == "stored"
        and real["copies"][0]["size_bytes"] == catalog.real_backup.file_size
    )
    assert app["summary"]["newest_success_proof"] == "stored" and app["outages"] == []


@pytest.mark.django_db
def test_it_collects_in_a_fixed_number_of_queries(catalog: Catalog, django_assert_num_queries: Any) -> None:
    # 8 for every target together (targets, storages, schedules, backups, copies, verify steps,
    # drills, restores), and 2 for media, whose window opens on a failure: none per backup.
    with django_assert_num_queries(10):
        evidence = collect(catalog.now - timedelta(days=90), now=catalog.now)
    assert len(evidence.targets) == 3


@pytest.mark.django_db
def test_it_writes_one_csv_row_per_backup_drill_or_restore(catalog: Catalog) -> None:
    rows = list(csv.reader(io.StringIO(_run("--format", "csv", "--target", "shop-db"))))
    assert rows[0] == [
        "target", "id", "status", "type", "started", "duration_seconds", "size_bytes", "sha256", "copies",
        "proof", "proof_at", "verified_at", "drills_passed", "drills_failed",
    ]  # fmt: skip
    assert [row[2] for row in rows[1:]] == ["success", "failed", "failed", "success", "failed"]
    first = rows[1]
    assert first[0] == "shop-db" and first[6:9] == ["1234", SHA, "local:stored:1234"]
    assert first[9] == "drilled" and first[12:] == ["1", "0"]
    drills = list(csv.reader(io.StringIO(_run("--format", "csv", "--what", "drills", "--target", "shop-db"))))
    assert [(row[3], row[6], row[9], row[10]) for row in drills[1:]] == [
        ("passed", "42.5", "1", "0"),
        ("failed", "50.0", "0", "1"),
    ]
    restores = list(csv.reader(io.StringIO(_run("--format", "csv", "--what", "restores"))))
    assert [(row[0], row[3], row[4], row[6], row[9]) for row in restores[1:]] == [
        ("shop-db", "shop-db", "alice", "success", "300.0")
    ]


@pytest.mark.django_db
def test_it_draws_each_target_in_html_with_its_charts(catalog: Catalog) -> None:
    page = _run("--format", "html")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    # Self-contained: no stylesheet, image or font fetched (the SVG namespace is a name, not a fetch).
    assert not re.search(r"<link|src=|url\(|@import", page)
    for name in ("app-db", "media", "shop-db"):
        assert f'<section class="target" id="target-{name}">' in page
    assert page.count("<svg") == 6  # a timeline and a restore-time trend per target
    assert "<title>Backupsite on " in page and "<h1>Backupsite on " in page
    assert "@media print" in page and "page-break-before: always" in page
    assert "Restore time of drills (max 50 s, 2 measured)" in page
    assert "select count(*) &gt; 0 from orders" in page  # escaped
    assert "still open" in page


@pytest.mark.django_db
def test_it_never_shows_a_secret(catalog: Catalog) -> None:
    for form in ("json", "csv", "html"):
        text = _run("--format", form)
        assert PLANTED not in text, form
        assert "EVIDENCE_SHOP_PASSWORD" not in text, form  # not even the reference
    assert "password ******** refused" in _run("--format", "json")


@pytest.mark.django_db
def test_it_writes_the_output_atomically_with_mode_0640(catalog: Catalog, tmp_path: Path) -> None:
    target = tmp_path / "out" / "evidence.json"
    target.parent.mkdir()
    target.write_text("old")
    os.chmod(target, 0o600)
    assert _run("--format", "json", "--output", str(target)) == ""
    assert json.loads(target.read_text())["targets"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(path.name for path in target.parent.iterdir()) == ["evidence.json"]  # no temporary left
    event = AuditEvent.objects.filter(action="evidence.export").latest("id")
    assert event.auth_method == "cli" and event.details["format"] == "json" and event.details["targets"] == 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--target", "nope"), "--target: no target named 'nope'"),
        (("--since", "soon"), "--since: 'soon' is neither a duration"),
        (("--output", "/nonexistent-dir/x.html"), "--output: directory /nonexistent-dir does not exist"),
        (("--format", "json", "--what", "drills"), "--what applies to --format csv only"),
    ],
)
def test_it_refuses_bad_arguments_with_exit_2(catalog: Catalog, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError) as caught:
        _run(*args)
    assert caught.value.returncode == 2
    assert message in str(caught.value)
    assert not AuditEvent.objects.filter(action="evidence.export").exists()


@pytest.mark.django_db
@pytest.mark.slow
def test_it_reads_well_in_headless_chromium(catalog: Catalog, tmp_path: Path) -> None:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    page = tmp_path / "evidence.html"
    _run("--format", "html", "--output", str(page))
    browser = start_chromium(tmp_path / "profile")
    try:
        browser.get(page.as_uri())
        assert "backup evidence" in browser.title
        sections = browser.find_elements("css selector", "section.target")
        assert [section.get_attribute("id") for section in sections] == [
            "target-app-db", "target-media", "target-shop-db",
        ]  # fmt: skip
        charts = browser.find_elements("css selector", "section.target svg")
        assert len(charts) == 6 and all(chart.size["width"] > 300 for chart in charts)
        browser.set_window_size(1400, 1500)
        shot = save_screenshot(browser, tmp_path / "evidence.png")
        browser.execute_script("document.getElementById('target-shop-db').scrollIntoView(); scrollBy(0, -12)")
        save_screenshot(browser, tmp_path / "evidence-target.png")
        pdf = base64.b64decode(browser.print_page())  # the print stylesheet: a page per target at least
        (tmp_path / "evidence.pdf").write_bytes(pdf)
    finally:
        browser.quit()
    assert png_size(shot)[0] >= 1000
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 4
