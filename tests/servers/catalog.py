"""The test session's catalog (Django's ``default`` database): SQLite, or a real PostgreSQL.

``BACKUPSITE_TEST_CATALOG=postgresql`` puts the catalog on a PostgreSQL cluster of its own,
started before pytest-django creates the test database and stopped after it drops it (see
``django_db_modify_db_settings`` in tests/conftest.py); ``make test`` runs the tests marked
``catalog`` that way too. Unset (or ``sqlite``), nothing changes: tests/settings.py's SQLite
catalog. The cluster is not the engines' ``pg_server``: some engine tests stop and restart
that one, which must not take the catalog down with it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import dj_database_url
import pytest

from .postgres import running_postgres

CATALOG_ENV = "BACKUPSITE_TEST_CATALOG"
CATALOGS = ("sqlite", "postgresql")
#: The catalog's owner: a plain role that may create databases (the test database), like the
#: role an operator gives Backupsite in production, not the cluster's superuser.
CATALOG_ROLE = "backupsite"


def chosen_catalog() -> str:
    """The catalog this session runs on; a clear usage error for any other value."""
    value = os.environ.get(CATALOG_ENV, "").strip().lower() or "sqlite"
    if value not in CATALOGS:
        raise pytest.UsageError(
            f"{CATALOG_ENV}={os.environ[CATALOG_ENV]!r} is not a catalog the suite can run on: "
            f"use one of {', '.join(CATALOGS)} (or leave it unset for sqlite)"
        )
    return value


@contextlib.contextmanager
def session_catalog(databases: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Point ``databases["default"]`` (settings.DATABASES) at the chosen catalog for the block."""
    if chosen_catalog() == "sqlite":
        yield
        return
    with running_postgres() as server:
        password = secrets.token_urlsafe(16)  # letters, digits, - and _: safe in a literal
        server.execute("postgres", f"CREATE ROLE {CATALOG_ROLE} LOGIN CREATEDB PASSWORD '{password}'")
        server.create_database("backupsite")
        # The DATABASE_URL form an operator writes (docker/compose.yaml), parsed the same way.
        url = f"postgres://{CATALOG_ROLE}:{quote(password, safe='')}@{server.host}:{server.port}/backupsite"
        _replace_default(databases, dict(dj_database_url.parse(url)))
        yield


def _replace_default(databases: dict[str, dict[str, Any]], connection: dict[str, Any]) -> None:
    """Swap the default database's engine and address in place, keeping the defaults Django
    may already have filled in (its connection handler holds this same dict)."""
    from django.db import connections

    default = databases["default"]
    default["ENGINE"] = connection["ENGINE"]
    default["OPTIONS"] = {}  # SQLite's options (timeout, transaction_mode, PRAGMA) mean nothing here
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        default[key] = connection[key]
    # A connection made earlier (a module asked for the vendor) would still be SQLite's.
    for opened in connections.all(initialized_only=True):
        if opened.alias == "default":
            opened.close()
            del connections["default"]
