"""Operations started from the browser: run a target's backup now, verify a backup. Each is a
POST (CSRF-checked by the middleware) that only queues the work on Celery, so a long backup
never holds a web worker; the run records its own steps, and the user who asked goes into
``initiated_by`` as ``web:<username>``."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from backups.models import Backup, Target
from backups.services import ServiceError, can, queue_backup, queue_for, record_audit
from backups.tasks import run_target_backup, verify_backup_task

TRUE_VALUES = ("1", "true", "on", "yes")


def initiator(request: HttpRequest) -> str:
    return f"web:{request.user.get_username()}"


def back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """To the page the form was on (``next``, only on this site), else ``default``."""
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(next_url)
    return HttpResponseRedirect(default)


@staff_member_required
@require_POST
def run_now(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Queue a full backup of target ``pk``."""
    target = get_object_or_404(Target, pk=pk)
    if not can(request.user, "run", target):
        record_audit("backup.run", request=request, obj=target, outcome="refused")
        raise PermissionDenied(f"you may not run backups of {target.name}")
    try:  # its row first (PENDING), so the page can name it and the worker fills that row
        backup = queue_backup(target, initiated_by=initiator(request))
    except ServiceError as exc:  # an external target: another tool makes its backups
        messages.error(request, str(exc))
        return back(request, reverse("admin:index"))
    run_target_backup.apply_async(
        (target.pk,), {"initiated_by": initiator(request), "backup_id": backup.pk}, queue=queue_for(target)
    )
    record_audit("backup.run", request=request, obj=target, details={"backup_id": backup.pk})
    messages.success(request, f"Backup {backup.pk} of {target.name} queued")
    return back(request, reverse("admin:index"))


@staff_member_required
@require_POST
def verify(request: HttpRequest, pk: int) -> HttpResponseRedirect:
    """Queue a verification of backup ``pk``: its checksums, or with ``deep`` a restore too."""
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=pk)
    if not can(request.user, "verify", backup.target):
        record_audit("backup.verify", request=request, obj=backup, outcome="refused")
        raise PermissionDenied(f"you may not verify backups of {backup.target.name}")
    deep = request.POST.get("deep", "").lower() in TRUE_VALUES
    verify_backup_task.apply_async((backup.pk, deep, initiator(request)), queue=queue_for(backup.target))
    record_audit("backup.verify", request=request, obj=backup, details={"deep": deep})
    messages.success(request, f"{'Deep' if deep else 'Quick'} verification of {backup} queued")
    return back(request, reverse("admin:backups_backup_change", args=[backup.pk]))
