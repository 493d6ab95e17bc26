"""Admin pages for what is backed up and where: targets and storages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from backups.admin import watching
from backups.admin.common import ManagedByFile, PluginOptionsForm, post_button, status_badge, when
from backups.admin.retention import retention_preview
from backups.admin.scoping import ScopedByTarget
from backups.models import Backup, BackupStatus, Storage, Target
from backups.services import (
    Connection,
    EngineError,
    Policy,
    PolicyError,
    can,
    can_somewhere,
    engine_option_problems,
    run_refusal,
    secret_problems,
    storage_class,
)

# The connection fields each engine reads; the change form shows only those of the chosen
# engine (a few lines of JS; without JS every field shows). Engines not named use DEFAULT.
CONNECTION_FIELDS = ["host", "port", "database", "user", "password", "paths"]
ENGINE_FIELDS: dict[str, list[str]] = {"sqlite": ["database"], "files": ["paths"]}
DEFAULT_ENGINE_FIELDS = ["host", "port", "database", "user", "password"]

RETENTION_FIELDS = (
    "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within",
    "tiers", "rules", "retention_days", "max_backups", "min_keep", "max_delete_fraction",
)  # fmt: skip
NUMBER = {"class": "vIntegerField"}


class LinesField(forms.CharField):
    """A list of strings written one per line: blank lines ignored, whitespace stripped."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(str(item) for item in value) if isinstance(value, list | tuple) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


def count_field(period: str) -> forms.IntegerField:
    return forms.IntegerField(
        required=False,
        widget=forms.NumberInput(attrs=NUMBER),
        help_text=f"The newest backup in each of the N newest {period} that have one; -1: unlimited.",
    )


class TargetForm(forms.ModelForm):
    """A target as people write it: lists one per line, the retention policy as named rules
    (assembled into ``retention`` and checked by the same policy rules as the TOML file, each
    error on the rule's own field), the engine's options checked by the engine's own option
    rules and secrets only as references the secret rules allow, as in the TOML file."""

    paths = LinesField(help_text="Directories to back up (files engine), one per line.")
    config_paths = LinesField(
        label="Configuration paths",
        help_text='Configuration files and directories (absolute paths), one per line, saved by backups of type "configuration".',
    )
    include_tables = LinesField(
        help_text="Only these tables, one per line (schema.table where the engine has schemas); empty: all."
    )
    exclude_tables = LinesField(help_text="Leave these tables out, one per line.")
    drill_checks = LinesField(
        help_text="SQL assertions run against a drill's scratch copy, one per line, each must return true "
        "(e.g. select count(*) > 0 from orders); row counts are always checked."
    )

    keep_last = forms.IntegerField(
        required=False,
        widget=forms.NumberInput(attrs=NUMBER),
        help_text="The N newest backups; -1: unlimited.",
    )
    keep_hourly = count_field("hours")
    keep_daily = count_field("days")
    keep_weekly = count_field("ISO weeks")
    keep_monthly = count_field("months")
    keep_yearly = count_field("years")
    keep_within = forms.CharField(
        required=False,
        help_text="Every backup younger than this, counted back from the newest success: e.g. 2d, 12h, "
        "1y5mo (units min, h, d, w, mo, y; a bare m is refused).",
    )
    tiers = LinesField(
        help_text="PERIOD:WINDOW, one per line: 15min:24h keeps one backup per 15 minutes for 24 hours."
    )
    rules = LinesField(
        label="Spacing rules",
        help_text="COUNT.DAYS, one per line: 3.1 keeps at least 3 backups, each 1+ day older than the one before.",
    )
    retention_days = forms.IntegerField(
        required=False,
        widget=forms.NumberInput(attrs=NUMBER),
        help_text="Cap: a backup goes once the newest success started this many days (x 24 h) after it.",
    )
    max_backups = forms.IntegerField(
        required=False,
        widget=forms.NumberInput(attrs=NUMBER),
        help_text="Cap: at most this many successful backups, the oldest going first.",
    )
    min_keep = forms.IntegerField(
        required=False,
        widget=forms.NumberInput(attrs=NUMBER),
        help_text="Floor: the N newest successful backups survive every cap (empty: 1).",
    )
    max_delete_fraction = forms.FloatField(
        required=False,
        widget=forms.NumberInput(attrs={**NUMBER, "step": "any"}),
        help_text="Brake: one cleanup deletes at most this fraction of the successful backups (empty: 0.5).",
    )

    class Meta:
        model = Target
        # Everything but retention, which clean() assembles from the named rules.
        fields = [
            "name", "engine", "is_active", "storages", "compression", "skip_unchanged", "encryption",
            "escrow", "host", "port", "database", "user", "password", "paths", "timezone", "config_paths",
            "include_tables", "exclude_tables", "options", "sandbox",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "drill_from_last" in self.fields:
            self.fields["drill_from_last"].required = False
        stored = self.instance.retention if isinstance(self.instance.retention, dict) else {}
        for name in RETENTION_FIELDS:
            if name in stored:
                self.initial.setdefault(name, stored[name])

    def clean_drill_from_last(self) -> int:
        value: int | None = self.cleaned_data.get("drill_from_last")
        return 1 if value is None else value  # left empty: the newest backup

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        problems = secret_problems(password, must_be_reference=True)
        if problems:
            raise forms.ValidationError(problems)
        return password

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        self._check_options(cleaned)
        storages = cleaned.get("storages")
        if cleaned.get("engine") == "external" and storages is not None and len(storages) != 1:
            # The scan lists one folder of one storage (docs/EXTERNAL.md); say so here, not later.
            self.add_error(
                "storages",
                "an external target watches exactly one storage: choose the one its tool writes to",
            )
        if any(name in self.errors for name in RETENTION_FIELDS):
            self._keep_a_readable_policy()
            return cleaned
        policy = {name: cleaned[name] for name in RETENTION_FIELDS if cleaned.get(name) not in (None, "", [])}
        try:
            # The timezone is checked with the model (Target.clean), once, on its own field.
            Policy.from_mapping(policy)
        except PolicyError as exc:
            self.add_error(exc.field if exc.field in RETENTION_FIELDS else None, str(exc))
            self._keep_a_readable_policy()
            return cleaned
        self.instance.retention = policy
        return cleaned

    def _check_options(self, cleaned: dict[str, Any]) -> None:
        engine, options = cleaned.get("engine"), cleaned.get("options")
        if options is not None and not isinstance(options, dict):
            self.add_error("options", "must be a JSON object of option names to values")
            return
        if not engine or options is None:
            return
        connection = Connection(
            name=cleaned.get("name") or "",
            engine=engine,
            host=cleaned.get("host") or "",
            port=cleaned.get("port"),
            database=cleaned.get("database") or "",
            user=cleaned.get("user") or "",
            password=cleaned.get("password") or "",
            options=options,
            include_tables=tuple(cleaned.get("include_tables") or ()),
            exclude_tables=tuple(cleaned.get("exclude_tables") or ()),
            paths=tuple(cleaned.get("paths") or ()),
        )
        try:
            problems = engine_option_problems(connection)
        except (EngineError, ImportError) as exc:
            self.add_error("engine", str(exc))
            return
        for key, message in problems:
            if key in CONNECTION_FIELDS:
                self.add_error(key, message)
            else:
                self.add_error("options", f"{key}: {message}")

    def _keep_a_readable_policy(self) -> None:
        """Nothing is saved, but the model's own check still runs on the instance: a stored policy
        it cannot read would be reported against ``retention``, a field this form does not have."""
        try:
            Policy.from_mapping(self.instance.retention)
        except PolicyError:
            self.instance.retention = {}


class StorageForm(PluginOptionsForm):
    class Meta:
        model = Storage
        fields = ["name", "kind", "options", "prefix", "required"]

    def plugin_class(self, kind: str) -> Any:
        return storage_class(kind)


@admin.register(Storage)
class StorageAdmin(ManagedByFile, admin.ModelAdmin):
    form = StorageForm
    list_display = ["name", "kind", "location", "prefix", "required", "updated", "managed"]
    list_filter = ["kind", "required"]
    search_fields = ["name"]
    readonly_fields = ["created", "updated"]

    @admin.display(description="Location")
    def location(self, obj: Storage) -> str:
        return str(obj.options.get("path") or obj.options.get("bucket") or obj.options.get("host") or "")

    @admin.display(description="Created")
    def created(self, obj: Storage) -> str:
        return when(obj.created_at)

    @admin.display(description="Updated", ordering="updated_at")
    def updated(self, obj: Storage) -> str:
        return when(obj.updated_at)


@admin.register(Target)
class TargetAdmin(ManagedByFile, ScopedByTarget, admin.ModelAdmin):
    target_paths = ("pk",)
    form = TargetForm
    list_display = ["name", "engine", "source", "compression", "is_active", "last_backup", "managed"]
    list_filter = ["engine", "is_active"]
    search_fields = ["name", "host", "database"]
    filter_horizontal = ["storages"]
    readonly_fields = ["created", "updated", "retention_plan", "watch_state"]
    fieldsets = [
        (None, {"fields": ["name", "engine", "is_active", "storages", "compression", "skip_unchanged"]}),
        (
            "Encryption",
            {
                "fields": ["encryption", "escrow"],
                "description": "Keys are listed under Encryption keys. A change applies to new backups; "
                "each backup keeps the key it was encrypted to.",
            },
        ),
        ("Access", {"fields": ["tags", "protected"]}),
        ("Source", {"fields": ["host", "port", "database", "user", "password", "paths", "timezone"]}),
        ("Configuration backups", {"fields": ["config_paths"]}),
        ("Selection", {"fields": ["include_tables", "exclude_tables", "options"], "classes": ["collapse"]}),
        (
            "Retention",
            {
                "fields": [
                    ("keep_last", "keep_hourly", "keep_daily"),
                    ("keep_weekly", "keep_monthly", "keep_yearly"),
                    "keep_within",
                    "tiers",
                    "rules",
                    ("retention_days", "max_backups"),
                    ("min_keep", "max_delete_fraction"),
                    "retention_plan",
                ],
                "description": "A backup is kept when at least one rule keeps it; caps then remove "
                "backups the rules keep. No rule at all: nothing is ever deleted.",
            },
        ),
        (
            "Workers",
            {
                "fields": ["queue"],
                "description": "Only workers consuming this queue (celery worker -Q eu-db, backupsite_run "
                "--queues eu-db) run this target's backups, verifications and restores into it; empty: "
                "the default queue, celery.",
            },
        ),
        ("Verification", {"fields": ["sandbox"]}),
        (
            "Restore drills",
            {
                "fields": ["drill", "drill_checks", "drill_from_last"],
                "description": "On the drill's cron a worker restores a backup into a scratch copy on the "
                "sandbox, checks row counts (or the file index) and each SQL check, drops the copy and "
                "alerts on failure. Engines with scratch databases need a sandbox above.",
            },
        ),
        ("Audit", {"fields": ["created", "updated"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Target | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and obj.engine == "external":
            fieldsets = [
                *fieldsets[:1],
                ("Watch", {"fields": ["watch_state"], "description": watching.DESCRIPTION}),
                *fieldsets[1:],
            ]
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        # A page without a form (a row a configuration file defines, a viewer) reads the model,
        # where the rule fields above do not exist: show the stored policy instead.
        return [
            (name, {**options, "fields": ["retention_policy", "retention_plan"]})
            if name == "Retention"
            else (name, options)
            for name, options in fieldsets
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Target]:
        # The last backup of every row in the same query (no query per row).
        latest = (
            Backup.objects.filter(target=OuterRef("pk"))
            .exclude(status=BackupStatus.PENDING)
            .order_by("-created_at", "-id")
            .annotate(at=Coalesce("started_at", "created_at"))
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_backup_status=Subquery(latest.values("status")[:1]),
                last_backup_at=Subquery(latest.values("at")[:1]),
            )
        )

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        if not can_somewhere(request.user, "run"):
            return list(self.list_display)
        back_here = request.get_full_path()

        @admin.display(description="Run")
        def run_now(obj: Target) -> str:
            if not can(request.user, "run", obj) or run_refusal(obj):
                return "-"  # not theirs to run, or an external target: another tool runs it
            return post_button(reverse("backups:run-now", args=[obj.pk]), "Run now", back_here)

        name, *others = self.list_display
        return [name, run_now, *others]  # next to the name: the last column scrolls out of sight

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Target | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.pk is not None and can(request.user, "run", obj) and not run_refusal(obj):
            context["operations"] = {"run_url": reverse("backups:run-now", args=[obj.pk])}
        context["engine_fields"] = {
            "all": CONNECTION_FIELDS,
            "engines": ENGINE_FIELDS,
            "default": DEFAULT_ENGINE_FIELDS,
        }
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="Created")
    def created(self, obj: Target) -> str:
        return when(obj.created_at)

    @admin.display(description="Updated")
    def updated(self, obj: Target) -> str:
        return when(obj.updated_at)

    @admin.display(description="Policy")
    def retention_policy(self, obj: Target) -> str:
        rules = obj.retention if isinstance(obj.retention, dict) else {}
        return "; ".join(f"{key} = {value}" for key, value in rules.items()) or "no rule: nothing is deleted"

    @admin.display(description="Last scan")
    def watch_state(self, obj: Target) -> str:
        return watching.watch_state(obj)

    @admin.display(description="What the policy keeps")
    def retention_plan(self, obj: Target) -> str:
        return retention_preview(obj)

    @admin.display(description="Source")
    def source(self, obj: Target) -> str:
        if obj.engine == "files":
            return ", ".join(obj.paths)
        return f"{obj.host}:{obj.port}/{obj.database}" if obj.host else obj.database

    @admin.display(description="Last backup", ordering="last_backup_at")
    def last_backup(self, obj: Target) -> str:
        status: str | None = getattr(obj, "last_backup_status", None)  # annotated by get_queryset
        at: datetime | None = getattr(obj, "last_backup_at", None)
        if status is None:
            return "never"
        return format_html("{} {}", status_badge(status, BackupStatus(status).label), when(at))
