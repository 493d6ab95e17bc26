"""docs/RELIABILITY.md names real tests: every ``test_it_...`` it lists exists in the file it
names (a renamed or deleted test would otherwise leave the table promising a case nobody runs)."""

from __future__ import annotations

import re

from tests.conftest import REPO

TABLE = REPO / "docs" / "RELIABILITY.md"


def test_it_names_only_tests_that_exist():
    text = TABLE.read_text()
    tests = "\n".join(path.read_text() for path in (REPO / "tests").rglob("test_*.py"))
    named = set(re.findall(r"\b(test_it_[a-z0-9_]+)", text))
    assert len(named) > 30
    missing = sorted(name for name in named if not re.search(rf"def {name}\(", tests))
    assert not missing, f"docs/RELIABILITY.md names tests that do not exist: {missing}"


def test_it_points_every_row_at_a_test_file_that_exists():
    for path in set(re.findall(r"tests/[a-z_/]+\.py", TABLE.read_text())):
        assert (REPO / path).is_file(), path
