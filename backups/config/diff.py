"""What applying a file would change, compared with the catalog: rows added, fields changed
(old -> new), rows the file defined before and no longer does. One home for the comparison:
``backup_config diff``, the drift system check and the apply's removals all use it.

Rows the file no longer defines are never deleted (backups and restores point at them).
Targets, notifiers and schedules (rows with ``is_active``) are deactivated and stay marked as
the file's: read-only in the admin, reactivated when the file defines them again. Storages and
encryption keys have no such flag and restores still need them: they are kept exactly as they
are and released to the admin (``managed_by`` cleared). A key is not retired: retiring cannot
be undone, and a target the admin manages may still encrypt to it (``backup_keys retire`` when
nothing does).

Values are shown as stored, and secrets are stored as references (the file's are checked to
be): nothing is resolved here. A value under a secret's name that is not a reference is masked
all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.models import Model
from django.utils import timezone

from backups import secrets
from backups.config.registry import Declared, extra_sections
from backups.models import AppliedConfig, EncryptionKey, Notifier, Storage, Target

if TYPE_CHECKING:
    from backups.config.loader import Config, Plan

ADDED, CHANGED, DEACTIVATED, RELEASED = "added", "changed", "deactivated", "released"
SECRET_WORDS = ("password", "passphrase", "secret", "token", "credentials", "identity")
MASK = "********"


@dataclass(frozen=True)
class Kind:
    """One kind of row a file defines: its label in reports and its model."""

    label: str
    model: type[Model]

    @property
    def deactivates(self) -> bool:
        """Whether a row the file stops defining is deactivated (else released)."""
        return any(f.name == "is_active" for f in self.model._meta.get_fields())


KEY = Kind("key", EncryptionKey)
STORAGE = Kind("storage", Storage)
TARGET = Kind("target", Target)
NOTIFIER = Kind("notifier", Notifier)


def kinds() -> list[Kind]:
    """The core's kinds and those of the registered sections that name a model."""
    extra = [Kind(s.label or s.name, s.model) for s in extra_sections() if s.model is not None]
    return [KEY, STORAGE, TARGET, NOTIFIER, *extra]


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: str  # ADDED, CHANGED, DEACTIVATED or RELEASED
    fields: tuple[FieldChange, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"kind": self.kind, "name": self.name, "action": self.action}
        if self.fields:
            found["fields"] = [{"field": f.field, "old": f.old, "new": f.new} for f in self.fields]
        return found


@dataclass
class ConfigDiff:
    """What an apply of ``path`` (whose bytes hash to ``digest``) would change. ``applied``: the
    digest the newest AppliedConfig row records ("" for none); an apply records this file's."""

    path: str
    digest: str
    applied: str
    applied_path: str
    changes: list[Change] = field(default_factory=list)

    @property
    def added(self) -> list[Change]:
        return [c for c in self.changes if c.action == ADDED]

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action == CHANGED]

    @property
    def deactivated(self) -> list[Change]:
        return [c for c in self.changes if c.action in (DEACTIVATED, RELEASED)]

    @property
    def recorded(self) -> bool:
        """Whether the newest AppliedConfig row is this very file and version."""
        return (self.applied_path, self.applied) == (self.path, self.digest)

    @property
    def empty(self) -> bool:
        """True when an apply would change nothing at all (no row, no AppliedConfig record)."""
        return not self.changes and self.recorded

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "digest": self.digest,
            "applied": {"file": self.applied_path, "digest": self.applied} if self.applied else None,
            "changes": not self.empty,
            "added": [c.as_dict() for c in self.added],
            "changed": [c.as_dict() for c in self.changed],
            "deactivated": [c.as_dict() for c in self.deactivated],
        }


@dataclass(frozen=True)
class Removal:
    """A row marked as the file's that the file no longer defines, and what the apply does."""

    kind: Kind
    row: Any

    @property
    def action(self) -> str:
        return DEACTIVATED if self.kind.deactivates else RELEASED

    @property
    def change(self) -> Change:
        return Change(self.kind.label, self.row.name, self.action)

    def carry_out(self) -> str:
        """Deactivate or release the row (an update: no save hooks run); its report line."""
        rows = self.kind.model._default_manager.filter(pk=self.row.pk)
        stamp = {"updated_at": timezone.now()} if _has_field(self.kind.model, "updated_at") else {}
        if self.action == DEACTIVATED:
            rows.update(is_active=False, **stamp)
            return self.change.label
        rows.update(managed_by="", **stamp)
        return f"{self.change.label} (kept as it is for its backups; released: edited in the admin now)"


def declared_rows(plan: Plan) -> list[tuple[Kind, str, Declared]]:
    """Every row the file defines, as the apply writes it, in the apply's order."""
    rows: list[tuple[Kind, str, Declared]] = [(KEY, n, Declared(f)) for n, f in plan.keys.items()]
    rows += [(STORAGE, n, Declared(f)) for n, f in plan.storages.items()]
    rows += [
        (TARGET, n, Declared({**f, "sandbox": plan.target_sandboxes.get(n)}, plan.target_storages[n]))
        for n, f in plan.targets.items()
    ]
    rows += [(NOTIFIER, n, Declared(f)) for n, f in plan.notifiers.items()]
    for section in extra_sections():
        if section.model is None or section.declared is None:
            continue
        kind = Kind(section.label or section.name, section.model)
        rows += [(kind, n, section.declared(p)) for n, p in plan.extra.get(section.name, {}).items()]
    return rows


def removed_rows(plan: Plan, path: str) -> list[Removal]:
    """Rows marked ``managed_by`` ``path`` that the file no longer defines and that the apply
    still has to deactivate (those already inactive are left alone) or release."""
    names: dict[Kind, set[str]] = {}
    for kind, name, _ in declared_rows(plan):
        names.setdefault(kind, set()).add(name)
    found = []
    for kind in kinds():
        rows = kind.model._default_manager.filter(managed_by=path).exclude(name__in=names.get(kind, set()))
        row: Any
        for row in rows.order_by("name"):
            if not kind.deactivates or row.is_active:
                found.append(Removal(kind, row))
    return found


def compare(config: Config, plan: Plan) -> ConfigDiff:
    """What :func:`backups.config.loader.apply` of ``config`` (validated into ``plan``) would
    change now. Reads the catalog only."""
    path = config.path
    newest = AppliedConfig.objects.order_by("-applied_at", "-id").first()
    diff = ConfigDiff(
        path=path,
        digest=config.digest,
        applied=newest.digest if newest else "",
        applied_path=newest.path if newest else "",
    )
    for kind, name, declared in declared_rows(plan):
        row: Any = kind.model._default_manager.filter(name=name).first()
        if row is None:
            diff.changes.append(Change(kind.label, name, ADDED))
            continue
        fields = _field_changes(row, {**declared.fields, "managed_by": path})
        if declared.storages is not None:
            current = sorted(row.storages.values_list("name", flat=True))
            if set(current) != set(declared.storages):
                fields.append(FieldChange("storages", current, sorted(set(declared.storages))))
        if fields:
            diff.changes.append(Change(kind.label, name, CHANGED, tuple(fields)))
    diff.changes += [removal.change for removal in removed_rows(plan, path)]
    return diff


def _field_changes(row: Model, wanted: dict[str, Any]) -> list[FieldChange]:
    changes = []
    for key, new in wanted.items():
        old = _current(row, key)
        if old != new:
            changes.append(FieldChange(key, shown(key, old), shown(key, new)))
    return changes


def _current(row: Model, key: str) -> Any:
    """The row's value of ``key`` as a plan holds it: a foreign key as the related row's name."""
    if row._meta.get_field(key).many_to_one:
        related = getattr(row, key)
        return related.name if related is not None else None
    return getattr(row, key)


def _has_field(model: type[Model], name: str) -> bool:
    return any(f.name == name for f in model._meta.get_fields())


def shown(key: str, value: Any) -> Any:
    """``value`` as a diff may show it: under a secret's name, references only (else masked)."""
    if isinstance(value, dict):
        return {k: shown(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(key, item) for item in value]
    if isinstance(value, str) and value and key.lower().endswith(SECRET_WORDS):
        return value if secrets.is_reference_only(value) else MASK
    return value
