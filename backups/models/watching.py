"""What the periodic scan knows of an external target (engine "external"): who is scanning it,
how its last scan went, and the outages it has alerted about (each once, until it recovers)."""

from __future__ import annotations

from django.db import models

from backups.models.catalog import Target


class ExternalWatch(models.Model):
    """One per external target, made by its first scan."""

    target = models.OneToOneField(Target, on_delete=models.CASCADE, related_name="watch")
    scanner = models.CharField(
        max_length=255, blank=True, help_text="host:pid of the process scanning it now; empty: none."
    )
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="The scanner's last sign of life (a scan is claimed, then touched)."
    )
    scanned_at = models.DateTimeField(null=True, blank=True, help_text="When a scan last listed the storage.")
    seen = models.PositiveIntegerField(default=0, help_text="Files matching the pattern at the last listing.")
    error = models.TextField(
        blank=True, help_text="Why the last scan could not list or read; empty: it could."
    )
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="Scans have failed since then (alerted once, until one succeeds)."
    )
    missed_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The expected time of a file that did not come within the grace (alerted once, "
        "until a file comes).",
    )
    retention_note = models.TextField(
        blank=True, help_text="What stopped the last retention pass (the safety brake, a storage error)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"watch of {self.target.name}"
