"""Personal API tokens in the admin: everyone with a role lists, creates and revokes their own;
Administrators those of anyone. A new token is shown once, on the page the creation answers
with (never stored, never in a message or a cookie); the stored SHA-256 is never shown."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from backups.access import tokens
from backups.admin.common import when
from backups.models import ApiToken
from backups.services import can, has_any_role

SHOWN = (  # never the digest
    "user", "name", "key_id", "scope", "created_at", "expires_at", "revoked_at", "last_used_at",
    "last_used_address",
)  # fmt: skip


def is_administrator(request: HttpRequest) -> bool:
    return can(request.user, "configure")


class CreateTokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="What it is for, e.g. ci-deploy.")
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        required=False,
        help_text="Whose rights it has (empty: yours). Only Administrators choose another user.",
    )
    expires = forms.CharField(initial="90d", help_text="A lifetime (90d, 12h, 4w) or a date (2027-03-01).")
    scope = forms.CharField(
        max_length=63,
        required=False,
        help_text="A target tag: the token acts only on the targets carrying it. Empty: all yours.",
    )

    def __init__(self, *args: Any, administrator: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not administrator:
            del self.fields["user"]

    def clean_expires(self) -> Any:
        try:
            return tokens.parse_expiry(self.cleaned_data["expires"])
        except tokens.TokenProblem as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_scope(self) -> str:
        try:
            return tokens.check_scope(self.cleaned_data["scope"])
        except tokens.TokenProblem as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "user",
        "scope_tag",
        "state",
        "created",
        "expires",
        "last_used",
        "last_used_address",
    ]
    list_select_related = ["user"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "key_id", "user__username"]
    fields = SHOWN
    readonly_fields = SHOWN
    actions = ["revoke_tokens"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        rows = super().get_queryset(request)
        return rows if is_administrator(request) else rows.filter(user_id=request.user.pk)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_any_role(request.user)

    def has_view_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return has_any_role(request.user) and (obj is None or tokens.may_manage(request.user, obj))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return has_any_role(request.user)

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # a token never changes: it is revoked, and another created

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # revoked rows stay: the audit trail names them

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return has_any_role(request.user)

    @admin.display(description="Scope", ordering="scope")
    def scope_tag(self, obj: ApiToken) -> str:
        return obj.scope or "all"

    @admin.display(description="State")
    def state(self, obj: ApiToken) -> str:
        if obj.revoked_at:
            return "revoked"
        return "active" if obj.is_active else "expired"

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: ApiToken) -> str:
        return when(obj.created_at)

    @admin.display(description="Expires", ordering="expires_at")
    def expires(self, obj: ApiToken) -> str:
        return when(obj.expires_at)

    @admin.display(description="Last used", ordering="last_used_at")
    def last_used(self, obj: ApiToken) -> str:
        return when(obj.last_used_at)

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = [
            row
            for row in queryset.select_related("user")
            if tokens.may_manage(request.user, row) and tokens.revoke(row, by=tokens.Actor(request=request))
        ]
        self.message_user(request, f"Revoked {len(revoked)} token(s); they stop working at once.")

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """The creation form; the answer to a valid one is the page showing the token, once."""
        if not self.has_add_permission(request):
            raise PermissionDenied("creating API tokens takes a role")
        administrator = is_administrator(request)
        form = CreateTokenForm(request.POST or None, administrator=administrator)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Create an API token",
            "form": form,
        }
        if request.method != "POST" or not form.is_valid():
            return TemplateResponse(request, "admin/backups/apitoken/create.html", context)
        owner = form.cleaned_data.get("user") or request.user
        try:
            row, clear = tokens.create_token(
                owner,
                name=form.cleaned_data["name"],
                expires_at=form.cleaned_data["expires"],
                scope=form.cleaned_data["scope"],
                by=tokens.Actor(request=request),
            )
        except tokens.TokenProblem as exc:
            messages.error(request, str(exc))
            return TemplateResponse(request, "admin/backups/apitoken/create.html", context)
        response = TemplateResponse(
            request,
            "admin/backups/apitoken/created.html",
            {**context, "title": "API token created", "token": row, "clear": clear},
        )
        response["Cache-Control"] = "no-store"  # the token must not stay in a cache
        return response
