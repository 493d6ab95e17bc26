"""URL configuration: the Django admin is the user interface."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from backups.views import dashboard

admin.autodiscover()  # SimpleAdminConfig: only the web process needs the admin's registrations
admin.site.site_header = "Backupsite"
admin.site.site_title = "Backupsite"
admin.site.index_title = "Backups"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # The admin's index is the dashboard (the stock app list is at its foot).
    path("admin/", dashboard.dashboard, name="dashboard"),
    path("admin/", admin.site.urls),
    path("backups/", include("backups.urls")),
    path("restores/", include("restores.urls")),
]
if "oidc" in settings.BACKUPSITE_AUTH:
    # Start, callback and logout of an OpenID Connect login (backups/access/oidc/views.py).
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))
