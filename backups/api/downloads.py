"""A temporary download URL for a backup, by the web's rules: a storage that signs URLs (S3,
GCS, Azure) gives its own, valid BACKUPSITE_DOWNLOAD_URL_SECONDS; from the others Backupsite
streams the copy itself, through a link of its own signed for as long (no token needed to follow
it, so curl and browsers can, and the token's rights are asked again when it is followed)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.http import FileResponse, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from ninja import Router

from backups import services
from backups.access import tokens
from backups.models import ApiToken

from .auth import address_of, require, token_of
from .errors import ApiError, conflict, error_response
from .history import require_stored, visible_backup
from .schemas import ERRORS, DownloadOut, ErrorOut, Id

logger = logging.getLogger(__name__)
router = Router(tags=["backups"])
SALT = "backupsite.api.download"
STREAM_BLOCK = 1024 * 1024


@router.post(
    "/backups/{backup_id}/download-url",
    response={200: DownloadOut, ERRORS | {503}: ErrorOut},
    summary="A temporary download URL",
)
def download_url(request: HttpRequest, backup_id: Id) -> DownloadOut:
    backup = visible_backup(request, backup_id)
    require(
        request,
        "download",
        backup.target,
        audit="backup.download",
        obj=backup,
        message=f"you may not download backups of {backup.target.name}",
    )
    require_stored(backup, "downloaded")
    copies = services.stored_copies(backup)
    if not copies:
        raise conflict(f"backup {backup.pk} has no stored copy left to download")
    seconds = settings.BACKUPSITE_DOWNLOAD_URL_SECONDS
    expires_at = timezone.now() + timedelta(seconds=seconds)
    if not services.storage_class(copies[0].storage.kind).can_sign_urls:
        signed = signing.dumps({"backup": backup.pk, "token": token_of(request).pk}, salt=SALT)
        return DownloadOut(url=f"/api/v1/downloads/{signed}", expires_at=expires_at)
    try:
        download = services.start_download(backup.pk, request.user, "", address_of(request))
    except services.NoSuchBackup as exc:
        raise conflict(str(exc)) from None
    except services.StorageError as exc:
        raise unreadable(backup.pk, exc) from None
    return DownloadOut(url=download.url, expires_at=expires_at)


@router.get("/downloads/{signed}", auth=None, include_in_schema=False)
def download(request: HttpRequest, signed: str) -> HttpResponseBase:
    """Follow a link from :func:`download_url`: the backup's bytes, streamed (never loaded
    whole), if the token that asked for it is still live and still may download."""
    try:
        claim = signing.loads(signed, salt=SALT, max_age=settings.BACKUPSITE_DOWNLOAD_URL_SECONDS)
    except signing.BadSignature:  # SignatureExpired too
        return error_response(ApiError(404, "this download link is unknown or expired: ask for a new one"))
    token = ApiToken.objects.select_related("user").filter(pk=claim.get("token")).first()
    if token is None or not token.is_active:
        return error_response(ApiError(401, "the token that asked for this link is expired or revoked"))
    request.auth = token  # type: ignore[attr-defined]  # as ninja sets it
    request.user = token.user
    backup = visible_backup(request, int(claim.get("backup", 0)))
    if not tokens.token_can(token, "download", backup.target):
        return error_response(ApiError(403, f"you may not download backups of {backup.target.name}"))
    try:
        stream = services.start_download(backup.pk, token.user, "", address_of(request))
    except services.NoSuchBackup as exc:
        return error_response(conflict(str(exc)))
    except services.StorageError as exc:
        return error_response(unreadable(backup.pk, exc))
    if stream.url:  # the copy moved to a storage that signs: send the client there
        response = HttpResponse(status=302)
        response["Location"] = stream.url
        return response
    streamed = FileResponse(stream.stream, as_attachment=True, filename=stream.filename)
    streamed.block_size = STREAM_BLOCK
    if stream.size is not None:
        streamed["Content-Length"] = str(stream.size)
    streamed["Content-Type"] = "application/octet-stream"
    streamed["Cache-Control"] = "no-store"
    return streamed


def unreadable(backup_id: int, exc: Exception) -> ApiError:
    """The storage's words (paths, server replies) go to the log, redacted; the caller gets a
    short sentence."""
    logger.warning("download of backup %s failed: %s", backup_id, services.redact(str(exc)))
    return ApiError(
        503,
        f"backup {backup_id} cannot be read from its storage right now; the details are in the server log",
    )
