"""ClickHouse: one database's schema and data, as a tar archive of SQL and Native parts.

Everything goes through ``clickhouse-client``: credentials and timeouts in
:mod:`.clickhouse_client`, what a database holds in :mod:`.clickhouse_catalog`, the archive's
layout in :mod:`.clickhouse_archive`, the restore's order in :mod:`.clickhouse_restore`. A dump
lists the database's tables and views, takes their ``SHOW CREATE TABLE`` statements, then
streams each table's ``SELECT * ... FORMAT Native`` into the archive, one table after another:
ClickHouse has no snapshot across tables or queries, so the archive is consistent per table,
not across tables. ``SELECT *`` leaves out MATERIALIZED and ALIAS columns; the server computes
them again when the rows are inserted.

Row counts. A MergeTree SELECT reads the set of data parts active when it starts, and a part
never changes. The active parts of the database are listed before the first table is read and
after the last one: a table whose parts are the same both times was dumped with exactly the
rows those parts hold, so its count is exact. Inserts, mutations and merges during the dump
change the parts (counts then approximate); other engines have no parts (``count()`` before the
dump, approximate). A restore compares exact counts with what it restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
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
    assertion_text,
)
from backups.engines.clickhouse.archive import (
    VERSION,
    ArchiveReader,
    ArchiveWriter,
    Data,
    Entry,
    Header,
    Schema,
)
from backups.engines.clickhouse.catalog import (
    Catalog,
    change_state,
    data_counts,
    database_exists,
    refuse_hidden_secrets,
)
from backups.engines.clickhouse.client import CLIENT, Client, client, settings_for, validate
from backups.engines.clickhouse.native import NativeError, walk
from backups.engines.clickhouse.restore import Restorer
from backups.engines.clickhouse.sql import first_names, quote_identifier
from backups.engines.process import dump_process, widen_pipe

_CHUNK = 1024 * 1024


def _default_scratch() -> Path:
    """Where short sessions (probe, counts) keep their client config: they get no options."""
    return Path(tempfile.gettempdir())


class ClickHouseEngine(Engine):
    key = "clickhouse"
    label = "ClickHouse"
    binaries = (CLIENT,)
    file_extension = ".tar"
    content_type = "application/x-tar"
    supported_types = ("full", "database")
    confirm_with = "database"
    has_scratch_databases = True

    def validate(self, connection: Connection) -> list[tuple[str, str]]:
        return validate(connection)

    @contextlib.contextmanager
    def _client(self, connection: Connection, scratch_dir: Path | None = None) -> Iterator[Client]:
        with client(settings_for(connection), scratch_dir or _default_scratch()) as ch:
            yield ch

    def probe(self, connection: Connection) -> None:
        with self._client(connection) as ch:
            if not database_exists(ch, connection.database):
                raise EngineError(f"database {connection.database} does not exist on {ch.settings.where}")

    # -- dump ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def dump(self, connection: Connection, options: DumpOptions) -> Iterator[Dump]:
        with self._client(connection, options.scratch_dir) as ch:
            catalog = Catalog(ch, connection)
            database = ch.settings.database
            header = Header(
                database=database,
                server_version=catalog.server_version,
                entries=catalog.entries,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )

            @contextlib.contextmanager
            def open_data(entry: Entry) -> Iterator[BinaryIO]:
                table = f"{quote_identifier(database)}.{quote_identifier(entry.data_table or '')}"
                argv = ch.argv("--query", f"SELECT * FROM {table} FORMAT Native")  # noqa: S608
                try:
                    with dump_process(argv, ch.env, tool=CLIENT, explain=ch.explain) as stdout:
                        yield stdout
                except EngineError as exc:
                    raise EngineError(f"dumping {entry.name} failed: {exc}") from None

            def finish(parts: dict[str, int]) -> dict[str, Any]:
                exact = catalog.exact_counts(ch)
                return {"parts": parts, "row_counts": catalog.row_counts, "exact": exact}

            read_fd, write_fd = os.pipe()
            reader = os.fdopen(read_fd, "rb", buffering=0)
            widen_pipe(reader)
            writer = ArchiveWriter(
                os.fdopen(write_fd, "wb", buffering=0),
                header,
                catalog.schemas,
                open_data,
                finish,
                ch.settings.part_size,
            )
            info: dict[str, Any] = {
                "database": database,
                "server_version": catalog.server_version,
                "tool": CLIENT,
                "archive_format": VERSION,
                "tables": [entry.name for entry in catalog.entries if entry.kind == "table"],
                "views": [entry.name for entry in catalog.entries if entry.kind != "table"],
                "schema_only": [
                    entry.name for entry in catalog.entries if entry.kind == "table" and not entry.data
                ],
                "row_counts": {},
                "row_counts_exact": False,
            }
            writer.start()
            try:
                yield Dump(stream=reader, info=info)
                # A consumer may stop at the tar's end-of-archive blocks; the dump must still end.
                while reader.read(_CHUNK):
                    pass
            finally:
                reader.close()  # a writer blocked on the pipe now fails instead of hanging
                writer.join()
            if writer.error is not None:
                error = writer.error
                if isinstance(error, EngineError):
                    raise EngineError(ch.scrub(str(error))) from None
                raise EngineError(ch.scrub(f"writing the archive failed: {error}")) from None
        trailer = writer.trailer
        info["row_counts"] = trailer["row_counts"]
        inexact = [name for name in trailer["row_counts"] if name not in trailer["exact"]]
        info["row_counts_exact"] = not inexact
        if inexact:
            info["row_counts_note"] = (
                "written during the dump, merged, or not MergeTree (no parts to compare): "
                + first_names(inexact)
            )
        info["parts"] = sum(writer.parts.values())

    # -- restore ---------------------------------------------------------------------------------

    def check_restore_destination(self, connection: Connection) -> None:
        with self._client(connection) as ch:
            ch.query("SELECT 1", quick=True)

    def restore(self, connection: Connection, stream: BinaryIO, options: RestoreOptions) -> RestoreResult:
        settings = settings_for(connection)
        archive = ArchiveReader(stream)  # garbage is refused before the destination is touched
        with self._client(connection, options.scratch_dir) as ch:
            restorer = Restorer(ch, archive)
            restorer.prepare()
            try:
                restorer.run()
            except EngineError as exc:
                at = f" at {restorer.current}" if restorer.current else ""
                raise EngineError(
                    f"restore into database {settings.database} on {settings.where} failed{at}: "
                    f"{str(exc).rstrip('.')}. {restorer.aftermath()}."
                ) from None
            return restorer.check()

    def trial_restore(self, stream: BinaryIO, options: RestoreOptions) -> str:
        """Without a server: the archive's layout (description first, every schema statement,
        contiguous parts, the trailer last) and every table's Native stream walked block by
        block, its rows compared with the trailer's exact counts."""
        archive = ArchiveReader(stream)
        trailer: dict[str, Any] = {}
        rows: dict[str, int] = {}
        partial: list[str] = []
        parts = 0
        for event in archive.events():
            if isinstance(event, Schema):
                if not event.sql.lstrip().upper().startswith(("CREATE ", "ATTACH ")):
                    raise EngineError(f"{event.entry.schema} does not hold a CREATE statement")
                where = f"the backup of database {archive.header.database}"
                refuse_hidden_secrets({event.entry.name: event.sql}, where)
            elif isinstance(event, Data):
                try:
                    summary = walk(event.stream)
                except NativeError as exc:
                    raise EngineError(f"the Native data of {event.entry.name} is malformed: {exc}") from None
                parts += event.stream.parts
                if summary.stopped:
                    partial.append(f"{event.entry.name} ({summary.stopped})")
                else:
                    rows[event.entry.name] = summary.rows
            else:
                trailer = event.document
        header = archive.header
        with_data = [entry.name for entry in header.entries if entry.data]
        counts = trailer.get("row_counts") or {}
        checked = 0
        for name in trailer.get("exact") or []:
            if name in with_data and not any(item.startswith(f"{name} (") for item in partial):
                found = rows.get(name, 0)
                if found != counts.get(name):
                    raise EngineError(
                        f"table {name} holds {found} rows in the archive, the backup recorded {counts.get(name)}"
                    )
                checked += 1
        summary_text = (
            f"archive of database {header.database}: {len(header.entries)} table(s) and view(s), "
            f"{parts} Native part(s), {sum(rows.values())} row(s) walked block by block; "
            f"{checked} exact row count(s) match"
        )
        if partial:
            summary_text += "; not walked to the end: " + first_names(partial, 3)
        return summary_text

    # -- scratch databases and change detection --------------------------------------------------

    def row_counts(self, connection: Connection) -> dict[str, int]:
        with self._client(connection) as ch:
            return data_counts(ch, connection.database)

    def drop_database(self, connection: Connection) -> None:
        with self._client(connection) as ch:
            ch.query(f"DROP DATABASE IF EXISTS {quote_identifier(connection.database)}")

    def check_assertion(self, connection: Connection, sql: str, timeout_seconds: float) -> str:
        """In ``connection.database`` with ``max_execution_time`` and, after it, ``readonly = 1``
        (nothing may be written and no setting changed again)."""
        seconds = max(1, int(timeout_seconds + 0.999))
        text = (
            f"SET max_execution_time = {seconds};\nSET readonly = 1;\n"
            f"USE {quote_identifier(connection.database)};\n{sql}"
        )
        with self._client(connection) as ch:
            try:
                output = ch.query(text, timeout=timeout_seconds + 60)
            except EngineError as exc:
                if "TIMEOUT_EXCEEDED" in str(exc) or "Timeout exceeded" in str(exc):
                    raise EngineError(
                        f"the check ran longer than {timeout_seconds:g} s and was stopped"
                    ) from None
                raise EngineError(f"the check failed: {exc}") from None
        lines = output.splitlines()
        return assertion_text([lines[0].split("\t")[0]] if lines else None)

    def fingerprint(self, connection: Connection) -> str | None:
        """A hash of every table's engine, statement and metadata time and of every active data
        part (name, rows, size, time), or None when the database holds tables without parts.

        Every insert, mutation and merge of a MergeTree table makes new parts with new names
        (block numbers only grow), and every schema change rewrites the table's statement and
        metadata file. Log and Memory tables change without a trace in the catalog, so with any
        of them the answer is None. The one blind spot: a table dropped and re-created with the
        same statement within the same second and filled with parts of the same names, sizes
        and times.
        """
        with self._client(connection) as ch:
            state = change_state(ch, connection.database)
        if state is None:
            return None
        digest = hashlib.sha256(state.encode("utf-8", "surrogateescape"))
        return f"clickhouse:{digest.hexdigest()}"
