"""The public door of the backups app: every caller outside the core (commands, tasks, admin,
views, and the schedules and restores apps) enters here, never through the internal packages.

Each entry point records what it did on the catalog rows; callers only present the outcome. The
work is done in ``runs`` (a backup run), ``verification`` (reading copies back), ``cleanup``
(retention carried out), ``catalog`` (rebuilding rows from storage), ``config`` (the TOML file),
``notifications`` and ``resources`` (what they all resolve right before use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from backups.access.roles import (
    apply_grants,
    can,
    can_somewhere,
    has_any_role,
    initiator_may,
    visible_target_ids,
)
from backups.audit import AuditObject
from backups.audit import event_dict as audit_event_dict
from backups.audit import events_since as audit_events_since
from backups.audit import parse_since as parse_audit_since
from backups.audit import record as record_audit
from backups.audit import record_deletions as record_audit_deletions
from backups.checks import retention_errors
from backups.cleanup import (
    CleanupPlan,
    GroupPlan,
    backup_info,
    cleanup_target,
    plan_cleanup,
    policy_for,
    sweep_storages,
)
from backups.config.applied import Waited, file_digest, wait_until_applied
from backups.config.applied import drift as config_drift
from backups.config.applied import newest_applied as newest_applied_config
from backups.config.checks import Validator, secret_problems, suggest
from backups.config.diff import ConfigDiff
from backups.config.loader import ApplyReport, Config, ConfigInvalid
from backups.config.loader import apply as apply_config
from backups.config.loader import diff as diff_config
from backups.config.loader import load as load_config
from backups.config.loader import validate as validate_config
from backups.config.registry import (
    ConfigSection,
    Declared,
    Known,
    Written,
    register_section,
    set_storages,
    upsert,
)
from backups.config.sections import engine_option_problems, option_problems, retention_rules, storage_refs
from backups.drills import DrillRefused, drill_dict, pick_drill_backup, reap_lost_drills, run_drill
from backups.engines import Connection, Engine, EngineError, engine_keys, get_engine
from backups.engines.base import ChainLink, RestoreOptions, RestoreResult
from backups.engines.configuration import ConfigurationEngine
from backups.keys import (
    Encryption,
    KeyProblem,
    KeyStatus,
    KeyUnavailable,
    describe_keys,
    encryption_for,
    generate_key,
    identities_for,
    key_status,
    register_key,
)
from backups.keys import (
    retire as retire_key,
)
from backups.keys import (
    rotate as rotate_key,
)
from backups.logs import log_context
from backups.models import AuditEvent
from backups.notifications import (
    RESTORE_FINISHED,
    RESTORE_REQUESTED,
    notify,
    notify_backup,
    send_unsent,
    sender_stopped,
)
from backups.notifiers import NotifierError, notifier_class
from backups.processes import process_gone, this_worker
from backups.proof import record_proof
from backups.queues import DEFAULT_QUEUE, WATCH_QUEUE, queue_for, queue_problem
from backups.requests import (
    AwaitingDecision,
    RunningWork,
    ScheduleInfo,
    ScheduleOverview,
    ScheduleState,
    awaiting_decisions,
    reap_lost_work,
    register_awaiting_decisions,
    register_cron_check,
    register_key_users,
    register_reaper,
    register_running_work,
    register_schedule_lookup,
    register_schedule_overview,
    register_schedule_states,
)
from backups.resources import (
    MANIFEST_FORMAT,
    MANIFEST_SUFFIX,
    ServiceError,
    connection_for,
    engine_for,
    restore_manifest,
    scratch_dir,
    storage_for,
    stored_copies,
)
from backups.retention.planner import BackupInfo
from backups.retention.planner import plan as plan_retention
from backups.retention.policy import Policy, PolicyError
from backups.runs.chains import chain_of, load_manifest
from backups.runs.claims import reap_lost_runs, reap_stale_runs
from backups.runs.heartbeat import Heartbeat
from backups.runs.manifests import build_manifest
from backups.runs.service import CatalogUnreachable, queue_backup, run_backup, supports_type, type_problem
from backups.runs.steps import describe_error
from backups.secrets import SecretError, redact
from backups.secrets import remember as remember_secret  # provisioned passwords (restores)
from backups.storages import StorageError, storage_class
from backups.streaming.encryption import EncryptionError, KeyMismatch
from backups.verification import (
    VerifyOutcome,
    check_copy_digest,
    check_decryption,
    check_manifest,
    check_sandbox,
    feed_copy,
    verify_backup,
)

if TYPE_CHECKING:
    from backups.catalog import ReconcileReport, ReindexReport, reconcile, reindex_storage
    from backups.downloads import Download, NoSuchBackup, start_download
    from backups.health.charts import history_charts
    from backups.health.heartbeats import heartbeat_seen, touch_heartbeat
    from backups.health.metrics import metrics_exposition, metrics_refusal
    from backups.health.progress import progress
    from backups.health.readiness import Readiness, readiness
    from backups.health.summary import Dashboard, TargetSummary, dashboard
    from backups.retention.spec import SpecError, parse_moment, parse_spec, parse_timestamps
    from backups.watching.expect import register_cron_clock
    from backups.watching.service import ScanReport, external_targets, scan_external_target
    from backups.watching.settings import run_refusal

# Entry points only some commands and views need, imported on first use so that every process
# (and every short command) does not load them at start-up.
_ON_FIRST_USE = {
    "Dashboard": "backups.health.summary",
    "TargetSummary": "backups.health.summary",
    "dashboard": "backups.health.summary",
    "progress": "backups.health.progress",
    "history_charts": "backups.health.charts",
    # Health and metrics (/healthz, /readyz, /metrics; beat's heartbeat)
    "heartbeat_seen": "backups.health.heartbeats",
    "touch_heartbeat": "backups.health.heartbeats",
    "metrics_exposition": "backups.health.metrics",
    "metrics_refusal": "backups.health.metrics",
    "Readiness": "backups.health.readiness",
    "readiness": "backups.health.readiness",
    "ReconcileReport": "backups.catalog",
    "ReindexReport": "backups.catalog",
    "reconcile": "backups.catalog",
    "reindex_storage": "backups.catalog",
    "Download": "backups.downloads",
    "NoSuchBackup": "backups.downloads",
    "start_download": "backups.downloads",
    "SpecError": "backups.retention.spec",
    "parse_moment": "backups.retention.spec",
    "parse_spec": "backups.retention.spec",
    "parse_timestamps": "backups.retention.spec",
    # External targets: backups another tool writes, watched and adopted (backups/watching/)
    "ScanReport": "backups.watching.service",
    "external_targets": "backups.watching.service",
    "scan_external_target": "backups.watching.service",
    "register_cron_clock": "backups.watching.expect",
    "run_refusal": "backups.watching.settings",
}


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_QUEUE",
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "RESTORE_FINISHED",
    "RESTORE_REQUESTED",
    "WATCH_QUEUE",
    "ApplyReport",
    "AuditEvent",
    "AuditObject",
    "AwaitingDecision",
    "BackupInfo",
    "CatalogUnreachable",
    "ChainLink",
    "CleanupPlan",
    "Config",
    "ConfigDiff",
    "ConfigInvalid",
    "ConfigSection",
    "ConfigurationEngine",
    "Connection",
    "Dashboard",
    "Declared",
    "Download",
    "DrillRefused",
    "Encryption",
    "EncryptionError",
    "Engine",
    "EngineError",
    "GroupPlan",
    "Heartbeat",
    "KeyMismatch",
    "KeyProblem",
    "KeyStatus",
    "KeyUnavailable",
    "Known",
    "NoSuchBackup",
    "NotifierError",
    "Policy",
    "PolicyError",
    "Readiness",
    "ReconcileReport",
    "ReindexReport",
    "RestoreOptions",
    "RestoreResult",
    "RunningWork",
    "ScanReport",
    "ScheduleInfo",
    "ScheduleOverview",
    "ScheduleState",
    "SecretError",
    "ServiceError",
    "SpecError",
    "StorageError",
    "TargetSummary",
    "Validator",
    "VerifyOutcome",
    "Waited",
    "Written",
    "apply_config",
    "apply_grants",
    "audit_event_dict",
    "audit_events_since",
    "awaiting_decisions",
    "backup_info",
    "build_manifest",
    "can",
    "can_somewhere",
    "chain_of",
    "check_copy_digest",
    "check_decryption",
    "check_manifest",
    "check_sandbox",
    "cleanup_target",
    "config_drift",
    "connection_for",
    "dashboard",
    "describe_error",
    "describe_keys",
    "diff_config",
    "drill_dict",
    "encryption_for",
    "engine_for",
    "engine_keys",
    "engine_option_problems",
    "external_targets",
    "feed_copy",
    "file_digest",
    "generate_key",
    "get_engine",
    "has_any_role",
    "heartbeat_seen",
    "history_charts",
    "identities_for",
    "initiator_may",
    "key_status",
    "load_config",
    "load_manifest",
    "log_context",
    "metrics_exposition",
    "metrics_refusal",
    "newest_applied_config",
    "notifier_class",
    "notify",
    "notify_backup",
    "option_problems",
    "parse_audit_since",
    "parse_moment",
    "parse_spec",
    "parse_timestamps",
    "pick_drill_backup",
    "plan_cleanup",
    "plan_retention",
    "policy_for",
    "process_gone",
    "progress",
    "queue_backup",
    "queue_for",
    "queue_problem",
    "readiness",
    "reap_lost_drills",
    "reap_lost_runs",
    "reap_lost_work",
    "reap_stale_runs",
    "reconcile",
    "record_audit",
    "record_audit_deletions",
    "record_proof",
    "redact",
    "register_awaiting_decisions",
    "register_cron_check",
    "register_cron_clock",
    "register_key",
    "register_key_users",
    "register_reaper",
    "register_running_work",
    "register_schedule_lookup",
    "register_schedule_overview",
    "register_schedule_states",
    "register_section",
    "reindex_storage",
    "remember_secret",
    "restore_manifest",
    "retention_errors",
    "retention_rules",
    "retire_key",
    "rotate_key",
    "run_backup",
    "run_drill",
    "run_refusal",
    "scan_external_target",
    "scratch_dir",
    "secret_problems",
    "send_unsent",
    "sender_stopped",
    "set_storages",
    "start_download",
    "storage_class",
    "storage_for",
    "storage_refs",
    "stored_copies",
    "suggest",
    "supports_type",
    "sweep_storages",
    "this_worker",
    "touch_heartbeat",
    "type_problem",
    "upsert",
    "validate_config",
    "verify_backup",
    "visible_target_ids",
    "wait_until_applied",
]
