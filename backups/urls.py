"""URLs of the backups app (mounted under ``/backups/``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "backups"
urlpatterns = [
    path("<int:pk>/download/", views.download_backup, name="download"),
]
