"""Facts the site's processes share through the catalog: which configuration file was applied
last (workers and beat wait for it), and when each long-running process last showed life."""

from __future__ import annotations

from django.db import models


class AppliedConfig(models.Model):
    """One row per apply of a configuration file: the newest is what the catalog holds now."""

    path = models.CharField(max_length=500, help_text="The file as it was named (BACKUPSITE_CONFIG).")
    digest = models.CharField(max_length=64, help_text="SHA-256 of the file's bytes.")
    applied_at = models.DateTimeField(auto_now_add=True, db_index=True)
    applied_by = models.CharField(max_length=150, blank=True, help_text="Who or what applied it.")

    class Meta:
        db_table = "backup_config_applied"
        ordering = ["-applied_at", "-id"]
        get_latest_by = ["applied_at", "id"]

    def __str__(self) -> str:
        return f"{self.path} ({self.digest[:12]})"


class ProcessHeartbeat(models.Model):
    """When a long-running process (beat, a worker) last showed life; one row per role."""

    role = models.CharField(max_length=100, unique=True, help_text='e.g. "beat"')
    host = models.CharField(max_length=255, blank=True, help_text="host:pid of the process.")
    seen_at = models.DateTimeField()

    class Meta:
        db_table = "backup_process_heartbeat"

    def __str__(self) -> str:
        return f"{self.role} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
