"""URLs of the restores app (mounted under ``/restores/``)."""

from __future__ import annotations

from django.urls import path

from . import provision_views, views

app_name = "restores"
urlpatterns = [
    path("backups/<int:pk>/restore/", views.restore_backup, name="restore"),
    path("requests/<int:pk>/", views.decide, name="decide"),
    path("backups/<int:pk>/provision/", provision_views.provision_backup, name="provision"),
]
