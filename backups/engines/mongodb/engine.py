"""MongoDB: ``mongodump --archive`` streamed out, ``mongorestore --archive`` streamed back in.

Needs the MongoDB Database Tools 100.3 or later (``--config`` appeared in 100.3.0). A target is
one database, as with the SQL engines; ``include_tables``/``exclude_tables`` name collections.

Credentials. The tools read a YAML file named by ``--config`` (mongo-tools parses its keys
``uri``, ``password`` and ``sslPEMKeyPassword`` with ``yaml.UnmarshalStrict``). That file is
written 0600 in a private 0700 directory under the scratch dir and removed afterwards, whatever
happens; argv holds only its path. The URI in it carries the host, port, user name, authSource,
TLS settings and timeouts, but never the password: the tools print the URI in connection errors
("failed to connect to mongodb://..."), so the password travels as the file's separate
``password`` key. The engine needs no MongoDB client library: the tools do all the talking.

Proof that a dump is whole. mongodump exits 0 without writing anything when ``--collection``
names a collection that does not exist, and a crash or kill can cut an archive anywhere. Every
dump is therefore followed as it streams by :mod:`.mongodb_archive`, which checks the archive's
framing and that mongodump closed every collection it declared, and counts the documents. A
restore is guarded the same way, refused before anything is written when the stream is not an
archive of exactly one database, and then checked against mongorestore's own tally of documents
restored and failed.

Restores. ``--stopOnError``: without it mongorestore logs duplicate-key and validation errors as
"continuing through error" and exits 0. ``--drop`` (the default, option ``drop``) replaces each
collection of the backup, as the SQL engines replace their tables; collections the backup does
not hold are left alone. The archive's database is renamed to the target's database with
``--nsFrom``/``--nsTo``, so a backup restores under any database name.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from backups.engines.base import (
    Connection,
    Dump,
    DumpOptions,
    Engine,
    EngineError,
    RestoreOptions,
    RestoreResult,
)
from backups.engines.mongodb.archive import NotAnArchive, ScannedStream, scan
from backups.engines.mongodb.settings import Settings, config_text, human_error, settings_for, validate
from backups.engines.process import base_env, dump_process, feed_process, run_tool, secret_file

#: The stderr lines worth keeping (the tools also log progress every few seconds).
_WORTH_KEEPING = ("Failed:", "error", "does not exist", "document(s) restored")
_RESTORED = re.compile(r"(\d+) document\(s\) restored successfully\. (\d+) document\(s\) failed to restore")


class MongoDBEngine(Engine):
    key = "mongodb"
    label = "MongoDB"
    binaries = ("mongodump", "mongorestore")
    file_extension = ".archive"
    content_type = "application/octet-stream"
    supported_types = ("full", "database")
    confirm_with = "database"

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        return validate(connection)

    @contextlib.contextmanager
    def config_file(self, scratch_dir: Path, settings: Settings, *, for_dump: bool) -> Iterator[Path]:
        """The tools' ``--config`` file, 0600 in a private directory removed on exit."""
        for label, pem in (
            ("tls_ca_file", settings.tls_ca_file),
            ("tls_certificate_key_file", settings.tls_certificate_key_file),
        ):
            if pem and not Path(pem).is_file():
                raise EngineError(f"{label} {pem} does not exist or is not a file")
        scratch_dir.mkdir(parents=True, exist_ok=True)
        private = Path(tempfile.mkdtemp(prefix="mongodb-", dir=scratch_dir))  # 0700
        try:
            text = config_text(settings, for_dump=for_dump)
            with secret_file(private, text, prefix="tools-", suffix=".yaml") as path:
                yield path
        finally:
            shutil.rmtree(private, ignore_errors=True)

    @staticmethod
    def _explain(settings: Settings, lines: list[str]) -> Callable[[str], str]:
        def explain(stderr: str) -> str:
            failed = [line for line in lines if "Failed:" in line or "error connecting to host" in line]
            return human_error(failed[-1] if failed else stderr, settings)

        return explain

    # -- dump ----------------------------------------------------------------------------------

    def dump_argv(self, config: Path, settings: Settings, connection: Connection) -> list[str]:
        argv = ["mongodump", f"--config={config}", "--archive", f"--db={settings.database}"]
        if connection.include_tables:
            argv.append(f"--collection={connection.include_tables[0]}")
        argv += [f"--excludeCollection={name}" for name in connection.exclude_tables]
        return argv

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        settings = settings_for(connection)
        info: dict[str, Any] = {"database": settings.database, "tool": "mongodump"}
        lines: list[str] = []
        config_file = self.config_file(options.scratch_dir, settings, for_dump=True)
        with (
            config_file as config,
            dump_process(
                self.dump_argv(config, settings, connection),
                base_env({}),
                tool="mongodump",
                on_stderr=_keep(lines),
                explain=self._explain(settings, lines),
            ) as stdout,
        ):
            stream = ScannedStream(stdout)
            try:
                yield Dump(stream=stream, info=info)  # type: ignore[arg-type]
            except Exception:
                # The pipeline refuses an empty stream. When mongodump ended without writing a
                # byte, let it finish instead, so that its exit status and stderr say why.
                if not stream.at_end or stream.scanner.size:
                    raise
        scanner = stream.scanner
        if scanner.size == 0:
            if connection.include_tables and any("does not exist" in line for line in lines):
                raise EngineError(
                    f"collection {connection.include_tables[0]} does not exist in database "
                    f"{settings.database} on {settings.where}"
                )
            raise EngineError("mongodump exited successfully but wrote nothing")
        scanner.check_complete()
        collections = scanner.collections()
        if not collections:
            raise EngineError(
                f"database {settings.database} on {settings.where} has no collections to back up "
                "(a MongoDB database exists only once it holds one: check the database name"
                f"{' and exclude_tables' if connection.exclude_tables else ''})"
            )
        info.update(
            server_version=scanner.header.get("server_version", ""),
            tool_version=scanner.header.get("tool_version", ""),
            archive_version=scanner.header.get("version", ""),
            tables=collections,
            views=scanner.collections("view"),
            timeseries=scanner.collections("timeseries"),
            row_counts={
                namespace.collection: namespace.documents
                for namespace in scanner.namespaces.values()
                if namespace.kind != "view"
            },
            # Counts of what the archive holds, taken from the archive itself: exact for it.
            row_counts_exact=True,
            documents=scanner.documents,
        )

    # -- restore -------------------------------------------------------------------------------

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        settings = settings_for(connection)
        guarded = ScannedStream(stream)
        guarded.open()  # garbage, or another layout, is refused before the destination is touched
        scanner = guarded.scanner
        databases = scanner.databases
        if len(databases) != 1:
            held = ", ".join(repr(name) for name in databases) or "none"
            raise NotAnArchive(
                f"the archive holds {len(databases)} databases ({held}); a target restores exactly one"
            )
        lines: list[str] = []
        with self.config_file(options.scratch_dir, settings, for_dump=False) as config:
            try:
                feed_process(
                    self.restore_argv(config, settings, databases[0]),
                    base_env({}),
                    guarded,  # type: ignore[arg-type]
                    tool="mongorestore",
                    on_stderr=_keep(lines),
                    explain=self._explain(settings, lines),
                )
                scanner.check_complete()
                restored = self._tally(lines, scanner.documents)
            except NotAnArchive:
                raise
            except EngineError as exc:
                raise EngineError(
                    f"restore into database {settings.database} on {settings.where} failed: {exc}. "
                    "The database may be partially restored."
                ) from None
        collections = scanner.collections()
        return RestoreResult(
            tables=collections,
            message=(
                f"restored {len(collections)} collection(s), {restored} document(s) into database "
                f"{settings.database} on {settings.where}{' (collections dropped first)' if settings.drop else ''}"
                "; mongorestore's count matches the archive"
            ),
        )

    @staticmethod
    def restore_argv(config: Path, settings: Settings, source: str) -> list[str]:
        """``--stopOnError``: by default mongorestore only logs duplicate-key and validation
        errors and exits 0. The archive's database ``source`` becomes the target's database."""
        pattern = f"{_pattern(source)}.*"
        argv = ["mongorestore", f"--config={config}", "--archive", "--stopOnError", f"--nsInclude={pattern}"]
        if settings.drop:
            argv.append("--drop")
        if source != settings.database:
            argv += [f"--nsFrom={pattern}", f"--nsTo={_pattern(settings.database)}.*"]
        return argv

    @staticmethod
    def _tally(lines: list[str], expected: int) -> int:
        """mongorestore's closing "N document(s) restored successfully. M document(s) failed to
        restore." line, checked against the documents the archive holds."""
        tally = next((match for line in reversed(lines) if (match := _RESTORED.search(line))), None)
        if tally is None:
            raise EngineError("mongorestore did not report how many documents it restored")
        restored, failed = int(tally.group(1)), int(tally.group(2))
        if failed or restored != expected:
            raise EngineError(
                f"mongorestore restored {restored} and failed {failed} of the archive's {expected} document(s)"
            )
        return restored

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        """Without a server to restore into: the archive's framing, every document walked as
        BSON, every collection closed by mongodump; documents counted."""
        return scan(stream, check_documents=True).summary()

    # -- checks --------------------------------------------------------------------------------

    def probe(self, connection: Connection) -> None:
        """Connect and authenticate with the dump tool itself: mongodump asked for a collection
        that does not exist connects, lists the database's collections, writes nothing and
        exits 0 (it checks that a ``--collection`` exists before dumping anything)."""
        settings = settings_for(connection)
        # A probe gets no scratch dir: the system's (TMPDIR), in a private directory all the same.
        with self.config_file(Path(tempfile.gettempdir()), settings, for_dump=True) as config:
            argv = [
                "mongodump",
                f"--config={config}",
                "--archive",
                f"--db={settings.database}",
                "--collection=backupsite.probe.does-not-exist",
            ]
            try:
                run_tool(argv, base_env({}), tool="mongodump", timeout=settings.connect_timeout * 3 + 30)
            except EngineError as exc:
                raise EngineError(human_error(str(exc), settings)) from None

    def check_restore_destination(self, connection: Connection) -> None:
        self.probe(connection)


def _pattern(name: str) -> str:
    """A database name in a mongorestore namespace pattern (mongo-tools' ``ns.Escape``)."""
    return name.replace("\\", "\\\\").replace("*", "\\*")


def _keep(lines: list[str]) -> Callable[[str], None]:
    def keep(line: str) -> None:
        if any(marker in line for marker in _WORTH_KEEPING):
            lines.append(line)

    return keep
