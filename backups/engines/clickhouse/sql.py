"""ClickHouse SQL text: quoting, TabSeparated output, database qualifiers and view dependencies.

ClickHouse stores a table's or view's definition as the statement ``SHOW CREATE TABLE`` prints,
with every table name qualified by its database (18.x qualifies even the names a view's SELECT
left unqualified). Restoring into another database therefore means rewriting those qualifiers,
and ordering views after what they read means finding the names they mention. Both work on a
small tokenizer that knows ClickHouse's literals and quoted identifiers, not on a full parser;
the limits that follow from that are spelled out where they apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_TOKEN = re.compile(
    r"""
      (?P<string>'(?:[^'\\]|\\.|'')*')
    | (?P<backquoted>`(?:[^`\\]|\\.|``)*`)
    | (?P<doublequoted>"(?:[^"\\]|\\.|"")*")
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<number>[0-9][0-9A-Za-z_.]*)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.DOTALL | re.VERBOSE,
)
_IDENTIFIER_KINDS = ("word", "backquoted", "doublequoted")
_ESCAPES = {
    "b": "\b",
    "f": "\f",
    "r": "\r",
    "n": "\n",
    "t": "\t",
    "0": "\0",
    "a": "\a",
    "v": "\v",
    "e": "\x1b",
}
_TSV_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)


def quote_identifier(name: str) -> str:
    """A ClickHouse identifier in backquotes (backslash and backquote escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    """A ClickHouse string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) == 3:
        # A byte, not a code point: kept as a lone surrogate so that encoding the text with
        # "surrogateescape" gives the byte back.
        return bytes([int(code[1:], 16)]).decode("utf-8", "surrogateescape")
    return _ESCAPES.get(code, code)


def tsv_field(raw: str) -> str:
    """One field of ClickHouse's TabSeparated output, unescaped."""
    return _TSV_ESCAPE.sub(_unescape, raw)


def tsv_rows(output: str) -> list[list[str]]:
    """The rows of a TabSeparated result (one line per row: tabs and newlines are escaped)."""
    return [[tsv_field(field) for field in line.split("\t")] for line in output.split("\n") if line]


# -- tokens -----------------------------------------------------------------------------------------


def _tokens(sql: str) -> Iterator[tuple[str, str]]:
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        assert kind is not None
        yield kind, match.group()


def _identifier(kind: str, text: str) -> str | None:
    """The name an identifier token stands for, or None if the token is not an identifier."""
    if kind == "word":
        return text
    if kind in ("backquoted", "doublequoted"):
        quote = text[0]
        body = text[1:-1].replace(quote * 2, quote)
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.DOTALL)
    return None


def _significant(sql: str) -> list[tuple[str, str, int]]:
    """Tokens without spaces and comments: (kind, text, index into the full token list)."""
    return [
        (kind, text, index)
        for index, (kind, text) in enumerate(_tokens(sql))
        if kind not in ("space", "comment")
    ]


def rewrite_database(sql: str, source: str, destination: str) -> str:
    """``sql`` with every ``source.`` qualifier replaced by ``destination.``.

    A qualifier is an identifier equal to ``source`` followed by a dot and not itself preceded
    by a dot. Literals are left alone, so names inside strings (``dictGet('db.dict', ...)``,
    the regular expression of a Merge table) still point at the source, and so do engine
    arguments that name a database without a dot (``Merge(db, ...)``, ``Buffer(db, ...)``,
    ``Distributed(cluster, db, ...)``). A table, alias or column that has the source database's
    name and is used as a qualifier (``SELECT events.id FROM events``) is rewritten too: the one
    ambiguity a tokenizer cannot resolve.
    """
    if source == destination:
        return sql
    tokens = [text for _, text in _tokens(sql)]
    significant = _significant(sql)
    for position, (kind, text, index) in enumerate(significant):
        if _identifier(kind, text) != source:
            continue
        followed_by_dot = position + 1 < len(significant) and significant[position + 1][1] == "."
        preceded_by_dot = position > 0 and significant[position - 1][1] == "."
        if followed_by_dot and not preceded_by_dot:
            tokens[index] = quote_identifier(destination)
    return "".join(tokens)


HIDDEN = "[HIDDEN]"


def hides_secrets(sql: str) -> bool:
    """Whether a statement holds a credential the server hid: from 22.12 on, ClickHouse prints
    ``'[HIDDEN]'`` in ``SHOW CREATE TABLE`` for the secret arguments of engines (MySQL,
    PostgreSQL, S3, URL ...), so running the statement would make a table with the placeholder
    as its password. Only string literals are looked at (never names or comments)."""
    return any(kind == "string" and HIDDEN in text for kind, text in _tokens(sql))


def mentioned_names(sql: str, database: str) -> set[str]:
    """Names ``sql`` mentions as tables of ``database``: ``database.name`` or a bare ``name``
    not preceded by a dot (an over-approximation: a column with a view's name counts too)."""
    significant = _significant(sql)
    names: set[str] = set()
    for position, (kind, text, _) in enumerate(significant):
        name = _identifier(kind, text)
        if name is None:
            continue
        before = significant[position - 1][1] if position > 0 else ""
        if before != "." or (position >= 2 and _identifier(*significant[position - 2][:2]) == database):
            names.add(name)
    return names


def dependency_order(views: dict[str, str], database: str) -> list[str]:
    """View names ordered so that each comes after the other views its statement mentions.

    ClickHouse 18.16 records only which materialized views an INSERT feeds
    (``system.tables.dependencies_*``), not what a view reads, so the statements are scanned
    (:func:`mentioned_names`). Ties and the cycles an over-approximation could invent are
    broken by name, which keeps the order stable.
    """
    needs = {name: (mentioned_names(sql, database) & set(views)) - {name} for name, sql in views.items()}
    ordered: list[str] = []
    done: set[str] = set()
    while len(ordered) < len(views):
        ready = sorted(name for name in views if name not in done and needs[name] <= done)
        if not ready:  # a cycle (only possible through a false mention): the rest by name
            ready = sorted(name for name in views if name not in done)[:1]
        ordered.append(ready[0])
        done.add(ready[0])
    return ordered


def first_names(values: Iterable[str], limit: int = 10) -> str:
    """A short, readable list of names for messages."""
    items = list(values)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
