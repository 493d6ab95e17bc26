"""Test settings: the real settings module, pointed at a throwaway BACKUPSITE_HOME."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "BACKUPSITE_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="backupsite-test-home-")
    os.environ["BACKUPSITE_HOME"] = _home
    atexit.register(shutil.rmtree, _home, True)
os.environ.pop("DATABASE_URL", None)

from backupsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
BACKUPSITE_COPY_RETRY_DELAYS = [0.01, 0.02]
# Tests write their secret files under pytest's tmp_path (in the system's temporary directory).
BACKUPSITE_SECRETS_DIRS = [*BACKUPSITE_SECRETS_DIRS, tempfile.gettempdir()]  # noqa: F405
BACKUPSITE_STORAGE_DOWN_SECONDS = 0  # off: tests share one process (tests/test_copies.py turns it on)
