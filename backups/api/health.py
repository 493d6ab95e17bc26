"""/api/v1/health: whether the API and its catalog answer (no token needed)."""

from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.http import HttpRequest
from ninja import Router, Status

from backupsite import __version__

from .schemas import HealthOut

logger = logging.getLogger(__name__)
router = Router(tags=["health"])


@router.get("", auth=None, response={200: HealthOut, 503: HealthOut}, summary="Health")
def health(request: HttpRequest) -> Status[HealthOut]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("API health: the catalog does not answer: %s", exc)
        return Status(503, HealthOut(status="unavailable", version=__version__))
    return Status(200, HealthOut(status="ok", version=__version__))
