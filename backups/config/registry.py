"""Sections other apps add to the TOML file, and the writing helpers they share with the core.

The core validates and applies ``[storages.*]``, ``[keys.*]``, ``[targets.*]`` and
``[notifiers.*]``; an app that owns more configuration (the schedules app: ``[schedules.*]``)
registers a :class:`ConfigSection` from its ``ready``. The loader never imports those apps: it calls what
they registered, in ``position`` order, with what they may refer to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model

from backups.config.checks import Validator, suggest
from backups.models import Storage, Target

CORE_SECTIONS = {"storages": 10, "keys": 15, "targets": 20, "notifiers": 40}


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)  # defined by the file before, no longer

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deactivated": self.deactivated,
        }

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deactivated)


@dataclass
class Keys:
    """The encryption keys a table may name, declared in the file or already in the catalog, and,
    noted while the tables are checked, which tables encrypt to each (so that a host that
    restores can be required to hold its identity)."""

    identities: dict[str, str]  # name -> identity reference as the apply leaves it ("": none)
    retired: set[str]  # in the catalog
    encrypting: dict[str, list[str]] = field(default_factory=dict)  # name -> "targets.T", ...

    def refs(
        self, check: Validator, path: str, encryption: str, escrow: list[str], inherited: str = ""
    ) -> None:
        """Report, under ``path.encryption`` and ``path.escrow``, names of no key or of a retired
        one, and escrow keys without a key to add them to (``inherited``: the target's key, for a
        schedule); note the table as encrypting to its key."""
        for key, names in (("encryption", [encryption] if encryption else []), ("escrow", escrow)):
            for name in names:
                if name not in self.identities:
                    check.error(f"{path}.{key}", self._unknown(name))
                elif name in self.retired:
                    check.error(f"{path}.{key}", f"key {name!r} is retired; name an active key")
        if escrow and not (encryption or inherited):
            check.error(f"{path}.escrow", "escrow keys need an encryption key: set encryption as well")
        if encryption:
            self.encrypting.setdefault(encryption, []).append(path)

    def _unknown(self, name: str) -> str:
        if name == "none":
            return '"none" names no key: leave encryption out to store backups unencrypted'
        return (
            f"no key named {name!r}{suggest(name, self.identities)}; declare it as [keys.{name}] "
            f"(or backup_keys generate {name})"
        )


@dataclass(frozen=True)
class Known:
    """What a section's tables may refer to: declared in the file or already in the catalog."""

    storages: set[str]
    targets: dict[str, str]  # name -> engine key
    targets_with_config: set[str]  # targets that list config_paths
    notifiers: set[str]
    keys: Keys
    target_keys: dict[str, str]  # target name -> the name of the key it encrypts to ("": none)


@dataclass
class Written:
    """The rows the apply wrote so far (and the existing ones), for sections that refer to them."""

    storages: dict[str, Storage]
    targets: dict[str, Target]
    report: ApplyReport
    managed_by: str | None = None  # the file's absolute path; None: rows are not marked

    def target(self, name: str) -> Target:
        return self.targets.get(name) or Target.objects.get(name=name)

    def marked(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` plus ``managed_by`` (the file), for :func:`upsert`, when the apply marks rows."""
        return fields if self.managed_by is None else {**fields, "managed_by": self.managed_by}


@dataclass(frozen=True)
class Declared:
    """One row as a file declares it, for comparing with the catalog: field values as
    :func:`upsert` writes them (a foreign key as the related row's name) and, for rows with
    storages, the storages' names."""

    fields: dict[str, Any]
    storages: list[str] | None = None


@dataclass(frozen=True)
class ConfigSection:
    """One ``[name.*]`` section: ``validate`` checks one table (reporting through the Validator)
    and returns its plan; ``apply`` writes one plan inside the apply's transaction;
    ``after_apply`` runs once after a successful apply (e.g. to sync Celery beat). With ``model``
    (rows named by a unique ``name``, marked with ``managed_by``) and ``declared`` (one plan as
    the row it declares), ``backup_config diff`` compares the section's rows, and rows the file
    no longer defines are deactivated (``is_active``) or, for a model without that flag, released.
    ``label`` names one row in reports ("schedule nightly")."""

    name: str
    position: int
    validate: Callable[[Validator, str, dict[str, Any], Known], Any]
    apply: Callable[[str, Any, Written], None]
    after_apply: Callable[[], object] | None = None
    model: type[Model] | None = None
    declared: Callable[[Any], Declared] | None = None
    label: str = ""


_SECTIONS: dict[str, ConfigSection] = {}


def register_section(section: ConfigSection) -> None:
    _SECTIONS[section.name] = section


def extra_sections() -> list[ConfigSection]:
    return sorted(_SECTIONS.values(), key=lambda section: section.position)


def section_names() -> tuple[str, ...]:
    """Every section the file may hold, in the order messages list them."""
    positions = {**CORE_SECTIONS, **{s.name: s.position for s in _SECTIONS.values()}}
    return tuple(sorted(positions, key=positions.__getitem__))


def upsert(model: type[Model], name: str, fields: dict[str, Any], report: ApplyReport, label: str) -> Any:
    """Create or update the row named ``name``; report what changed."""
    obj = model._default_manager.filter(name=name).first()
    if obj is None:
        obj = model._default_manager.create(name=name, **fields)
        report.created.append(f"{label} {name}")
        return obj
    changed = [key for key, value in fields.items() if getattr(obj, key) != value]
    if changed:
        for key in changed:
            setattr(obj, key, fields[key])
        obj.save()
        report.updated.append(f"{label} {name} ({', '.join(changed)})")
    else:
        report.unchanged.append(f"{label} {name}")
    return obj


def set_storages(obj: Any, wanted: list[Storage], report: ApplyReport, label: str) -> None:
    """Make ``obj.storages`` exactly ``wanted``; report it when that changed anything."""
    manager = obj.storages
    current = {item.pk for item in manager.all()}
    if current != {item.pk for item in wanted}:
        manager.set(wanted)
        entry = f"{label} (storages)"
        if not any(line.startswith(label) for line in report.created + report.updated):
            report.unchanged = [line for line in report.unchanged if line != label]
            report.updated.append(entry)
