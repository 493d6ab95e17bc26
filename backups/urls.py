"""URLs of the backups app (mounted under ``/backups/``)."""

from __future__ import annotations

from django.urls import path

from backups.views import downloads

app_name = "backups"
urlpatterns = [
    path("<int:pk>/download/", downloads.download_backup, name="download"),
]
