"""The restore page: a preview of backup ``pk`` restored into a chosen target, confirmed by typing
the destination's name. The POST (CSRF-checked by the middleware) only records the restore and
queues it on Celery; the worker fills in the RestoreLog row, progress included."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

from django.conf import settings
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
from backups.services import can, queue_for, record_audit

from . import approvals, services
from .models import RestoreLog
from .tasks import restore_backup_task


def _refuse(request: HttpRequest, action: str, obj: Backup | RestoreLog, why: str) -> NoReturn:
    record_audit(action, request=request, obj=obj, outcome="refused", details={"reason": why})
    raise PermissionDenied(why)


def _check_may_restore(request: HttpRequest, backup: Backup, destination: Target | None) -> None:
    """Restoring reads the backup's target and writes the destination: the user must hold the
    restore right on both (a Restorer of one team cannot copy another team's data into theirs)."""
    if not request.user.is_staff:
        _refuse(request, "restore.start", backup, "you may not use the console: ask for a role")
    if not can(request.user, "restore", backup.target):
        _refuse(request, "restore.start", backup, f"you may not restore backups of {backup.target.name}")
    if destination is not None and not can(request.user, "restore", destination):
        _refuse(request, "restore.start", backup, f"you may not restore into {destination.name}")


def _by(request: HttpRequest) -> str:
    return f"web:{request.user.get_username()}"


@require_http_methods(["GET", "POST"])
def restore_backup(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the preview (``?to=<target pk>`` picks the destination). POST ``to`` and ``confirm``:
    queue the restore when ``confirm`` is the destination's name, else show the page again. Into
    a protected destination the POST (with a ``reason``) records a request for a second person
    to approve instead (four eyes)."""
    if not request.user.is_authenticated and not request.user.is_active:
        # Nobody logged in (a read-only guest of the "none" mode is active: can() refuses it).
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=pk)
    data = request.POST if request.method == "POST" else request.GET
    destination = _destination(backup, data.get("to", ""))
    _check_may_restore(request, backup, destination)
    if request.method == "POST" and destination is not None:
        if approvals.needs_approval(destination):
            return _ask_approval(request, backup, destination, data)
        try:
            log = services.request_restore(
                backup, destination, typed=data.get("confirm", ""), by=_by(request)
            )
        except services.RestoreRefused as exc:
            record_audit(
                "restore.start", request=request, obj=backup, outcome="refused", details={"reason": str(exc)}
            )
            return _page(request, backup, destination, error=str(exc))
        transaction.on_commit(_queue_restore(log, destination))
        record_audit(
            "restore.start", request=request, obj=log, details={"backup": backup.pk, "into": destination.name}
        )
        messages.success(
            request,
            f"Restore {log.pk} of backup {backup.pk} into {destination.name} queued; this page shows its "
            "progress and outcome.",
        )
        return HttpResponseRedirect(reverse("admin:restores_restorelog_change", args=[log.pk]))
    return _page(request, backup, destination)


def _ask_approval(request: HttpRequest, backup: Backup, destination: Target, data: Any) -> HttpResponse:
    try:
        log = approvals.request_approval(
            backup, destination, typed=data.get("confirm", ""), by=_by(request), reason=data.get("reason", "")
        )
    except services.RestoreRefused as exc:
        record_audit(
            "restore.request", request=request, obj=backup, outcome="refused", details={"reason": str(exc)}
        )
        return _page(request, backup, destination, error=str(exc))
    record_audit(
        "restore.request",
        request=request,
        obj=log,
        details={"backup": backup.pk, "into": destination.name, "reason": log.reason},
    )
    messages.success(
        request,
        f"{destination.name} is protected: restore request {log.pk} now awaits a second person's approval "
        f"(until {log.expires_at:%Y-%m-%d %H:%M %Z}); its channels were told.",
    )
    return HttpResponseRedirect(reverse("restores:decide", args=[log.pk]))


@require_http_methods(["GET", "POST"])
def decide(request: HttpRequest, pk: int) -> HttpResponse:
    """A four-eyes request: GET shows it; POST ``decision`` = ``approve`` or ``reject`` (with an
    optional ``note``). Only another Restorer or an Administrator of the destination approves;
    the requester may withdraw (reject) their own."""
    if not request.user.is_authenticated and not request.user.is_active:
        # Nobody logged in (a read-only guest of the "none" mode is active: can() refuses it).
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    log = get_object_or_404(RestoreLog.objects.select_related("backup__target", "destination"), pk=pk)
    destination = log.destination
    if destination is None or not request.user.is_staff or not can(request.user, "view", destination):
        raise Http404("no such restore request")
    error = ""
    if request.method == "POST":
        decision = request.POST.get("decision", "")
        if decision not in ("approve", "reject"):
            error = "decision: choose approve or reject"
        else:
            _check_may_decide(request, log, destination, decision)
            try:
                decided = _DECISIONS[decision](log.pk, by=_by(request), note=request.POST.get("note", ""))
            except services.RestoreRefused as exc:
                record_audit(
                    f"restore.{decision}",
                    request=request,
                    obj=log,
                    outcome="refused",
                    details={"reason": str(exc)},
                )
                error = str(exc)
            else:
                _after_decision(request, decided, decision)
                return HttpResponseRedirect(reverse("admin:restores_restorelog_change", args=[log.pk]))
    approvals.expire_requests()
    log.refresh_from_db()
    context = {
        **admin.site.each_context(request),
        "title": f"Restore request {log.pk}",
        "log": log,
        "backup": log.backup,
        "mine": approvals.is_requester(log, _by(request)),
        "may_approve": can(request.user, "approve", destination)
        and can(request.user, "restore", log.backup.target),
        "error": error,
    }
    return TemplateResponse(request, "restores/decide.html", context)


_DECISIONS = {"approve": approvals.approve, "reject": approvals.reject}


def _check_may_decide(request: HttpRequest, log: RestoreLog, destination: Target, decision: str) -> None:
    """Approving takes a Restorer or an Administrator of the destination (and of the backup's
    target); rejecting too, except for the requester withdrawing their own request."""
    if decision == "reject" and approvals.is_requester(log, _by(request)):
        return
    if not (can(request.user, "approve", destination) and can(request.user, "restore", log.backup.target)):
        _refuse(
            request, f"restore.{decision}", log, f"you may not {decision} restores into {destination.name}"
        )


def _after_decision(request: HttpRequest, log: RestoreLog, decision: str) -> None:
    into = log.destination.name if log.destination else ""
    if decision == "reject":
        record_audit("restore.reject", request=request, obj=log, details={"note": log.decision_note[:500]})
        withdrawn = approvals.is_requester(log, _by(request))
        messages.success(request, f"Restore request {log.pk} {'withdrawn' if withdrawn else 'rejected'}.")
        return
    transaction.on_commit(_queue_restore(log, log.destination or log.backup.target))
    record_audit("restore.approve", request=request, obj=log, details={"requested_by": log.initiated_by})
    record_audit("restore.start", request=request, obj=log, details={"backup": log.backup_id, "into": into})
    messages.success(request, f"Restore {log.pk} approved and queued; this page shows its progress.")


def _queue_restore(log: RestoreLog, destination: Target) -> Callable[[], object]:
    """Queueing restore ``log``, for ``transaction.on_commit``: on the queue of the workers near
    the destination (services.queue_for), the database it writes to."""
    return functools.partial(restore_backup_task.apply_async, (log.pk,), queue=queue_for(destination))


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
        "protected": destination is not None and approvals.needs_approval(destination),
        "approval_hours": settings.BACKUPSITE_RESTORE_APPROVAL_HOURS,
    }
    return TemplateResponse(request, "restores/confirm.html", context)
