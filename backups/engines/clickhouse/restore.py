"""Restoring a ClickHouse archive into one database, in the order that keeps its data whole.

Order: the backup's tables are created and filled first; views and materialized views come
after the tables' data (in the dump's dependency order), so a materialized view is not fed the
restored rows a second time; then the materialized views' own rows go into their ``.inner.``
tables. Statements are rewritten from the source's database to the destination's
(:func:`.clickhouse_sql.rewrite_database` says what that cannot reach) and run with the
destination as the current database.

ClickHouse has no transactions, but a failed restore can still leave the destination as it was:
every table and view it creates is new (it refuses when one exists, unless ``replace_existing``),
so :meth:`Restorer.aftermath` drops them again, or the whole database when the restore created
it. Only objects ``replace_existing`` already dropped cannot come back.
"""

from __future__ import annotations

import itertools
from typing import Any

from backups.engines.base import EngineError, RestoreResult
from backups.engines.clickhouse.archive import ArchiveReader, Data, Entry, Schema, Trailer
from backups.engines.clickhouse.catalog import (
    VIEW_ENGINES,
    data_counts,
    database_exists,
    list_objects,
    refuse_hidden_secrets,
)
from backups.engines.clickhouse.client import Client
from backups.engines.clickhouse.sql import first_names, quote_identifier, rewrite_database


def needs_low_cardinality(sql: str) -> tuple[str, ...]:
    # 18.x refuses LowCardinality columns unless told; later servers accept the setting and ignore it.
    return ("--allow_experimental_low_cardinality_type=1",) if "LowCardinality" in sql else ()


class Restorer:
    """One restore: conflicts checked first, then tables, data, views, views' data."""

    def __init__(self, ch: Client, archive: ArchiveReader) -> None:
        self.ch, self.archive = ch, archive
        self.header = archive.header
        self.database = ch.settings.database
        self.current = ""
        self.pending_views: list[tuple[Entry, str]] = []
        self.trailer: dict[str, Any] = {}
        self.events = archive.events()
        self.schemas: list[Schema | Data | Trailer] = []
        self.created_database = False
        self.created: list[str] = []  # tables and views, in the order they were created
        self.replaced: list[str] = []  # existing ones dropped (replace_existing)

    def qualified(self, name: str) -> str:
        return f"{quote_identifier(self.database)}.{quote_identifier(name)}"

    def prepare(self) -> None:
        """Refuse before changing anything when a statement holds a hidden credential or the
        backup's tables exist (unless replacing)."""
        # The statements come first in the archive (small): all of them are read and checked here.
        self.schemas = list(itertools.islice(self.events, len(self.header.entries)))
        refuse_hidden_secrets(
            {event.entry.name: event.sql for event in self.schemas if isinstance(event, Schema)},
            f"the backup of database {self.header.database}",
        )
        exists = database_exists(self.ch, self.database)
        existing = list_objects(self.ch, self.database) if exists else {}
        wanted = [entry.name for entry in self.header.entries]
        wanted += [
            entry.data_table for entry in self.header.entries if entry.kind != "table" and entry.data_table
        ]
        conflicts = [name for name in wanted if name in existing]
        if conflicts and not self.ch.settings.replace_existing:
            raise EngineError(
                f"database {self.database} on {self.ch.settings.where} already has table(s) or view(s) of "
                f"the backup: {first_names(conflicts)}; nothing was changed. Restore into another database, "
                "drop them, or set the destination's option replace_existing = true"
            )
        if not exists:
            self.ch.query(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")
            self.created_database = True
        # Views first: dropping a materialized view also drops its inner table.
        for name in sorted(conflicts, key=lambda name: existing[name] not in VIEW_ENGINES):
            self.ch.query(f"DROP TABLE IF EXISTS {self.qualified(name)}")
            self.replaced.append(name)

    def run(self) -> None:
        for event in itertools.chain(self.schemas, self.events):
            if isinstance(event, Schema):
                sql = rewrite_database(event.sql, self.header.database, self.database)
                if event.entry.kind == "table":
                    self.create(event.entry, sql)
                else:
                    self.pending_views.append((event.entry, sql))
            elif isinstance(event, Data):
                if event.entry.kind != "table":
                    self.create_views()
                self.current = event.entry.name
                argv = self.ch.argv(
                    "--query", f"INSERT INTO {self.qualified(event.entry.data_table or '')} FORMAT Native"
                )
                self.ch.feed(argv, event.stream)  # type: ignore[arg-type]
                self.current = ""
            else:
                self.create_views()
                self.trailer = event.document

    def create(self, entry: Entry, sql: str) -> None:
        self.current = entry.name
        self.ch.execute(sql, database=self.database, extra=needs_low_cardinality(sql))
        self.created.append(entry.name)
        self.current = ""

    def aftermath(self) -> str:
        """After :meth:`run` failed: undo it where possible and say what the destination holds."""
        database = quote_identifier(self.database)
        if self.replaced:
            return (
                "The database may be partially restored (ClickHouse DDL and inserts are not transactional): "
                f"replace_existing had already dropped {first_names(self.replaced)}"
            )
        try:
            if self.created_database:
                self.ch.query(f"DROP DATABASE IF EXISTS {database}")
                return f"Database {self.database} did not exist before this restore and was dropped again"
            # Newest first: a view goes before the tables it reads, a materialized view with its inner table.
            for name in reversed(self.created):
                self.ch.query(f"DROP TABLE IF EXISTS {self.qualified(name)}")
        except EngineError as exc:
            return (
                f"Removing what it had created failed ({str(exc).rstrip('.')}): the database may be "
                "partially restored (ClickHouse DDL and inserts are not transactional)"
            )
        if not self.created:
            return "Nothing was changed"
        return (
            f"The {len(self.created)} table(s) and view(s) it had created were dropped again "
            f"({first_names(self.created)}): database {self.database} is as it was"
        )

    def create_views(self) -> None:
        for entry, sql in self.pending_views:
            self.create(entry, sql)
        self.pending_views = []

    def check(self) -> RestoreResult:
        counts = data_counts(self.ch, self.database)
        names = [entry.name for entry in self.header.entries]
        missing = [name for name in names if name not in list_objects(self.ch, self.database)]
        if missing:
            raise EngineError(f"the restore finished but these are missing: {first_names(missing)}")
        recorded = self.trailer.get("row_counts") or {}
        exact = [name for name in self.trailer.get("exact") or [] if name in recorded]
        wrong = [
            f"restored table {name} has {counts.get(name, 0)} rows, the backup recorded {recorded[name]}"
            for name in exact
            if counts.get(name, 0) != recorded[name]
        ]
        if wrong:
            raise EngineError("; ".join(wrong))
        with_data = {entry.name for entry in self.header.entries if entry.data}
        restored_counts = {name: count for name, count in counts.items() if name in with_data}
        approximate = len(with_data) - len(exact)
        proof = f"{len(exact)} exact row count(s) match the backup"
        if approximate:
            proof += f"; {approximate} not compared (counted while the source could change)"
        where = self.ch.settings.where
        return RestoreResult(
            tables=names,
            message=f"restored {len(names)} table(s) and view(s) into database {self.database} on {where}; {proof}",
            row_counts=restored_counts,
        )
