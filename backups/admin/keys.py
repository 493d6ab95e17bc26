"""Admin pages of the key catalog: encryption keys as recipients and identity references.

A key is retired, never deleted: backups encrypted to it are found by its key id, and restoring
them needs its identity for as long as they live. Its name and recipient are fixed once added
(targets and schedules name it, backups were encrypted to it); only where this host finds its
identity can change."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from backups.admin.common import ManagedByFile, when
from backups.models import EncryptionKey, Outcome
from backups.services import KeyStatus, ServiceError, key_status, record_audit, retire_key

IDENTITY_PREFIX = "AGE-SECRET-KEY-"


class EncryptionKeyForm(forms.ModelForm):
    class Meta:
        model = EncryptionKey
        fields = ["name", "recipient", "identity"]

    def clean_recipient(self) -> str:
        recipient: str = self.cleaned_data["recipient"].strip()
        # Refused here, before the model's check repeats the text in its message.
        if recipient.upper().startswith(IDENTITY_PREFIX):
            raise forms.ValidationError(
                "That is a private key (an identity), not a recipient: give its public key "
                "(age-keygen -y KEYFILE prints it) and keep the private key in its file."
            )
        return recipient


def live_text(status: KeyStatus | None) -> str:
    """``12 (10 own, 2 escrow)``: the live backups that need the key, and in which role."""
    if status is None or not status.live_backups:
        return "0"
    escrow = status.live_backups - status.own_backups
    return f"{status.live_backups} ({status.own_backups} own, {escrow} escrow)"


@admin.register(EncryptionKey)
class EncryptionKeyAdmin(ManagedByFile, admin.ModelAdmin):
    form = EncryptionKeyForm
    list_display = [
        "name", "fingerprint", "recipient_short", "identity_reference", "created", "retired", "managed",
    ]  # fmt: skip
    list_filter = [("retired_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "fingerprint", "recipient"]
    actions = ["retire"]

    def get_fields(self, request: HttpRequest, obj: EncryptionKey | None = None) -> list[Any]:
        if obj is None:
            return ["name", "recipient", "identity"]
        return [
            "name",
            "recipient",
            "fingerprint",
            "identity",
            "created",
            "retired",
            "live_backups",
            "used_by",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: EncryptionKey | None = None) -> list[str]:
        if obj is None:
            return []
        return ["name", "recipient", "fingerprint", "created", "retired", "live_backups", "used_by"]

    def has_delete_permission(self, request: HttpRequest, obj: EncryptionKey | None = None) -> bool:
        return False  # retired, never deleted

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        # Every key's count from one pass over the live backups (a fixed number of queries).
        statuses = {status.key.pk: status for status in key_status(check_identities=False)}

        @admin.display(description="Live backups")
        def live_backups(obj: EncryptionKey) -> str:
            return live_text(statuses.get(obj.pk))

        first, *rest = self.list_display
        return [first, live_backups, *rest]  # what decides a retirement, next to the name

    @admin.display(description="Recipient", ordering="recipient")
    def recipient_short(self, obj: EncryptionKey) -> str:
        """The public key's start and end, enough to tell keys apart at a glance (the whole
        one is on the key's page and in backup_keys status)."""
        return f"{obj.recipient[:12]}…{obj.recipient[-6:]}"

    @admin.display(description="Live backups")
    def live_backups(self, obj: EncryptionKey) -> str:
        return live_text(self._status(obj))

    @admin.display(description="Used by")
    def used_by(self, obj: EncryptionKey) -> str:
        status = self._status(obj)
        return ", ".join(status.used_by) if status is not None and status.used_by else "-"

    @admin.display(description="Identity", ordering="identity")
    def identity_reference(self, obj: EncryptionKey) -> str:
        return obj.identity or "none on this host"

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: EncryptionKey) -> str:
        return when(obj.created_at)

    @admin.display(description="Retired", ordering="retired_at")
    def retired(self, obj: EncryptionKey) -> str:
        return when(obj.retired_at)

    @admin.action(description="Retire the selected keys", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet[EncryptionKey]) -> None:
        for key in queryset:
            if key.is_retired:
                continue
            try:
                retire_key(key.name)
            except ServiceError as exc:
                self._audit(request, key, Outcome.REFUSED, {"reason": str(exc)})
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self._audit(request, key, Outcome.SUCCESS, {"fingerprint": key.fingerprint})
                self.message_user(request, f"Retired key {key.name}: no new backup is encrypted to it.")

    @staticmethod
    def _audit(request: HttpRequest, key: EncryptionKey, outcome: str, details: dict[str, Any]) -> None:
        record_audit(
            "key.retire",
            request=request,
            obj=key,
            outcome=outcome,
            details={"model": "backups.encryptionkey", "change": "retired", **details},
        )

    @staticmethod
    def _status(obj: EncryptionKey) -> KeyStatus | None:
        """The key's status, found once per page (its fields ask for it in turn)."""
        if "_key_status" not in vars(obj):
            vars(obj)["_key_status"] = next(
                (status for status in key_status(check_identities=False) if status.key.pk == obj.pk), None
            )
        found: KeyStatus | None = vars(obj)["_key_status"]
        return found
