"""The suite's own catalog switch (tests/servers/catalog.py): BACKUPSITE_TEST_CATALOG picks the
database the session's Django catalog lives on, and ``make test`` runs the tests marked
``catalog`` a second time on a real PostgreSQL."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.servers.catalog import CATALOG_ENV, CATALOG_ROLE, chosen_catalog

THIS = "tests/test_suite_catalog.py"


def run_pytest(catalog: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CATALOG_ENV: catalog}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.catalog
@pytest.mark.django_db
def test_it_keeps_the_catalog_on_the_database_the_variable_names() -> None:
    assert connection.vendor == chosen_catalog()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cursor.fetchone() == (CATALOG_ROLE, False)  # the owner an operator would create
        # For the session test below: where this catalog's server listens.
        print(f"catalog server port: {connection.settings_dict['PORT']}")


def test_it_stops_the_session_on_a_catalog_it_cannot_run_on() -> None:
    result = run_pytest("mysql", "--collect-only", "-q", THIS)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert f"{CATALOG_ENV}='mysql' is not a catalog the suite can run on" in result.stderr
    assert "sqlite, postgresql" in result.stderr


@pytest.mark.slow
def test_it_starts_a_postgresql_catalog_for_the_session_and_stops_it_at_the_end() -> None:
    vendor_test = f"{THIS}::test_it_keeps_the_catalog_on_the_database_the_variable_names"
    result = run_pytest("postgresql", "-q", "-s", vendor_test)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"catalog server port: (\d+)", result.stdout)
    assert found, result.stdout
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", int(found[1])), 5):
        pass  # the session's server is gone with it
