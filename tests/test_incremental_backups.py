"""Incremental file backups through the real services: chains built by runs, restored point in
time by restores, protected by cleanup, rebuilt by reindex, and restorable by hand with tar."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from backups import services
from backups.catalog import reindex_storage
from backups.models import Backup, BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import RestoreRefused, restore_backup
from schedules.models import BackupSchedule
from schedules.requests import info_for
from tests.test_engine_contract import tree

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]
DAY = timedelta(days=1)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "b.bin").write_bytes(os.urandom(50_000))
    (root / "keep.txt").write_text("unchanged all along\n")
    (root / "old-dir" / "inner").mkdir(parents=True)
    (root / "old-dir" / "inner" / "x.txt").write_text("x\n")
    (root / "link").symlink_to("keep.txt")
    return root


@pytest.fixture
def target(local_storage: Storage, source: Path) -> Target:
    target = Target.objects.create(name="data", engine="files", paths=[str(source)], compression="zstd")
    target.storages.add(local_storage)
    return target


def destination(local_storage: Storage, path: Path) -> Target:
    target = Target.objects.create(name=f"restore-{path.name}", engine="files", paths=[str(path)])
    target.storages.add(local_storage)
    return target


def backup(target: Target, backup_type: str, **kwargs: object) -> Backup:
    if isinstance(kwargs.get("schedule"), BackupSchedule):
        kwargs["schedule"] = info_for(kwargs["schedule"])  # type: ignore[arg-type]
    made = services.run_backup(target, backup_type=backup_type, **kwargs)  # type: ignore[arg-type]
    assert made.status == BackupStatus.SUCCESS, made.error_message
    return made


def five_point_chain(
    target: Target, source: Path
) -> tuple[list[Backup], list[dict[str, tuple[str, object]]]]:
    """A full backup and four incrementals with creates, edits, deletes and renames between them;
    the source tree right after each."""
    made, snapshots = [backup(target, "full")], [tree(source)]

    def step(change: object) -> None:
        made.append(backup(target, "incremental"))
        snapshots.append(tree(source))

    (source / "docs" / "a.txt").write_text("alpha, edited\n")  # modify
    (source / "new.txt").write_text("created\n")  # create
    step(None)
    (source / "docs" / "b.bin").rename(source / "docs" / "renamed.bin")  # rename
    shutil.rmtree(source / "old-dir")  # delete a directory tree
    step(None)
    (source / "new.txt").unlink()  # delete a file
    (source / "new.txt").mkdir()  # ... and put a directory in its place
    (source / "new.txt" / "inside").write_text("now a directory\n")
    (source / "link").unlink()
    (source / "link").symlink_to("docs/a.txt")  # a link pointing elsewhere
    step(None)
    (source / "empty").mkdir()
    (source / "docs" / "a.txt").write_text("alpha, edited again\n")
    step(None)
    return made, snapshots


def test_it_restores_every_point_in_time_of_a_five_backup_chain_exactly(
    target, source, local_storage, tmp_path
):
    made, snapshots = five_point_chain(target, source)
    assert [b.backup_type for b in made] == ["full"] + ["incremental"] * 4
    assert [b.base_id for b in made] == [None] + [b.pk for b in made[:-1]]
    assert (made[1].file_size or 0) < (made[0].file_size or 0)  # only the changes
    for index, (point, expected) in enumerate(zip(made, snapshots, strict=True)):
        into = tmp_path / f"point-{index}"
        log = restore_backup(point, destination(local_storage, into), initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert tree(into) == expected, f"point {index}"
        if index:
            assert f"chain of {index + 1} backups" in log.notes


def test_it_records_the_base_of_each_link_and_what_it_holds(target, source, storage_dir):
    made, _ = five_point_chain(target, source)
    chain_steps = list(made[2].steps.filter(name="chain").values_list("message", flat=True))
    assert chain_steps == [f"built on backup {made[1].pk} (incremental); link 3 of its chain"]
    manifest = json.loads((storage_dir / f"{made[2].file_path}.manifest.json").read_text())
    assert manifest["backup"]["base_file_path"] == made[1].file_path
    assert "index" in manifest["engine_info"]
    assert "index" not in made[2].engine_info  # the catalog keeps the small facts only
    assert any("old-dir" in path for path in manifest["engine_info"]["deleted"])


def test_it_turns_a_first_incremental_into_a_full_backup_and_says_so(target):
    made = backup(target, "incremental")
    assert made.backup_type == "full" and made.base_id is None
    assert "-full-" in made.backup_name and "no earlier full or incremental backup" in made.notes


def test_it_makes_a_chain_that_restores_by_hand_with_tar_and_the_manifests(
    target, source, storage_dir, tmp_path
):
    made, snapshots = five_point_chain(target, source)
    into = tmp_path / "by-hand"
    into.mkdir()
    for link in made:  # the README's procedure: delete what the link deleted, then extract it
        archive = storage_dir / link.file_path
        manifest = storage_dir / f"{link.file_path}.manifest.json"
        script = (
            f"jq -r '.engine_info.deleted[]?' '{manifest}' | xargs -r -d '\\n' rm -rf -- && "
            f"zstd -dc '{archive}' | tar -xf -"
        )
        subprocess.run(["bash", "-c", "set -o pipefail; " + script], cwd=into, check=True)
    assert tree(into / source.name) == snapshots[-1]


def test_it_never_lets_retention_delete_a_base_that_a_kept_incremental_needs(target, source):
    made, _ = five_point_chain(target, source)
    target.retention = {"keep_last": 1}
    target.save()
    plan = services.plan_cleanup(target)
    assert plan.delete == []
    reasons = {b.pk: reasons for b, reasons in plan.keep}
    assert any("base" in reason for reason in reasons[made[0].pk])
    services.cleanup_target(target, force=True)
    assert not Backup.objects.filter(pk__in=[b.pk for b in made], deleted_at__isnull=False).exists()


def test_it_lets_retention_drop_the_old_chain_after_a_new_full_backup(target, source):
    made, _ = five_point_chain(target, source)
    newer = backup(target, "full")
    target.retention = {"keep_last": 1}
    target.save()
    plan = services.plan_cleanup(target)
    assert {b.pk for b, _ in plan.delete} == {b.pk for b in made}
    assert [b.pk for b, _ in plan.keep] == [newer.pk]


def test_it_protects_a_chain_across_schedules_from_the_full_schedules_policy(target, source):
    weekly = BackupSchedule.objects.create(
        name="weekly-full", target=target, cron_expression="0 3 * * 0", retention={"keep_last": 1}
    )
    daily = BackupSchedule.objects.create(
        name="daily-incr", target=target, backup_type="incremental", cron_expression="0 3 * * *",
        retention={"keep_last": 7},
    )  # fmt: skip
    old_full = backup(target, "full", schedule=weekly)
    (source / "one.txt").write_text("1\n")
    increments = [backup(target, "incremental", schedule=daily)]
    newest_full = backup(target, "full", schedule=weekly)
    (source / "two.txt").write_text("2\n")
    increments.append(backup(target, "incremental", schedule=daily))
    assert increments[0].base_id == old_full.pk and increments[1].base_id == newest_full.pk
    plan = services.plan_cleanup(target)
    assert plan.delete == []  # weekly's keep_last=1 would drop old_full, which increments[0] needs
    assert ("base of a kept incremental backup",) in [r for b, r in plan.keep if b.pk == old_full.pk]


def test_it_refuses_a_chain_with_a_deleted_link_before_anything_is_touched(
    target, source, local_storage, tmp_path
):
    made, _ = five_point_chain(target, source)
    Backup.objects.filter(pk=made[1].pk).update(deleted_at=made[1].started_at)
    into = tmp_path / "never"
    with pytest.raises(RestoreRefused, match=f"depends on backup {made[1].pk}, which is deleted"):
        restore_backup(made[3], destination(local_storage, into))
    assert not into.exists()


def test_it_fails_the_restore_on_a_damaged_link_and_leaves_the_destination_alone(
    target, source, local_storage, storage_dir, tmp_path
):
    made, _ = five_point_chain(target, source)
    stored = storage_dir / made[2].file_path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    into = tmp_path / "restore-here"
    into.mkdir()
    (into / "mine.txt").write_text("do not touch\n")
    log = restore_backup(made[4], destination(local_storage, into))
    assert log.status == RestoreStatus.FAILED
    assert f"(backup {made[2].pk})" in log.error_message and "checksum mismatch" in log.error_message
    assert tree(into) == {"mine.txt": ("file", b"do not touch\n")}


def test_it_rebuilds_the_chain_links_from_the_manifests_on_reindex(target, source, local_storage, tmp_path):
    made, snapshots = five_point_chain(target, source)
    Backup.objects.filter(pk__in=[b.pk for b in made]).update(base=None)
    for link in reversed(made):
        link.copies.all().delete()
        link.steps.all().delete()
        Backup.objects.filter(pk=link.pk).delete()
    report = reindex_storage(local_storage)
    assert report.problems == []
    rebuilt = list(Backup.objects.filter(target=target).order_by("started_at"))
    assert [b.base_id for b in rebuilt] == [None] + [b.pk for b in rebuilt[:-1]]
    into = tmp_path / "after-reindex"
    log = restore_backup(rebuilt[-1], destination(local_storage, into))
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert tree(into) == snapshots[-1]


def test_it_refuses_an_incremental_whose_base_is_unknown(target, source, local_storage, tmp_path):
    made, _ = five_point_chain(target, source)
    Backup.objects.filter(pk=made[4].pk).update(base=None)
    with pytest.raises(RestoreRefused, match="holds only the changes"):
        restore_backup(Backup.objects.get(pk=made[4].pk), destination(local_storage, tmp_path / "x"))
