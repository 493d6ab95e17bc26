"""The "Provision…" page of a backup: a developer copy on a sandbox of the same engine, its
connection string shown on the answer page once (never stored, never cached). Synchronous: the
password must not travel through a task's arguments or result backend."""

from __future__ import annotations

from typing import NoReturn

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from backups.models import Backup, Target
from backups.services import ServiceError, can, record_audit

from . import provisioning

ACTION = "restore.provision"


def _refuse(request: HttpRequest, backup: Backup, why: str) -> NoReturn:
    record_audit(ACTION, request=request, obj=backup, outcome="refused", details={"reason": why})
    raise PermissionDenied(why)


def _sandboxes(request: HttpRequest, backup: Backup) -> list[Target]:
    same = Target.objects.filter(engine=backup.target.engine).order_by("name")
    return [target for target in same if can(request.user, "restore", target)]


@require_http_methods(["GET", "POST"])
def provision_backup(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: choose a sandbox and a TTL. POST ``sandbox`` (a target pk) and ``ttl``: make the copy
    and show its connection string once. Needs the restore right on the backup's target and on
    the sandbox; else 403, audited as refused."""
    if not request.user.is_authenticated and not request.user.is_active:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=pk)
    if not request.user.is_staff or not can(request.user, "restore", backup.target):
        _refuse(request, backup, f"you may not restore backups of {backup.target.name}")
    sandboxes = _sandboxes(request, backup)
    error, url, row = "", "", None
    ttl_text = request.POST.get("ttl", "24h")
    if request.method == "POST":
        chosen = request.POST.get("sandbox", "")
        sandbox = next((t for t in sandboxes if str(t.pk) == chosen), None)
        if sandbox is None:
            if Target.objects.filter(pk=chosen if chosen.isdigit() else 0).exists():
                _refuse(request, backup, "you may not restore into that sandbox")
            error = "sandbox: choose one of the targets listed"
        else:
            try:
                ttl = provisioning.parse_ttl(ttl_text)
                row, url = provisioning.provision(
                    backup, sandbox, ttl=ttl, initiated_by=f"web:{request.user.get_username()}"
                )
            except ServiceError as exc:
                error = str(exc)
    context = {
        **admin.site.each_context(request),
        "title": f"Provision a copy of backup {backup.pk}",
        "backup": backup,
        "sandboxes": sandboxes,
        "ttl": ttl_text,
        "error": error,
        "row": row,
        "connection_string": url,
    }
    response = TemplateResponse(request, "restores/provision.html", context)
    add_never_cache_headers(response)  # the one page holding the password: never kept by a cache
    return response
