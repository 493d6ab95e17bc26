"""Downloading a backup file: streamed, or a redirect to a short-lived signed URL."""

from __future__ import annotations

import logging

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404

from backups.models import Backup
from backups.services import NoSuchBackup, StorageError, can, record_audit, redact, start_download

logger = logging.getLogger(__name__)
STREAM_BLOCK = 1024 * 1024


@staff_member_required
def download_backup(request: HttpRequest, pk: int) -> HttpResponse:
    """Streams backup ``pk`` (never loading it whole) or redirects to a short-lived signed URL."""
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=pk)
    if not can(request.user, "download", backup.target):
        record_audit("backup.download", request=request, obj=backup, outcome="refused")
        raise PermissionDenied(f"you may not download backups of {backup.target.name}")
    try:
        download = start_download(
            pk, request.user, request.GET.get("storage", ""), request.META.get("REMOTE_ADDR")
        )
    except NoSuchBackup as exc:
        raise Http404(str(exc)) from None
    except StorageError as exc:
        # The storage's words (paths, server replies) go to the log and the audit trail, redacted;
        # the browser gets a short sentence.
        detail = redact(str(exc))
        logger.warning("download of backup %s (target %s) failed: %s", pk, backup.target.name, detail)
        record_audit(
            "backup.download",
            request=request,
            obj=Backup(pk=pk),
            outcome="failure",
            details={"error": detail},
        )
        return HttpResponse(
            f"Backup {pk} cannot be read from its storage right now. The details are in the server log.",
            status=502,
            content_type="text/plain",
        )
    if download.url:
        response: HttpResponse = HttpResponseRedirect(download.url)
        response["Cache-Control"] = "no-store"
        return response
    stream_response = FileResponse(download.stream, as_attachment=True, filename=download.filename)
    stream_response.block_size = STREAM_BLOCK
    if download.size is not None:
        stream_response["Content-Length"] = str(download.size)
    stream_response["Content-Type"] = "application/octet-stream"
    stream_response["Cache-Control"] = "no-store"
    return stream_response  # type: ignore[return-value]
