"""Roles in the admin: a local user's roles everywhere are the role groups (Users -> Groups);
roles on the targets of one tag are role grants, edited on the user's page. Grants from a
directory (LDAP, OIDC, proxy) are shown read-only there: the next login through it replaces them."""

from __future__ import annotations

import django.contrib.auth.admin  # noqa: F401  (its User admin first, whoever imports this module first)
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from backups.models import GrantSource, RoleGrant


class RoleGrantInline(admin.TabularInline):
    model = RoleGrant
    fields = ["role", "tag", "source", "created_at"]
    readonly_fields = ["source", "created_at"]
    extra = 0
    verbose_name = "role on the targets of a tag"
    verbose_name_plural = "roles on the targets of a tag (e.g. Restorer on tag shop)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoleGrant]:
        return super().get_queryset(request).order_by("tag", "role")


@admin.register(RoleGrant)
class RoleGrantAdmin(admin.ModelAdmin):
    list_display = ["user", "role", "tag", "source", "created_at"]
    list_filter = ["role", "source"]
    search_fields = ["user__username", "tag"]
    autocomplete_fields = ["user"]
    readonly_fields = ["source", "created_at"]

    def has_change_permission(self, request: HttpRequest, obj: RoleGrant | None = None) -> bool:
        # A directory's grants are replaced at the user's next login through it: editing one
        # here would be undone without a word.
        if obj is not None and obj.source != GrantSource.LOCAL:
            return False
        return super().has_change_permission(request, obj)


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class UserWithRolesAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, RoleGrantInline]
