"""manage.py flush, which empties the whole database, the audit log included.

On SQLite the audit table's triggers refuse every DELETE, and flush empties tables with DELETE
(the test runner's flush after each transactional test too). Emptying the whole database is what
flush is for, like deleting the database file: the triggers are lifted inside one transaction
and put back exactly as they were. PostgreSQL's flush is a TRUNCATE, which row triggers do not
see, so there Django's own command runs as it is.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush
from django.db import connections, transaction

AUDIT_TABLE = "backup_audit_event"


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        database = options["database"]
        connection = connections[database]
        if connection.vendor != "sqlite":
            return super().handle(**options)
        with transaction.atomic(using=database):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                    [AUDIT_TABLE],
                )
                triggers = cursor.fetchall()
                for name, _sql in triggers:
                    cursor.execute(f"DROP TRIGGER {connection.ops.quote_name(name)}")
            super().handle(**options)
            with connection.cursor() as cursor:
                for _name, sql in triggers:
                    cursor.execute(sql)
        return None
