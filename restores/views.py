"""The restore page: a preview of backup ``pk`` restored into a chosen target, confirmed by typing
the destination's name. The POST (CSRF-checked by the middleware) only records the restore and
queues it on Celery; the worker fills in the RestoreLog row, progress included."""

from __future__ import annotations

import functools

from django.contrib import admin, messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from backups.humanize import human_bytes
from backups.models import Backup, Target

from . import services
from .tasks import restore_backup_task


def _check_allowed(request: HttpRequest) -> None:
    """Staff holding ``restores.restore_backup`` only; anyone else signed in gets a 403."""
    if not (
        request.user.is_active and request.user.is_staff and request.user.has_perm("restores.restore_backup")
    ):
        raise PermissionDenied("you may not restore backups")


@require_http_methods(["GET", "POST"])
def restore_backup(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the preview (``?to=<target pk>`` picks the destination). POST ``to`` and ``confirm``:
    queue the restore when ``confirm`` is the destination's name, else show the page again."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    _check_allowed(request)
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=pk)
    data = request.POST if request.method == "POST" else request.GET
    destination = _destination(backup, data.get("to", ""))
    if request.method == "POST" and destination is not None:
        try:
            log = services.request_restore(
                backup, destination, typed=data.get("confirm", ""), by=f"web:{request.user.get_username()}"
            )
        except services.RestoreRefused as exc:
            return _page(request, backup, destination, error=str(exc))
        transaction.on_commit(functools.partial(restore_backup_task.delay, log.pk))
        messages.success(
            request,
            f"Restore {log.pk} of backup {backup.pk} into {destination.name} queued; this page shows its "
            "progress and outcome.",
        )
        return HttpResponseRedirect(reverse("admin:restores_restorelog_change", args=[log.pk]))
    return _page(request, backup, destination)


def _destination(backup: Backup, chosen: str) -> Target | None:
    if not chosen:
        return None if backup.backup_type == "configuration" else backup.target
    if not chosen.isdigit():
        raise Http404("no such target")
    return get_object_or_404(Target, pk=int(chosen))


def _page(request: HttpRequest, backup: Backup, destination: Target | None, error: str = "") -> HttpResponse:
    preview = services.preview_restore(backup, destination)
    context = {
        **admin.site.each_context(request),
        "title": f"Restore backup {backup.pk}",
        "backup": backup,
        "preview": preview,
        "destinations": services.restore_destinations(backup),
        "stored": human_bytes(preview.stored_bytes),
        "raw": human_bytes(preview.raw_bytes),
        "files": [(fact.path, human_bytes(fact.size)) for fact in preview.files.files]
        if preview.files
        else [],
        "files_bytes": human_bytes(preview.files.total_bytes) if preview.files else "",
        "error": error,
    }
    return TemplateResponse(request, "restores/confirm.html", context)
