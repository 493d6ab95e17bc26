"""Business logic of backups: the entry points every caller (commands, tasks, admin, views) uses.
Each records what it did on the catalog rows; callers only present the outcome. The work is
done in ``runs`` (a backup run), ``verification`` (reading copies back), ``cleanup`` and
``resources`` (what they all resolve right before use)."""

from __future__ import annotations

from backups.runs.claims import reap_lost_runs, reap_stale_runs, this_worker
from backups.runs.manifests import build_manifest
from backups.runs.service import run_backup, supports_type, type_problem

from .cleanup import (
    CleanupPlan,
    GroupPlan,
    backup_info,
    cleanup_target,
    plan_cleanup,
    policy_for,
    sweep_storages,
)
from .resources import (
    MANIFEST_FORMAT,
    MANIFEST_SUFFIX,
    ServiceError,
    connection_for,
    restore_manifest,
    scratch_dir,
    storage_for,
    stored_copies,
)
from .verification import VerifyOutcome, check_copy_digest, check_sandbox, feed_copy, verify_backup

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "CleanupPlan",
    "GroupPlan",
    "ServiceError",
    "VerifyOutcome",
    "backup_info",
    "build_manifest",
    "check_copy_digest",
    "check_sandbox",
    "cleanup_target",
    "connection_for",
    "feed_copy",
    "plan_cleanup",
    "policy_for",
    "reap_lost_runs",
    "reap_stale_runs",
    "restore_manifest",
    "run_backup",
    "scratch_dir",
    "storage_for",
    "stored_copies",
    "supports_type",
    "sweep_storages",
    "this_worker",
    "type_problem",
    "verify_backup",
]
