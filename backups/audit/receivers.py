"""The audit log's signal receivers (connected once by ``BackupsConfig.ready``): logins, failed
logins (the username tried, never the password) and logouts; every change saved through the
admin, from its LogEntry (field names, never values); user, group and permission changes from
anywhere."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth import signals as auth_signals
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest

from backups.audit import ACCOUNT_MODELS, AuditObject, auth_method_of, current_request, record
from backups.models import Outcome

ADMIN_ACTIONS = {"backups.rolegrant": "role.change"}  # else config.change
CHANGES = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}
UNAUDITED_FIELDS = ("last_login",)  # every login saves it; login.success records that


def connect_receivers() -> None:
    user_model = get_user_model()
    auth_signals.user_logged_in.connect(_on_login, dispatch_uid="backups.audit.login")
    auth_signals.user_login_failed.connect(_on_login_failed, dispatch_uid="backups.audit.login_failed")
    auth_signals.user_logged_out.connect(_on_logout, dispatch_uid="backups.audit.logout")
    post_save.connect(_on_admin_log, sender=LogEntry, dispatch_uid="backups.audit.admin_log")
    for model in (user_model, Group):
        pre_save.connect(_remember_changes, sender=model, dispatch_uid=f"backups.audit.pre_save.{model}")
        post_save.connect(_on_account_saved, sender=model, dispatch_uid=f"backups.audit.saved.{model}")
        post_delete.connect(_on_account_deleted, sender=model, dispatch_uid=f"backups.audit.deleted.{model}")
    for through in (
        user_model.groups.through,
        user_model.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(_on_membership, sender=through, dispatch_uid=f"backups.audit.m2m.{through}")


def _on_login(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    record("login.success", request=request, user=user)


def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the name tried: the credentials also hold the password (masked by Django, still not ours).
    tried = (
        credentials.get(get_user_model().USERNAME_FIELD)
        or credentials.get("username")
        or credentials.get("remote_user")  # the proxy mode's header
        or ""
    )
    record(
        "login.failure", request=request, user=AnonymousUser(), username=str(tried), outcome=Outcome.FAILURE
    )


def _on_logout(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    record("logout", request=request, user=user)


def _on_admin_log(sender: Any, instance: LogEntry, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """A change saved through the admin: the model, the object and the names of the fields the
    form changed (the LogEntry's change_message), never their values."""
    if not created or raw or instance.content_type_id is None:
        return
    content_type = ContentType.objects.get_for_id(instance.content_type_id)
    label = f"{content_type.app_label}.{content_type.model}"
    if label in ACCOUNT_MODELS:
        return
    fields, related = changed_fields(instance.change_message)
    details: dict[str, Any] = {"model": label, "change": CHANGES.get(instance.action_flag, "changed")}
    if fields:
        details["fields"] = fields
    if related:
        details["related"] = related
    record(
        "object.delete" if instance.action_flag == DELETION else ADMIN_ACTIONS.get(label, "config.change"),
        user=instance.user,
        obj=AuditObject(label, str(instance.object_id or ""), instance.object_repr),
        details=details,
    )


def changed_fields(change_message: str) -> tuple[list[str], list[str]]:
    """From an admin change_message (JSON): the names of the changed fields, and the inline
    objects added, changed or deleted by kind (their text is left out: it may show values)."""
    try:
        entries = json.loads(change_message or "[]")
    except ValueError:
        return [], []  # an old free-text message: nothing known to be only names
    fields: list[str] = []
    related: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        for verb, about in entry.items() if isinstance(entry, dict) else []:
            if not isinstance(about, dict):
                continue
            names = [str(name) for name in about.get("fields", [])]
            if "name" in about:
                related.append(f"{verb} {about['name']}" + (f" ({', '.join(names)})" if names else ""))
            else:
                fields.extend(names)
    return fields, related


def _remember_changes(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """Before a user or group is saved: the names of the fields that differ from its row."""
    if raw or instance._state.adding or instance.pk is None:
        return
    update_fields = kwargs.get("update_fields")
    names = [
        field.name
        for field in sender._meta.concrete_fields
        if field.name not in UNAUDITED_FIELDS and (update_fields is None or field.name in update_fields)
    ]
    stored = sender._default_manager.filter(pk=instance.pk).values(*names).first() if names else None
    if stored is not None:
        vars(instance)["_audit_changed_fields"] = [
            name for name in names if stored[name] != getattr(instance, sender._meta.get_field(name).attname)
        ]


def _on_account_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    changed = vars(instance).pop("_audit_changed_fields", [])
    if raw or not (created or changed):
        return
    details: dict[str, Any] = {"change": "added" if created else "changed"}
    if changed:
        details["fields"] = changed  # names only: "password" when it changed, never the hash
    if created and isinstance(instance, AbstractBaseUser):
        details.update(
            staff=getattr(instance, "is_staff", False), superuser=getattr(instance, "is_superuser", False)
        )
    record(_account_action(instance), obj=instance, details=details)


def _on_account_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    request = current_request()
    actor = getattr(request, "user", None)
    if isinstance(instance, AbstractBaseUser) and actor is not None and actor.pk == instance.pk:
        # Someone deleting their own account: the row is gone, so the event keeps only the name.
        record(
            "user.change",
            user=AnonymousUser(),
            username=actor.get_username(),
            auth_method=auth_method_of(request, actor),
            obj=instance,
            details={"change": "deleted"},
        )
        return
    record(_account_action(instance), obj=instance, details={"change": "deleted"})


def _on_membership(
    sender: Any, instance: Any, action: str, model: Any, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    """Group membership and permissions: what a user or a group may do."""
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    details: dict[str, Any] = {"relation": _relation(sender, instance, model)}
    if action == "post_clear":
        details["cleared"] = True
    else:
        details["added" if action == "post_add" else "removed"] = _names(model, pk_set or set())
    record("role.change", obj=instance, details=details)


def _account_action(instance: Any) -> str:
    return "user.change" if isinstance(instance, AbstractBaseUser) else "role.change"


def _relation(sender: Any, instance: Any, model: Any) -> str:
    """``user.groups``, ``user.user_permissions`` or ``group.permissions``: the field whose
    table is ``sender``, named on the model that declares it."""
    for owner in (type(instance), model):
        for field in owner._meta.many_to_many:
            if field.remote_field.through is sender:
                return f"{owner._meta.model_name}.{field.name}"
    return str(sender._meta.db_table)


def _names(model: Any, pks: set[Any]) -> list[str]:
    if model is Permission:
        rows = Permission.objects.filter(pk__in=pks).select_related("content_type")
        return sorted(f"{row.content_type.app_label}.{row.codename}" for row in rows)
    return sorted(str(row) for row in model._default_manager.filter(pk__in=pks))
