"""What the API answers and accepts, as schemas (the OpenAPI document is built from them).

Statuses are the catalog's values in capitals (``SUCCESS``, ``FAILED``, ...): a backup's
``SUCCESS`` is success, and every other finished status (``FAILED``, ``SKIPPED``, ``CORRUPT``)
a failure; a restore's ``SUCCESS`` likewise (``FAILED``, ``REJECTED``, ``EXPIRED`` fail).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from ninja import Field, Schema

MAX_ID = 2**63 - 1  # the catalog's ids are 64-bit; a larger one names nothing
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
NAME_PATTERN = r"^[-a-zA-Z0-9_]{1,100}$"  # a target's name (a slug)
TEXT_PATTERN = r"^[^\x00]*$"  # free text: anything but NUL, which no catalog database stores
ERRORS = frozenset({400, 401, 403, 404, 409, 422, 429})


class ErrorOut(Schema):
    code: str = Field(description="invalid, unauthenticated, forbidden, not_found, conflict, rate_limited")
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(description="The input at fault, or null.")


class HealthOut(Schema):
    status: str = Field(description="ok, or unavailable when the catalog does not answer")
    version: str


class TargetOut(Schema):
    name: str
    engine: str
    tags: list[str]
    status: str = Field(description="As on the dashboard: OK, FAILING, MISSED, RUNNING, NEVER RUN or PAUSED")
    last_success_at: datetime | None
    last_backup_id: int | None
    next_run_at: datetime | None
    stored_bytes: int
    runnable: bool = Field(description="Whether Backupsite itself makes its backups (run now, restore).")


class TargetList(Schema):
    items: list[TargetOut]


class RunIn(Schema):
    backup_type: str = Field(
        default="full", pattern=r"^[a-z]{1,32}$", description="full (default), incremental, configuration..."
    )


class RunOut(Schema):
    backup_id: int = Field(description="The run's backup, written PENDING at once; follow it at url.")
    status: str = Field(description="PENDING until a worker takes it, then RUNNING, SUCCESS, ...")
    url: str


class KeptOut(Schema):
    id: int
    created_at: datetime
    reasons: list[str]


class DeletedOut(Schema):
    id: int
    created_at: datetime
    reason: str


class RetentionOut(Schema):
    keep: list[KeptOut]
    delete: list[DeletedOut]
    refused: str = Field(description="Why the safety brake would stop the next cleanup; empty: it would not.")
    errors: list[str]


class BackupOut(Schema):
    id: int
    target: str
    status: str
    backup_type: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    size_bytes: int | None = Field(description="Stored (compressed, encrypted) bytes.")
    sha256: str | None
    compression: str
    encrypted: bool
    error_message: str
    proof: str | None = Field(description="stored, verified, trial or drilled; null: none")


class ProgressOut(Schema):
    bytes_done: int
    phase: str | None


class StepOut(Schema):
    name: str
    status: str
    started_at: datetime
    completed_at: datetime | None
    message: str


class CopyOut(Schema):
    storage: str
    status: str
    size_bytes: int | None
    path: str


class BackupDetailOut(BackupOut):
    progress: ProgressOut | None = Field(description="While PENDING or RUNNING; null after.")
    steps: list[StepOut]
    copies: list[CopyOut]


class BackupPage(Schema):
    items: list[BackupOut]
    next_cursor: str | None = Field(
        description="Pass as cursor for the next (older) page; null: the last page."
    )


class VerifyIn(Schema):
    deep: bool = Field(
        default=False, description="Also restore it (a trial or sandbox restore), not only re-read copies."
    )


class VerifyOut(Schema):
    backup_id: int
    queued: bool


class DownloadOut(Schema):
    url: str = Field(
        description="Absolute (a storage's signed URL) or site-relative (streamed by Backupsite)."
    )
    expires_at: datetime
