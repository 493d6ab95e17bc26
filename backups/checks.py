"""System checks: missing dump tools for the engines in use."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.db import DatabaseError

from .engines import EngineError, get_engine


@register()
def check_engine_binaries(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .models import Target

    try:
        in_use = set(Target.objects.filter(is_active=True).values_list("engine", flat=True))
    except DatabaseError:  # not migrated yet: nothing is in use
        return []
    errors: list[CheckMessage] = []
    for key in sorted(in_use):
        try:
            engine = get_engine(key)
        except EngineError as exc:
            errors.append(Error(str(exc), id="backups.E002"))
            continue
        for binary in engine.missing_binaries():
            errors.append(
                Error(
                    f"engine {key!r} needs the program {binary!r}, which is not on PATH",
                    hint=f"Install {binary} (see README, 'Requirements').",
                    id="backups.E001",
                )
            )
    return errors
