"""URL configuration: the Django admin is the user interface."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from backups.api.errors import not_found_view
from backups.api.site import api
from backups.views import dashboard
from restores.api import router as restores_router
from schedules.api import router as schedules_router

admin.autodiscover()  # SimpleAdminConfig: only the web process needs the admin's registrations
admin.site.site_header = "Backupsite"
admin.site.site_title = "Backupsite"
admin.site.index_title = "Backups"

# The HTTP API (docs/API.md): the apps built on backups add their routers here, since backups
# never imports them.
api.add_router("/", restores_router)
api.add_router("/schedules", schedules_router)

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # The admin's index is the dashboard (the stock app list is at its foot).
    path("admin/", dashboard.dashboard, name="dashboard"),
    path("admin/", admin.site.urls),
    path("backups/", include("backups.urls")),
    path("restores/", include("restores.urls")),
    path("api/v1/", not_found_view),  # before ninja's own root, an HTML 404
    path("api/v1/", api.urls),
    path("api/v1/<path:rest>", not_found_view),  # JSON, not Django's HTML page
]
if "oidc" in settings.BACKUPSITE_AUTH:
    # Start, callback and logout of an OpenID Connect login (backups/access/oidc/views.py).
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))
