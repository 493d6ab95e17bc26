"""The ``external`` engine: backups another tool writes into one of our storages, which
Backupsite watches and adopts (``backups.watching``). It dumps and restores nothing: the tool
that wrote the files restores them. Runs, schedules and restores are refused in the services
before they reach it; these refusals are the last line."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from .base import Connection, Dump, DumpOptions, Engine, EngineError, RestoreOptions, RestoreResult

REFUSAL = (
    "engine external: Backupsite watches the files another tool writes; it makes and restores "
    "none of them itself. Run that tool to back up or restore; here you can verify and download them"
)


class ExternalEngine(Engine):
    key = "external"
    label = "External (watched)"
    file_extension: ClassVar[str] = ".external"
    supported_types: ClassVar[tuple[str, ...]] = ()  # it makes none (adopted files are recorded "full")

    def dump(self, connection: Connection, options: DumpOptions) -> AbstractContextManager[Dump]:
        raise EngineError(REFUSAL)

    def check_restore_destination(self, connection: Connection) -> None:
        raise EngineError(REFUSAL)

    def restore_refusal(
        self, connection: Connection, manifest: dict[str, Any], scratch_dir: Path
    ) -> str | None:
        return REFUSAL

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        raise EngineError(REFUSAL)

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        raise EngineError(REFUSAL)
