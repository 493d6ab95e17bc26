"""Proof levels: how far each successful backup has been proven restorable (stored < verified <
trial < drilled), and when. A backup keeps its strongest proof; a proof at the same level
refreshes its time, a weaker one changes nothing."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from backups.models import PROOF_ORDER, Backup, BackupStatus, Proof


def record_proof(backup_id: int, level: Proof, at: datetime | None = None) -> bool:
    """Raise ``backup_id``'s proof to ``level`` (or refresh its time at that level); False when
    the backup is not a success or already holds a stronger proof. One conditional update, so
    two processes proving the same backup cannot lower it."""
    weaker_or_same = [str(proof) for proof in PROOF_ORDER[: PROOF_ORDER.index(level) + 1]]
    updated = Backup.objects.filter(
        pk=backup_id, status=BackupStatus.SUCCESS, proof__in=["", *weaker_or_same]
    ).update(proof=level, proof_at=at or timezone.now())
    return updated == 1
