"""URLs of the restores app (mounted under ``/restores/``)."""

from __future__ import annotations

app_name = "restores"
urlpatterns: list[object] = []
