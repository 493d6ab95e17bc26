"""Per-kind storage fixtures (``storage_<kind>``), loaded by ``tests/conftest.py``: each starts
its real server once per session and yields a storage with a fresh prefix per test."""
