"""The dashboard (the admin index for staff), each target's health page, and the progress JSON
the dashboard polls. Thin: one service call each."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from backups import services
from backups.models import Target

ADVANCED_APPS = {"django_celery_beat"}  # shown to superusers only, under "Advanced"


def _action_url(name: str, pk: int) -> str:
    try:
        return reverse(name, args=[pk])
    except NoReverseMatch:
        return ""


def _runnable(request: HttpRequest, board: services.Dashboard) -> set[int] | None:
    """The targets the user may run now: None for all."""
    if services.can(request.user, "run"):
        return None
    return {row.target.pk for row in board.targets if services.can(request.user, "run", row.target)}


def _decisions(request: HttpRequest, board: services.Dashboard) -> list[services.AwaitingDecision]:
    """The requests awaiting a decision this user may take (approve a restore into the target)."""
    targets = {row.target.pk: row.target for row in board.targets}
    return [
        item
        for item in services.awaiting_decisions()
        if item.target_id in targets and services.can(request.user, "approve", targets[item.target_id])
    ]


@never_cache
@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    visible = services.visible_target_ids(request.user)
    board = services.dashboard(target_ids=None if visible is None else sorted(visible))
    app_list = admin.site.get_app_list(request)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Backups",
        "board": board,
        "run_ids": _runnable(request, board),
        "decisions": _decisions(request, board),
        "statuses": [
            ("FAILING", board.count("FAILING")),
            ("MISSED", board.count("MISSED")),
            ("RUNNING", board.count("RUNNING")),
            ("NEVER RUN", board.count("NEVER RUN")),
            ("PAUSED", board.count("PAUSED")),
        ],
        "app_list": [app for app in app_list if app["app_label"] not in ADVANCED_APPS],
        "advanced_apps": [app for app in app_list if app["app_label"] in ADVANCED_APPS]
        if request.user.is_superuser
        else [],
        "progress_url": reverse("backups:progress"),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


@never_cache
@staff_member_required
def target_health(request: HttpRequest, pk: int) -> HttpResponse:
    target = get_object_or_404(Target, pk=pk)
    if not services.can(request.user, "view", target):
        raise PermissionDenied("you may not see this target")
    [summary] = services.dashboard(target_ids=[target.pk]).targets
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": f"Health of {target.name}",
        "summary": summary,
        "charts": services.history_charts(target.pk),
        "run_url": _action_url("backups:run-now", target.pk)
        if services.can(request.user, "run", target)
        else "",
        "progress_url": reverse("backups:progress"),
    }
    return TemplateResponse(request, "admin/target_health.html", context)


@never_cache
@staff_member_required
def progress(request: HttpRequest) -> JsonResponse:
    """What runs now, for the progress bars: polled every second or two while anything runs."""
    now = timezone.now()
    running = services.progress(now)
    visible = services.visible_target_ids(request.user)
    if visible is not None:
        running = [item for item in running if item["target_id"] in visible]
    target = request.GET.get("target", "")
    if target.isdigit():
        running = [item for item in running if item["target_id"] == int(target)]
    return JsonResponse({"now": now.isoformat(), "running": running})
