"""Backupsite's URL configuration with the oidc mode's URLs, as ``backupsite/urls.py`` builds it
when BACKUPSITE_AUTH names oidc at start-up. The test settings start with ``local`` only, so
tests that turn the oidc mode on make this their ROOT_URLCONF (imported only then, after the
OIDC_* settings that mozilla_django_oidc.urls reads on import)."""

from __future__ import annotations

from django.urls import include, path

from backupsite import urls

urlpatterns = [*urls.urlpatterns, path("oidc/", include("mozilla_django_oidc.urls"))]
