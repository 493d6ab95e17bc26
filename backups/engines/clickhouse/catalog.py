"""What a ClickHouse database holds, read from its catalog (``system.tables``, ``system.parts``).

Which engines hold data that a backup carries: the MergeTree family, the Log family and Memory,
and materialized views, whose rows live in their ``.inner.<view>`` table (the view's engine
makes it, so it is restored with the view, not as a table of its own). Other engines
(Distributed, Merge, Buffer, Null, Kafka, MySQL, File, URL, Set, Join, Dictionary ...) are
restored from their statement only: their rows live elsewhere, or (Set, Join) cannot be read
back by a query.
"""

from __future__ import annotations

from backups.engines.base import Connection, EngineError
from backups.engines.clickhouse.archive import Entry, path_name, schema_member
from backups.engines.clickhouse.client import Client
from backups.engines.clickhouse.sql import (
    dependency_order,
    first_names,
    hides_secrets,
    quote_identifier,
    quote_string,
    tsv_field,
    tsv_rows,
)

LOG_ENGINES = ("Log", "TinyLog", "StripeLog", "Memory")
VIEW_ENGINES = {"View": "view", "MaterializedView": "materialized_view"}
INNER = ".inner."
# Catalog queries about one database; ``{database}`` is filled in as a quoted string literal.
_DATABASE_EXISTS = "SELECT count() FROM system.databases WHERE name = {database}"
_OBJECTS = (
    "SELECT name, engine FROM system.tables WHERE database = {database} AND NOT is_temporary ORDER BY name"
)
_PARTS = (
    "SELECT table, name, rows FROM system.parts WHERE active AND database = {database} ORDER BY table, name"
)
_TABLE_STATES = (
    "SELECT name, engine, metadata_modification_time, create_table_query FROM system.tables "
    "WHERE database = {database} AND NOT is_temporary ORDER BY name"
)
_PART_STATES = (
    "SELECT table, name, rows, bytes_on_disk, modification_time FROM system.parts "
    "WHERE active AND database = {database} ORDER BY table, name"
)


def merge_tree(engine: str) -> bool:
    return engine.endswith("MergeTree")


def holds_data(engine: str) -> bool:
    return merge_tree(engine) or engine in LOG_ENGINES


class Catalog:
    """What a dump of one database holds, read before any data is."""

    def __init__(self, ch: Client, connection: Connection) -> None:
        database = ch.settings.database
        if not database_exists(ch, database):
            raise EngineError(f"database {database} does not exist on {ch.settings.where}")
        self.server_version = ch.query("SELECT version()").strip()
        self.engines = list_objects(ch, database)
        inner = {name[len(INNER) :] for name in self.engines if name.startswith(INNER)}
        # A materialized view without TO keeps its rows in ".inner.<view>": dumped with the view.
        self.inner = {
            name: f"{INNER}{name}"
            for name, engine in self.engines.items()
            if engine == "MaterializedView" and name in inner
        }
        hidden = set(self.inner.values())
        names = [name for name in self.engines if name not in hidden]
        unknown = [
            name for name in (*connection.include_tables, *connection.exclude_tables) if name not in names
        ]
        if unknown:
            raise EngineError(f"table(s) not found in database {database}: {first_names(unknown)}")
        include, exclude = set(connection.include_tables), set(connection.exclude_tables)
        selected = [name for name in names if (not include or name in include) and name not in exclude]
        statements = show_create(ch, database, selected)
        refuse_hidden_secrets(statements, f"database {database} on {ch.settings.where}")
        tables = sorted(name for name in selected if self.engines[name] not in VIEW_ENGINES)
        views = dependency_order(
            {name: statements[name] for name in selected if self.engines[name] in VIEW_ENGINES}, database
        )
        order = tables + views
        width = max(3, len(str(len(order))))
        self.entries: list[Entry] = []
        for index, name in enumerate(order, start=1):
            engine = self.engines[name]
            data_table = self.inner.get(name) or (name if holds_data(engine) else None)
            self.entries.append(
                Entry(
                    name=name,
                    kind=VIEW_ENGINES.get(engine, "table"),
                    engine=engine,
                    schema=schema_member(index, width, name),
                    data=f"data/{path_name(data_table)}" if data_table else None,
                    data_table=data_table,
                )
            )
        self.schemas = {name: _statement(statements[name]) for name in order}
        self.parts_before, rows = self._parts(ch)
        others = [entry for entry in self.entries if entry.data_table and entry.name not in self.parts_before]
        counted = count_rows(ch, database, [entry.data_table or "" for entry in others])
        #: Rows per entry with data: from the parts (MergeTree), or counted (approximate).
        self.row_counts = {
            entry.name: rows[entry.name] if entry.name in rows else counted[entry.data_table or ""]
            for entry in self.entries
            if entry.data_table
        }

    def _parts(self, ch: Client) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
        """Active part names and rows of each entry whose data is in a MergeTree table."""
        listed: dict[str, list[tuple[str, int]]] = {}
        for table, name, rows in tsv_rows(ask(ch, _PARTS, ch.settings.database)):
            listed.setdefault(table, []).append((name, int(rows)))
        names: dict[str, tuple[str, ...]] = {}
        counts: dict[str, int] = {}
        for entry in self.entries:
            if entry.data_table and merge_tree(self.engines.get(entry.data_table, "")):
                parts = listed.get(entry.data_table, [])
                names[entry.name] = tuple(name for name, _ in parts)
                counts[entry.name] = sum(rows for _, rows in parts)
        return names, counts

    def exact_counts(self, ch: Client) -> list[str]:
        """Called once every table has been read: the entries whose parts did not change since
        the catalog was read, so that their dump holds exactly ``row_counts`` rows."""
        after, _ = self._parts(ch)
        return [name for name, parts in self.parts_before.items() if after.get(name) == parts]


def refuse_hidden_secrets(statements: dict[str, str], where: str) -> None:
    """Fail loudly on statements whose credentials the server hid (``'[HIDDEN]'``): restoring
    them would make tables that cannot reach their data, so no backup or restore carries one."""
    hidden = [name for name, sql in statements.items() if hides_secrets(sql)]
    if hidden:
        raise EngineError(
            f"the statement of {first_names(hidden)} in {where} holds '[HIDDEN]' where ClickHouse hid "
            "a credential (ClickHouse 22.12 and later hide the passwords of MySQL, PostgreSQL, S3, URL ... "
            "tables from SHOW CREATE TABLE); restoring it would create the table with the placeholder "
            "as its credential. Leave such tables out (exclude_tables) and keep their statements "
            "elsewhere: their rows live in the other system"
        )


def _statement(sql: str) -> bytes:
    """A schema member's text: the statement, one ';' and a newline (runs as it is by hand)."""
    return sql.rstrip().rstrip(";").encode("utf-8", "surrogateescape") + b";\n"


def ask(ch: Client, template: str, database: str) -> str:
    """The TabSeparated answer to a catalog query about ``database``."""
    return ch.query(template.format(database=quote_string(database)))


def database_exists(ch: Client, database: str) -> bool:
    """The first question of every session: quick, so a server that never answers fails fast."""
    return ch.query(_DATABASE_EXISTS.format(database=quote_string(database)), quick=True).strip() != "0"


def list_objects(ch: Client, database: str) -> dict[str, str]:
    """Tables and views of ``database``: name -> engine."""
    return {name: engine for name, engine in tsv_rows(ask(ch, _OBJECTS, database))}


def show_create(ch: Client, database: str, names: list[str]) -> dict[str, str]:
    """``SHOW CREATE TABLE`` of each name, all in one client run (one TSV line each)."""
    if not names:
        return {}
    qualified = [f"{quote_identifier(database)}.{quote_identifier(name)}" for name in names]
    output = ch.query(";\n".join(f"SHOW CREATE TABLE {name}" for name in qualified))
    lines = [line for line in output.split("\n") if line]  # (not splitlines: names may hold U+2028)
    if len(lines) != len(names):
        raise EngineError(f"SHOW CREATE TABLE returned {len(lines)} statement(s) for {len(names)} table(s)")
    return {name: tsv_field(line) for name, line in zip(names, lines, strict=True)}


def count_rows(ch: Client, database: str, tables: list[str]) -> dict[str, int]:
    if not tables:
        return {}
    statements = [
        f"SELECT count() FROM {quote_identifier(database)}.{quote_identifier(name)}"  # noqa: S608  (quoted)
        for name in tables
    ]
    lines = ch.query(";\n".join(statements)).split()
    if len(lines) != len(tables):
        raise EngineError(f"counting rows returned {len(lines)} number(s) for {len(tables)} table(s)")
    return {name: int(line) for name, line in zip(tables, lines, strict=True)}


def data_counts(ch: Client, database: str) -> dict[str, int]:
    """Exact row counts of every table and materialized view of ``database`` that holds data."""
    objects = list_objects(ch, database)
    targets: dict[str, str] = {}
    for name, engine in objects.items():
        if engine == "MaterializedView" and f"{INNER}{name}" in objects:
            targets[name] = f"{INNER}{name}"
        elif holds_data(engine) and not (
            name.startswith(INNER) and objects.get(name[len(INNER) :]) == "MaterializedView"
        ):
            targets[name] = name
    counted = count_rows(ch, database, list(targets.values()))
    return {name: counted[table] for name, table in targets.items()}


def change_state(ch: Client, database: str) -> str | None:
    """Every table's engine, statement and metadata time and every active part's name, rows,
    size and time, as text; None when a table keeps data without parts (see ``fingerprint``)."""
    tables = ask(ch, _TABLE_STATES, database)
    engines = [row[1] for row in tsv_rows(tables)]
    if any(not merge_tree(engine) and engine not in VIEW_ENGINES for engine in engines):
        return None
    parts = ask(ch, _PART_STATES, database)
    return "\0".join((ch.query("SELECT version()"), tables, parts))
