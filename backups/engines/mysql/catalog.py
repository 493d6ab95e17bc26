"""What a MySQL/MariaDB database holds, read through a MySQLdb session: its objects, their row
counts (in a thread while a dump runs) and InnoDB's log sequence number."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import MySQLdb  # type: ignore[import-untyped]

logger = logging.getLogger("backups.engines.mysql.engine")


def quote_name(name: str) -> str:
    """A MySQL identifier in backticks (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def query(session: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with session.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def error_parts(exc: Exception) -> tuple[int | None, str]:
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return exc.args[0], str(exc.args[1])
    return None, str(exc)


def list_objects(session: Any, database: str) -> dict[str, tuple[str, str]]:
    """Tables, views and sequences of ``database``: name -> (TABLE_TYPE, ENGINE), by name."""
    rows = query(
        session,
        "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE <> 'TEMPORARY' ORDER BY TABLE_NAME",
        (database,),
    )
    return {str(name): (str(kind), str(engine)) for name, kind, engine in rows}


def count_rows(session: Any, tables: list[str]) -> dict[str, int]:
    return {name: count_table(session, name) for name in tables}


def count_table(session: Any, name: str) -> int:
    sql = f"SELECT COUNT(*) FROM {quote_name(name)}"  # noqa: S608  (a quoted identifier, no data)
    return int(query(session, sql)[0][0])


def innodb_lsn(session: Any) -> int | None:
    """InnoDB's current log sequence number (MariaDB; MySQL 8.0.30+), or None."""
    rows = query(
        session,
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_lsn_current', 'Innodb_redo_log_current_lsn')",
    )
    return int(rows[0][1]) if rows else None


class RowCounter:
    """Counts rows in the snapshot session while the dump runs, then reads the LSN again once the
    dump has finished. From :meth:`start` on the thread owns the session and closes it, so a
    failed dump can leave without waiting for a long ``COUNT(*)``."""

    def __init__(self, session: Any, tables: list[str]) -> None:
        self._session = session
        self._tables = tables
        self._stop = threading.Event()
        self._dump_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mysql-row-counts", daemon=True)
        self.counts: dict[str, int] = {}
        self.lsn_after: int | None = None
        self.error = ""

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for name in self._tables:
                if self._stop.is_set():
                    return
                self.counts[name] = count_table(self._session, name)
        except MySQLdb.Error as exc:
            self.error = f"row counts incomplete: {error_parts(exc)[1]}"
            logger.warning("row counts for the manifest failed: %s", self.error)
        try:
            self._dump_done.wait()
            if not self._stop.is_set() and not self.error:
                self.lsn_after = innodb_lsn(self._session)
        except MySQLdb.Error as exc:
            self.error = f"InnoDB's LSN could not be read after the dump: {error_parts(exc)[1]}"
        finally:
            with contextlib.suppress(MySQLdb.Error):
                self._session.close()

    def finish(self) -> None:
        self._dump_done.set()
        self._thread.join()

    def abandon(self) -> None:
        self._stop.set()
        self._dump_done.set()
        if not self._thread.ident:
            with contextlib.suppress(MySQLdb.Error):
                self._session.close()
