"""Admin pages of rows that belong to targets, for users holding a role only on some tags: they
see (read only) the rows of those targets and nothing else; everyone else as Django's
permissions say. Every decision is ``can()``'s (``backups.services``)."""

from __future__ import annotations

from typing import Any

from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from backups.models import Target
from backups.services import can, has_any_role, visible_target_ids


class ScopedByTarget:
    """Mixed into a ModelAdmin before ``admin.ModelAdmin``. ``target_paths``: the lookups from a
    row to the target(s) it belongs to (a row is visible when any of them is)."""

    target_paths: tuple[str, ...] = ("target",)

    def targets_of(self, obj: Any) -> list[Target]:
        found = []
        for path in self.target_paths:
            value: Any = obj
            for step in path.split("__"):
                value = value if step == "pk" else getattr(value, step, None)
            if isinstance(value, Target):
                found.append(value)
        return found

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows: QuerySet[Any] = super().get_queryset(request)  # type: ignore[misc]
        if super().has_view_permission(request):  # type: ignore[misc]
            return rows  # the model's own permission: every row
        visible = visible_target_ids(request.user)
        if visible is None:
            return rows
        where = Q()
        for path in self.target_paths:
            where |= Q(**{f"{path}__in" if path != "pk" else "pk__in": visible})
        return rows.filter(where)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if super().has_view_permission(request, obj):  # type: ignore[misc]
            return True
        if obj is None:
            return has_any_role(request.user)
        return any(can(request.user, "view", target) for target in self.targets_of(obj))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(super().has_module_permission(request)) or has_any_role(request.user)  # type: ignore[misc]
