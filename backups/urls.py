"""URLs of the backups app (mounted under ``/backups/``)."""

from __future__ import annotations

from django.urls import path

from backups.views import dashboard, downloads, operations

app_name = "backups"
urlpatterns = [
    path("<int:pk>/download/", downloads.download_backup, name="download"),
    path("<int:pk>/verify/", operations.verify, name="verify"),
    path("targets/<int:pk>/run/", operations.run_now, name="run-now"),
    path("progress.json", dashboard.progress, name="progress"),
    path("targets/<int:pk>/health/", dashboard.target_health, name="target-health"),
]
